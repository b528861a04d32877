"""``ftcot data download`` against a real HTTP server on 127.0.0.1.

The server serves a temporary mirror built from the shared data in the layout
``--base-url`` expects (``<key>/<file>``, ``splits/``, ``prompts/``); faults
are real: a file with changed bytes, a deleted file, a connection closed
halfway through the body.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ftcot.errors import FtcotError
from ftcot.tasks.download import MANIFEST, download_all, sha256_of
from tests.conftest import SHARED_DATA

pytestmark = pytest.mark.timeout(120)

FTCOT = Path(sys.executable).parent / "ftcot"
ALL_PATHS = {entry.path for entry in MANIFEST}


class MirrorHandler(SimpleHTTPRequestHandler):
    """Serves the mirror directory; records every GET and cuts some bodies short."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.server.requests.append(self.path)
        if self.path.lstrip("/") in self.server.cut_short:
            self._send_half_and_hang_up()
            return
        super().do_GET()

    def _send_half_and_hang_up(self) -> None:
        body = (Path(self.directory) / self.path.lstrip("/")).read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2])
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, format: str, *args) -> None:  # keep test output clean
        pass


@dataclass
class Mirror:
    root: Path
    url: str
    server: ThreadingHTTPServer

    def file(self, data_path: str) -> Path:
        """The mirror's copy of a data-root path such as 'raw/gsm8k/test.jsonl'."""
        return self.root / data_path.removeprefix("raw/")

    @property
    def requests(self) -> list[str]:
        return self.server.requests


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[Mirror]:
    root = tmp_path / "mirror"
    for entry in MANIFEST:
        target = root / entry.mirror_path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(SHARED_DATA / entry.path, target)
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(MirrorHandler, directory=str(root)))
    server.requests, server.cut_short = [], set()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield Mirror(root, f"http://127.0.0.1:{server.server_address[1]}", server)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def ftcot(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "FTCOT_DATA"}
    return subprocess.run([str(FTCOT), *args], capture_output=True, text=True, timeout=100, env=env)


def download(dest: Path, mirror: Mirror) -> subprocess.CompletedProcess[str]:
    return ftcot("data", "download", "--to", str(dest), "--base-url", mirror.url)


def files_under(root: Path) -> set[str]:
    """Every file under root, hidden temp files included."""
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def assert_valid(dest: Path, paths: set[str]) -> None:
    by_path = {entry.path: entry for entry in MANIFEST}
    for path in paths:
        assert sha256_of(dest / path) == by_path[path].sha256, path


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one error line on stderr (the per-file lines come above it)."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def failure(dest: Path, base_url: str) -> str:
    """The message of the FtcotError a failing download_all raises; always one line."""
    with pytest.raises(FtcotError) as caught:
        download_all(dest, base_url=base_url)
    message = str(caught.value)
    assert "\n" not in message and caught.value.exit_code == 2
    return message


def test_manifest_is_the_shared_data() -> None:
    shared = {p.relative_to(SHARED_DATA).as_posix()
              for folder in ("raw", "splits", "prompts") for p in (SHARED_DATA / folder).rglob("*") if p.is_file()}
    assert ALL_PATHS == shared
    assert_valid(SHARED_DATA, ALL_PATHS)


def test_public_urls_are_pinned_to_a_commit() -> None:
    for entry in MANIFEST:
        assert re.match(r"https://raw\.githubusercontent\.com/[^/]+/[^/]+/[0-9a-f]{40}/", entry.url), entry.url
        if entry.path.startswith("raw/"):
            assert entry.url.endswith("/" + entry.path.rsplit("/", 1)[1])


def test_full_download_gives_a_working_data_root(mirror: Mirror, tmp_path: Path) -> None:
    dest = tmp_path / "data"
    result = download(dest, mirror)
    assert result.returncode == 0, result.stderr
    assert files_under(dest) == ALL_PATHS  # nothing missing, no temp file left
    assert_valid(dest, ALL_PATHS)
    assert f"downloaded {len(MANIFEST)}, already present 0, failed 0" in result.stdout
    # The loaders accept what was downloaded: every task, its samples and splits.
    listed = ftcot("data", "list", "--data-dir", str(dest))
    assert listed.returncode == 0, listed.stderr
    assert "gsm8k" in listed.stdout and "8792" in listed.stdout


def test_rerun_transfers_nothing(mirror: Mirror, tmp_path: Path) -> None:
    dest = tmp_path / "data"
    first = download_all(dest, base_url=mirror.url)
    assert sorted(first.downloaded) == sorted(ALL_PATHS)
    assert len(mirror.requests) == len(MANIFEST)
    mirror.requests.clear()
    again = download_all(dest, base_url=mirror.url)
    assert mirror.requests == []
    assert again.downloaded == [] and sorted(again.present) == sorted(ALL_PATHS) and again.failed == {}


