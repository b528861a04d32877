"""No command writes over what it reads (issue 14, item 4): through the real ``ftcot`` command line.

Each case points a command's output at one of its inputs — the paid teacher store, the completions
being scored, the teach run, the DATA_DIR, the model, a task file, the data root — or at a folder that
holds one, and expects one line on stderr and not a byte changed or added anywhere. The data root here
is a copy of coin flip's files: a guard that failed must not write into the shared benchmark data.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from tests.cli import assert_one_line_error, run_ftcot
from tests.train.conftest import make_coin_flip_dir

SQLITE_SIDECARS = ("-shm", "-wal", ".lock")  # a read-only SQLite open may touch these; they hold no data


@pytest.fixture(scope="module")
def work(data_root, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("guards")
    mini = root / "data-root"
    (mini / "raw").mkdir(parents=True)
    shutil.copytree(data_root / "raw" / "coin_flip", mini / "raw" / "coin_flip")
    (mini / "splits").mkdir()
    shutil.copy(data_root / "splits" / "coin_flip__default.json", mini / "splits")
    result = run_ftcot("teach", "--task", "coin_flip", "--split", "train", "--teacher", "replay:text-davinci-002",
                       "--out", root / "run", "--data-dir", data_root)
    assert result.returncode == 0, result.stderr
    result = run_ftcot("teach", "export", root / "run", "--out", root / "completions.jsonl")
    assert result.returncode == 0, result.stderr
    make_coin_flip_dir(data_root, root / "data", 8, 2)
    (root / "mytask.jsonl").write_text('{"question": "1 + 1?", "answer": "2"}\n{"question": "2 + 2?", "answer": "4"}\n')
    (root / "empty-folder").mkdir()
    return root


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.name.endswith(SQLITE_SIDECARS)}


# (arguments with {root} for the work folder, expected fragments of the one line)
CASES = {
    "teach export over the completion store": (
        ["teach", "export", "{root}/run", "--out", "{root}/run/teach.sqlite"], ["is the input", "teach.sqlite"]),
    "teach export over the run record": (
        ["teach", "export", "{root}/run", "--out", "{root}/run/run.json"], ["is the input", "run.json"]),
    "score --details over the scored file": (
        ["score", "{root}/completions.jsonl", "--task", "coin_flip", "--details", "{root}/completions.jsonl"],
        ["--details", "is the input"]),
    "score --details naming a folder": (
        ["score", "{root}/completions.jsonl", "--task", "coin_flip", "--details", "{root}/empty-folder"],
        ["--details", "is a directory", "give a file path"]),
    "score --details inside the data root": (
        ["score", "{root}/completions.jsonl", "--task", "coin_flip", "--details", "{root}/data-root/raw/d.jsonl"],
        ["lies inside the input", "data-root"]),
    "score --details over the task file": (
        ["score", "{root}/completions.jsonl", "--task", "{root}/mytask.jsonl", "--answer-type", "number",
         "--field", "reasoning_completion", "--details", "{root}/mytask.jsonl"], ["is the input", "mytask.jsonl"]),
    "curate into the teach run": (["curate", "{root}/run", "--out", "{root}/run"], ["is the input"]),
    "curate inside the teach run": (["curate", "{root}/run", "--out", "{root}/run/data"], ["lies inside the input"]),
    "curate into the data root": (["curate", "{root}/run", "--out", "{root}/data-root"], ["is the input"]),
    "curate into a folder holding the run": (["curate", "{root}/run", "--out", "{root}"], ["contains the input"]),
    "curate --out naming a file": (
        ["curate", "{root}/run", "--out", "{root}/mytask.jsonl"], ["is a file", "give a directory path"]),
    "train into its DATA_DIR": (
        ["train", "{root}/data", "--student", "tiny-gpt2", "--out", "{root}/data"], ["is the input"]),
    "train inside the data root": (
        ["train", "{root}/data", "--student", "tiny-gpt2", "--out", "{root}/data-root/ckpt"],
        ["lies inside the input"]),
    "evaluate into the model": (
        ["evaluate", "--model", "{root}/data", "--method", "ft", "--task", "coin_flip", "--out", "{root}/data"],
        ["is the input"]),
    "evaluate inside the data root": (
        ["evaluate", "--model", "tiny-gpt2", "--method", "ft", "--task", "coin_flip", "--out",
         "{root}/data-root/eval"], ["lies inside the input"]),
    "evaluate into a folder holding the task file": (
        ["evaluate", "--model", "tiny-gpt2", "--method", "ft", "--task", "{root}/mytask.jsonl", "--answer-type",
         "number", "--out", "{root}"], ["contains the input", "mytask.jsonl"]),
    "data synth over a benchmark file": (
        ["data", "synth", "coin_flip", "--out", "{root}/data-root/raw/coin_flip/coin_flip.json"],
        ["lies inside the input"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_an_output_over_an_input_is_one_line_and_writes_nothing(case, work):
    args, fragments = CASES[case]
    before = snapshot(work)
    # Every command reads the copied data root: --data-dir where it has one, FTCOT_DATA for train.
    result = run_ftcot(*[a.format(root=work) for a in args],
                       *(["--data-dir", work / "data-root"] if args[0] in ("score", "curate", "evaluate") else []),
                       *(["--data-dir", work / "data-root"] if args[:2] == ["data", "synth"] else []),
                       env={"FTCOT_DATA": str(work / "data-root")})
    assert_one_line_error(result, *fragments)
    assert snapshot(work) == before
