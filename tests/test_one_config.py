"""The seams between the three ways in (CLI, YAML, Python API) that were found broken in review, each now
closed for all three: the API guards and validates as the command does, a dry run and a plan need no API
key, and the option lists stay short enough to read."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

import ftcot
from ftcot.errors import FtcotError
from tests.cli import assert_one_line_error, run_ftcot

REMOTE = "https://api.example.invalid/v1"  # never reached: the point is that nothing is sent


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.endswith(("-shm", "-wal", ".lock"))}


@pytest.fixture(scope="module")
def run(tmp_path_factory, data_root) -> Path:
    out = tmp_path_factory.mktemp("one-config") / "run"
    ftcot.teach("coin_flip", "replay:text-davinci-002", out, data_dir=data_root)
    return out


@pytest.mark.parametrize("where", ["the run itself", "inside the run"])
def test_the_api_refuses_to_curate_into_its_teach_run(run, data_root, where):
    """ftcot.curate(run, run) wrote train.jsonl and curation.json into the teach run (the CLI refused)."""
    before = _digests(run)
    out = run if where == "the run itself" else run / "data"
    with pytest.raises(FtcotError, match="is the input|lies inside the input"):
        ftcot.curate(run, out, data_dir=data_root)
    assert _digests(run) == before


def test_the_api_refuses_to_teach_into_the_data_root(tmp_path, data_root):
    import shutil

    mini = tmp_path / "data-root"  # a copy: a guard that failed must not write into the shared data
    shutil.copytree(data_root / "raw" / "coin_flip", mini / "raw" / "coin_flip")
    (mini / "splits").mkdir()
    shutil.copy(data_root / "splits" / "coin_flip__default.json", mini / "splits")
    before = _digests(mini)
    with pytest.raises(FtcotError, match="lies inside the input"):
        ftcot.teach("coin_flip", "replay:text-davinci-002", mini / "teacher" / "run", data_dir=mini)
    assert _digests(mini) == before


@pytest.mark.parametrize("call, fragment", [
    (lambda out: ftcot.teach(123, "replay:text-davinci-002", out), "task: Input should be a valid string"),
    (lambda out: ftcot.teach("coin_flip", "replay:text-davinci-002", out, temperature="hot"), "temperature"),
    (lambda out: ftcot.teach("coin_flip", "replay:text-davinci-002", out, temperature=float("nan")),
     "temperature: must be a finite number"),
    (lambda out: ftcot.teach("coin_flip", "replay:text-davinci-002", out, concurrency=2.5), "concurrency"),
    (lambda out: ftcot.teach("coin_flip", "replay:text-davinci-002", out, max_cost=float("inf")), "max_cost"),
    (lambda out: ftcot.teach("coin_flip", "replay:text-davinci-002", out, temprature=0.7),
     "Did you mean 'temperature'"),
    (lambda out: ftcot.teach("coin_flip", "replay:text-davinci-002", None), "out must be a path"),
    (lambda out: ftcot.teach("coin_flip", "replay:text-davinci-002", out, rationalize=1, split="test"),
     "training questions only"),
    (lambda out: ftcot.curate(None, out, template="ft", val_fraction=1.5), "val_fraction: must be a finite number"),
    (lambda out: ftcot.evaluate("tiny-gpt2", "coin_flip", out, limit=0), "limit: must be at least 1"),
    # A huge D was planned in memory before anything was sent: 10**30 hung the command.
    (lambda out: ftcot.teach("coin_flip", "openai:x", out, samples=10**30, temperature=0.7), "samples"),
    (lambda out: ftcot.teach("coin_flip", "openai:x", out, until_correct=1, max_samples=10**9, temperature=0.7),
     "max_samples"),
    (lambda out: ftcot.Experiment({"tasks": ["coin_flip"], "teachers": ["openai:x"], "methods": ["ft_cot"],
                                   "students": ["tiny-gpt2"], "diverse": {"D": [10**9]}}, out), "diverse.D"),
])
def test_the_api_validates_as_the_command_does_with_one_exception_type(tmp_path, data_root, call, fragment):
    with pytest.raises(FtcotError) as caught:
        call(tmp_path / "out")
    assert fragment in str(caught.value) and "\n" not in str(caught.value)
    assert not (tmp_path / "out").exists()


def test_a_dry_run_and_a_plan_need_no_api_key(tmp_path, data_root):
    env = {"OPENAI_API_KEY": "", "FTCOT_NO_KEY": ""}
    dry = run_ftcot("--data-dir", data_root, "teach", "--task", "coin_flip", "--teacher", "openai:gpt-4o-mini",
                    "--teacher-args", f"base_url={REMOTE},api_key_env=FTCOT_NO_KEY", "--out", tmp_path / "dry",
                    "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    assert "would send 700 requests" in dry.stdout and not (tmp_path / "dry").exists()
    config = tmp_path / "x.yaml"
    config.write_text(f"tasks: [coin_flip]\nteachers: [{{spec: 'openai:gpt-4o-mini', base_url: '{REMOTE}', "
                      f"api_key_env: FTCOT_NO_KEY}}]\nmethods: [ft_cot]\nstudents: [tiny-gpt2]\n")
    plan = run_ftcot("--data-dir", data_root, "run", config, "--out", tmp_path / "exp", "--plan", env=env)
    assert plan.returncode == 0, plan.stderr
    assert "Nothing was run" in plan.stdout
    # Sending needs it: one line, before anything is written.
    real = run_ftcot("--data-dir", data_root, "teach", "--task", "coin_flip", "--teacher", "openai:gpt-4o-mini",
                     "--teacher-args", f"base_url={REMOTE},api_key_env=FTCOT_NO_KEY", "--out", tmp_path / "real",
                     env=env)
    assert_one_line_error(real, "FTCOT_NO_KEY is not set")
    assert not (tmp_path / "real").exists()


@pytest.mark.parametrize("command", ["teach", "curate"])
def test_help_lists_at_most_15_entries(command):
    """`ftcot teach --help` listed 28, `curate` 25: the rest are compound options or config keys now."""
    result = run_ftcot(command, "--help", env={"COLUMNS": "200"})
    assert result.returncode == 0
    options = re.findall(r"^│\s+(?:\*\s+)?(--[a-z-]+)", result.stdout, re.M)
    assert "--help" in options and len(options) <= 15, options


def test_commands_are_listed_in_pipeline_order():
    result = run_ftcot("--help", env={"COLUMNS": "200"})
    listed = re.findall(r"^│ ([a-z]+)\s{2,}", result.stdout, re.M)
    assert listed == ["data", "teach", "curate", "train", "evaluate", "score", "run", "diagnose", "export", "demo"]

