"""``ftcot data download``: fetch the data root from its public sources.

Every file is listed in :data:`MANIFEST` with its place under the data root,
a commit-pinned public URL and its SHA-256, so a download is reproducible and
a changed or damaged source is caught instead of silently used.

A file is written to a temporary file next to its target and moved into place
only after its checksum matches, so an interrupted or wrong transfer never
leaves a partial file behind. Files already present with the right checksum
are not fetched again, which makes the command safe to rerun after a failure.

A mirror (``--base-url``) is laid out like the data root without the ``raw/``
level: ``{base_url}/{key}/{file}`` for a benchmark file, plus
``{base_url}/splits/{file}`` and ``{base_url}/prompts/{file}`` (no benchmark
is called ``splits`` or ``prompts``, so the two cannot clash).
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import httpx
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from ftcot.data_root import ENV_VAR, resolve_data_root
from ftcot.errors import FtcotError

_GITHUB = "https://raw.githubusercontent.com"
ZERO_SHOT_COT = f"{_GITHUB}/kojima-takeshi188/zero_shot_cot/5ef330fcdeec0cd26aee27943504f91f8ec1c33c/dataset"
GSM8K = f"{_GITHUB}/openai/grade-school-math/3101c7d5072418e28b9008a6636bde82a006892c/grade_school_math/data"
AQUA = f"{_GITHUB}/deepmind/AQuA/26b64ed1f22208c6742f47df547dfd65088ec30d"
# The paper's own repository: its frozen split files and few-shot exemplars.
# At this commit they are byte-for-byte the shared data's splits/ and prompts/.
REASONING_TEACHER = f"{_GITHUB}/itsnamgyu/reasoning-teacher/f8471666e5889e517c3bed04f9b346a1e6b8929b/data"


@dataclass(frozen=True)
class RemoteFile:
    """One file of the data root: where it goes, where it comes from, what it hashes to."""

    path: str  # relative to the data root, e.g. "raw/gsm8k/train.jsonl"
    url: str  # public source, pinned to a commit so the bytes cannot change
    sha256: str

    @property
    def mirror_path(self) -> str:
        """Its path under a ``--base-url`` mirror (laid out like ``raw/``)."""
        return self.path.removeprefix("raw/")


def _raw(key: str, prefix: str, name: str, sha256: str) -> RemoteFile:
    return RemoteFile(f"raw/{key}/{name}", f"{prefix}/{name}", sha256)


def _split(name: str, sha256: str, source: str | None = None) -> RemoteFile:
    return RemoteFile(f"splits/{name}", f"{REASONING_TEACHER}/split/{source or name}", sha256)


MANIFEST: tuple[RemoteFile, ...] = (
    _raw("single_eq", f"{ZERO_SHOT_COT}/SingleEq", "questions.json",
         "051507bd2b489c257057b485774a83d2710c23a4bc0f4a58e1822ae2773ef05e"),
    _raw("addsub", f"{ZERO_SHOT_COT}/AddSub", "AddSub.json",
         "21930fa90385c72b5a15f4b9a4dda27276b889ae9ff44285505cdd9fa0a20df8"),
    _raw("multiarith", f"{ZERO_SHOT_COT}/MultiArith", "MultiArith.json",
         "dc9db1b6cc68b1ecc2dec830d15aaf8c9a0932aa31d5ffce88ef3628179d36f4"),
    _raw("gsm8k", GSM8K, "train.jsonl", "17f347dc51477c50d4efb83959dbb7c56297aba886e5544ee2aaed3024813465"),
    _raw("gsm8k", GSM8K, "test.jsonl", "3730d312f6e3440559ace48831e51066acaca737f6eabec99bccb9e4b3c39d14"),
    # AQuA's train.json (97,467 lines) is left out on purpose: the data root does
    # not carry it, and the readers only use test.json (see readers.AQUA_TRAIN_SIZE).
    _raw("aqua", AQUA, "dev.json", "4a52301d8a49ae0b286f8e697f9c5da1b109b247b825b47b4c6de34312dceec5"),
    _raw("aqua", AQUA, "test.json", "de41581881ef95c5588c44ddc701c77fd480839241dd422a0d181262af24520c"),
    _raw("svamp", f"{ZERO_SHOT_COT}/SVAMP", "SVAMP.json",
         "5be77703a6d891ae476d7c082787ad361392aa02453b132516cdd5f4e7934e3e"),
    _raw("tracking_shuffled_objects", f"{ZERO_SHOT_COT}/Bigbench_object_tracking", "task.json",
         "74b74d3c8827c0387a3f24ee9efa7edd90b2d53af3daacb9961341af66f750a0"),
    _raw("date_understanding", f"{ZERO_SHOT_COT}/Bigbench_Date", "task.json",
         "ff716f0e399109146db3a998281c39954907b78268a9b633a95582d63847822f"),
    _raw("coin_flip", f"{ZERO_SHOT_COT}/coin_flip", "coin_flip.json",
         "68cf201737a1463ef6bed5419622805a8934d92bff6a28a9dfbf83be3135ba5a"),
    _raw("last_letter_concatenation", f"{ZERO_SHOT_COT}/last_letters", "last_letters.json",
         "60e8d092d0a6423d3256e87e0c249b69aefea4cd27985082095fa4e93931fb02"),
    _raw("commonsense_qa", f"{ZERO_SHOT_COT}/CommonsenseQA", "train_rand_split.jsonl",
         "58ffa3c8472410e24b8c43f423d89c8a003d8284698a6ed7874355dedd09a2fb"),
    _raw("commonsense_qa", f"{ZERO_SHOT_COT}/CommonsenseQA", "dev_rand_split.jsonl",
         "3210497fdaae614ac085d9eb873dd7f4d49b6f965a93adadc803e1229fd8a02a"),
    _raw("strategy_qa", f"{ZERO_SHOT_COT}/StrategyQA", "task.json",
         "60af9081fed20102fd8bb1e02dc7d9f12238efcba33e4c1a56b4d61cb6409803"),
    _split("single_eq__default.json", "d46feb082615045ea0909c5ed062ef85f29ba95223cbca39e0bfbb1ad1b5e1b7"),
    _split("addsub__default.json", "1a6f70a39554084978a44439db0b661b039ce4dd2c09572d2ff9f44f5ef668d0"),
    _split("multiarith__default.json", "f2f47aeb18026cb3d1909b38b8828693aeaf624af3282d8021dbee32008a1409"),
    _split("multiarith__template.json", "188abcfb1358424791e2d9c8d622ad10356283405fab11e1a58fa374cd9a48f4"),
    _split("gsm8k__default.json", "cf0f484fcaa270ff33f4ce00bff3f7e1f7f30b3e3bc76d0abcb74c22a6e9a6e0"),
    _split("aqua__default.json", "8f6a271a99d34bc1fdf062672088eb17f7f782d86c60d9a709f06b6b8144ff6d"),
    _split("svamp__default.json", "fae6cc3a5c50952da78b66991182be507c8585e6a59954e03bd997488608ab1f"),
    _split("tracking_shuffled_objects__default.json",
           "6f2a4637d6e0692297e5eaa66bf53518445e1fbae1d94f28daae0040b7a1156a"),
    _split("date_understanding__default.json", "5fbfdd1f0db941dce6accd7f43316eda2a2254f3a80f9a3a045f5a19bfb04578"),
    _split("date_understanding__template.json", "9b4508734ffc2ae908615e3f9f6ca3c9e27f44e4b5e714d220bd7152ddd39d89"),
    _split("last_letter_concatenation__default.json",
           "a5f7ffe4a1a1e0181cbd9d00259d34f980c0073efe8a3ed25f69433cfb74a3a4"),
    # The paper's repository publishes no coin_flip split. Coin flip and last
    # letters both have 500 samples and the same seeded 70/30 split, so their
    # split files are byte-identical (same SHA-256): we fetch last letters' file.
    _split("coin_flip__default.json", "a5f7ffe4a1a1e0181cbd9d00259d34f980c0073efe8a3ed25f69433cfb74a3a4",
           source="last_letter_concatenation__default.json"),
    _split("commonsense_qa__default.json", "4cec2867bc6bc201eaa5fc96844870d85356f32b4fa652c75b8b5e42b9fedc76"),
    _split("strategy_qa__default.json", "0857d069a693a83c20466971b7e522b3c90c3258146c9b9461df98e4d2468de1"),
    RemoteFile("prompts/few_shot_cot_prompts.json", f"{REASONING_TEACHER}/few_shot_cot_prompts.json",
               "72bb973daf1ab1217ec5bc1cc95a8be8ab78d05ff42356a3176341d848956d19"),
)

PRESENT = "already present"
DOWNLOADED = "downloaded"
_CHUNK = 1 << 20


class TransferFailed(Exception):
    """One file could not be fetched; the message is the reason shown to the user."""


@dataclass
class DownloadSummary:
    downloaded: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # path -> reason


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def source_url(entry: RemoteFile, base_url: str | None) -> str:
    return f"{base_url.rstrip('/')}/{entry.mirror_path}" if base_url else entry.url


def download_all(dest: Path, base_url: str | None = None,
                 files: tuple[RemoteFile, ...] = MANIFEST) -> DownloadSummary:
    """Fetch every file of the manifest into ``dest``; one-line error if any failed."""
    dest = Path(dest).expanduser()
    _check_arguments(dest, base_url)
    summary = DownloadSummary()
    # Progress and per-file lines go to stderr so stdout carries only the summary.
    log = Console(stderr=True, highlight=False, soft_wrap=True)
    # A live bar only makes sense on a terminal; in a log the per-file lines say it all.
    progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                        TransferSpeedColumn(), console=log, transient=True, disable=not log.is_terminal)
    with httpx.Client(timeout=httpx.Timeout(30.0), follow_redirects=True) as client, progress:
        for entry in files:
            try:
                outcome = fetch(client, entry, source_url(entry, base_url), dest, progress)
            except TransferFailed as exc:
                summary.failed[entry.path] = str(exc)
                log.print(f"failed      {entry.path} ({exc})")
                continue
            if outcome == DOWNLOADED:
                summary.downloaded.append(entry.path)
                log.print(f"downloaded  {entry.path}")
            else:
                summary.present.append(entry.path)
    _print_summary(summary, dest)
    if summary.failed:
        raise FtcotError(_failure_line(summary, len(files), dest, base_url))
    return summary


def _check_arguments(dest: Path, base_url: str | None) -> None:
    # Checked once up front, so a typo gives one clear line instead of 30 failed files.
    if dest.exists() and not dest.is_dir():
        raise FtcotError(f"{dest} is a file; download into a directory (--to DIR).")
    if base_url is None:
        return
    try:
        url = httpx.URL(base_url)
    except httpx.InvalidURL as exc:
        raise FtcotError(f"--base-url '{base_url}' is not a valid URL ({exc}).") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise FtcotError(f"--base-url must be an http:// or https:// URL with a host, got '{base_url}'.")


def _is_valid(path: Path, sha256: str) -> bool:
    try:
        return path.is_file() and sha256_of(path) == sha256
    except OSError:  # unreadable: treat as missing; writing it will say what is wrong
        return False


def fetch(client: httpx.Client, entry: RemoteFile, url: str, dest: Path, progress: Progress) -> str:
    """Make ``dest/entry.path`` a verified copy: PRESENT, DOWNLOADED, or TransferFailed."""
    target = dest / entry.path
    if _is_valid(target, entry.sha256):
        return PRESENT
    # Same directory as the target, so the final os.replace is an atomic rename.
    temp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.part")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with temp.open("xb") as out:
            digest = _stream(client, url, entry.path, out, progress)
        if digest != entry.sha256:
            raise TransferFailed("checksum mismatch")
        os.replace(temp, target)
    except httpx.HTTPError as exc:
        raise TransferFailed(f"connection error ({type(exc).__name__}: {exc})") from None
    except OSError as exc:
        raise TransferFailed(f"cannot write {exc.filename or target} ({exc.strerror})") from None
    finally:
        # After a successful replace the temp name is gone; otherwise drop the partial file.
        temp.unlink(missing_ok=True)
    return DOWNLOADED


def _stream(client: httpx.Client, url: str, label: str, out: BinaryIO, progress: Progress) -> str:
    """Write the body at ``url`` to ``out`` with a progress bar; its SHA-256."""
    digest = hashlib.sha256()
    with client.stream("GET", url) as response:
        if response.status_code != 200:
            raise TransferFailed(f"HTTP {response.status_code}")
        length = response.headers.get("content-length")
        task = progress.add_task(label, total=int(length) if length and length.isdigit() else None)
        try:
            for chunk in response.iter_bytes():
                out.write(chunk)
                digest.update(chunk)
                progress.advance(task, len(chunk))
        finally:
            progress.remove_task(task)  # the per-file line printed afterwards replaces the bar
    return digest.hexdigest()


def _print_summary(summary: DownloadSummary, dest: Path) -> None:
    console = Console(highlight=False, soft_wrap=True)
    console.print(f"{dest}: downloaded {len(summary.downloaded)}, already present {len(summary.present)}, "
                  f"failed {len(summary.failed)}.")
    if not summary.failed and dest.resolve() != resolve_data_root().resolve():
        # Not where ftcot looks by default: say how to point the other commands at it.
        console.print(f"Use it with --data-dir {dest} or {ENV_VAR}={dest}.")


def _failure_line(summary: DownloadSummary, total: int, dest: Path, base_url: str | None) -> str:
    # Group by reason: a dead mirror fails every file the same way, and one
    # reason followed by the files reads better than the same reason 30 times.
    by_reason: dict[str, list[str]] = defaultdict(list)
    for path, reason in summary.failed.items():
        by_reason[reason].append(path)
    details = "; ".join(f"{', '.join(paths)}: {reason}" for reason, paths in by_reason.items())
    source = base_url or "their public URLs"
    return (f"{len(summary.failed)} of {total} files could not be downloaded from {source} "
            f"into {dest}: {details}. No partial file was kept. {_fix(summary, base_url)}")


def _fix(summary: DownloadSummary, base_url: str | None) -> str:
    """What to do next, from the kinds of failure."""
    reasons = set(summary.failed.values())
    retry = "rerun 'ftcot data download' to retry them (verified files are not fetched again)"
    if base_url and ("checksum mismatch" in reasons or any(r.startswith("HTTP 404") for r in reasons)):
        return (f"The mirror must hold the published files as <key>/<file>, splits/<file> and "
                f"prompts/<file>: fix it, or drop --base-url to use the public sources; then {retry}.")
    if "checksum mismatch" in reasons:
        return f"The source served other bytes than the published file; {retry}."
    return f"Check the network, then {retry}."