def test_corrupted_file_is_not_kept(mirror: Mirror, tmp_path: Path) -> None:
    bad = "raw/gsm8k/test.jsonl"
    served = mirror.file(bad)
    served.write_bytes(served.read_bytes().replace(b"####", b"###!", 1))  # same length, other bytes
    dest = tmp_path / "data"
    result = download(dest, mirror)
    line = error_line(result)
    assert bad in line and "checksum mismatch" in line and mirror.url in line
    assert files_under(dest) == ALL_PATHS - {bad}
    assert_valid(dest, ALL_PATHS - {bad})
    assert "failed 1" in result.stdout


def test_missing_file_is_reported(mirror: Mirror, tmp_path: Path) -> None:
    gone = "raw/svamp/SVAMP.json"
    mirror.file(gone).unlink()
    dest = tmp_path / "data"
    line = error_line(download(dest, mirror))
    assert gone in line and "HTTP 404" in line and "drop --base-url" in line
    assert files_under(dest) == ALL_PATHS - {gone}
    assert_valid(dest, ALL_PATHS - {gone})


def test_dropped_connection_leaves_no_partial_file(mirror: Mirror, tmp_path: Path) -> None:
    cut = "raw/strategy_qa/task.json"
    mirror.server.cut_short.add(cut.removeprefix("raw/"))
    dest = tmp_path / "data"
    line = failure(dest, mirror.url)
    assert cut in line and "connection error" in line
    assert files_under(dest) == ALL_PATHS - {cut}
    assert not any((dest / "raw" / "strategy_qa").iterdir())


def test_failures_are_listed_together_and_retried(mirror: Mirror, tmp_path: Path) -> None:
    first, second = "raw/addsub/AddSub.json", "prompts/few_shot_cot_prompts.json"
    for path in (first, second):
        mirror.file(path).rename(mirror.file(path).with_suffix(".moved"))
    dest = tmp_path / "data"
    line = failure(dest, mirror.url)
    assert line.startswith("2 of 30 files") and f"{first}, {second}: HTTP 404" in line
    # Once the mirror is fixed, a rerun fetches only what failed.
    for path in (first, second):
        mirror.file(path).with_suffix(".moved").rename(mirror.file(path))
    mirror.requests.clear()
    assert sorted(download_all(dest, base_url=mirror.url).downloaded) == sorted([first, second])
    assert sorted(mirror.requests) == sorted(f"/{p.removeprefix('raw/')}" for p in (first, second))
    assert_valid(dest, ALL_PATHS)


def test_damaged_local_copy_is_replaced(mirror: Mirror, tmp_path: Path) -> None:
    dest = tmp_path / "data"
    damaged = dest / "raw" / "multiarith" / "MultiArith.json"
    damaged.parent.mkdir(parents=True)
    damaged.write_text("[]")
    summary = download_all(dest, base_url=mirror.url)
    assert "raw/multiarith/MultiArith.json" in summary.downloaded
    assert_valid(dest, ALL_PATHS)


@pytest.mark.parametrize("base_url", ["ftp://example.org/data", "example.org/data", "http://", "http://[::1"])
def test_bad_base_url_is_one_line(tmp_path: Path, base_url: str) -> None:
    with pytest.raises(FtcotError, match="--base-url") as caught:
        download_all(tmp_path, base_url=base_url)
    assert "\n" not in str(caught.value)


def test_destination_that_is_a_file_is_refused(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "data"
    not_a_dir.write_text("")
    with pytest.raises(FtcotError, match="is a file"):
        download_all(not_a_dir, base_url="http://127.0.0.1:9")


def test_unreachable_mirror_is_one_line(tmp_path: Path) -> None:
    # A port nothing listens on: bind one, then close it.
    with ThreadingHTTPServer(("127.0.0.1", 0), MirrorHandler) as probe:
        port = probe.server_address[1]
    dest = tmp_path / "data"
    line = failure(dest, f"http://127.0.0.1:{port}")
    assert line.startswith("30 of 30 files") and "connection error" in line
    assert files_under(dest) == set()


def test_list_without_data_names_both_fixes(tmp_path: Path) -> None:
    result = ftcot("data", "list", "--data-dir", str(tmp_path / "empty"))
    line = error_line(result)
    assert "ftcot data download" in line and "FTCOT_DATA" in line
    assert result.stderr.strip() == line
