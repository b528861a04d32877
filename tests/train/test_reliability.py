"""``ftcot train`` under bad numbers, a diverging loss, a busy, damaged, read-only or full CKPT_DIR (issue 14).

Every case is the real command on a real tiny-gpt2 and real files: one line on stderr, exit code 2,
and nothing already saved is lost. The disk faults use a real tmpfs (tests/mounts.py).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from ftcot.train.checkpoint import best_problem
from tests.cli import assert_one_line_error
from tests.evaluate.cli import run_evaluate
from tests.mounts import read_only_dir, resize, small_disk  # noqa: F401  (fixtures)
from tests.train.conftest import make_coin_flip_dir
from tests.train.helpers import THREADS, record, run_train, train_command

TINY = ("--student", "tiny-gpt2", "--epochs", "1", "--batch-size", "4", "--max-length", "1024",
        "--max-new-tokens", "16")


@pytest.fixture(scope="module")
def data8(data_root, tmp_path_factory) -> Path:
    """8 training questions in batches of 4: two optimizer steps an epoch."""
    return make_coin_flip_dir(data_root, tmp_path_factory.mktemp("d8") / "data", 8, 2)


@pytest.fixture(scope="module")
def trained(data8, tmp_path_factory) -> Path:
    """A finished one-epoch run: tests copy it before damaging it."""
    out = tmp_path_factory.mktemp("trained") / "ckpt"
    result = run_train(data8, *TINY, "--out", out)
    assert result.returncode == 0, result.stderr[-2000:]
    return out


def assert_error_line(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    """Exit code 2, no traceback, and one error line, the last: training may have printed its progress first."""
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and sum(line.startswith("error") for line in lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[-1], lines[-1]


def _copy(ckpt: Path, tmp_path: Path) -> Path:
    target = tmp_path / "ckpt"
    shutil.copytree(ckpt, target, ignore=shutil.ignore_patterns(".lock"))
    return target


# ---- numbers at the edge: refused before anything is created ----------------------------------------------


@pytest.mark.parametrize(("flag", "value"), [
    ("--lr", "nan"), ("--lr", "inf"), ("--lr", "0.0"), ("--lr", "-0.001"),
    ("--weight-decay", "-0.01"), ("--weight-decay", "nan"),
    ("--dropout", "1.0"), ("--dropout", "nan"), ("--lora-dropout", "-0.1"), ("--lora-dropout", "inf"),
    ("--epochs", "0"), ("--seed", "-1"), ("--max-new-tokens", "0"), ("--lora-alpha", "0"),
])
def test_a_non_finite_or_out_of_range_number_is_one_line(flag, value, data8, tmp_path):
    result = run_train(data8, "--student", "tiny-gpt2", flag, value, "--out", tmp_path / "ckpt")
    assert_one_line_error(result, flag, f"(got {value})")
    assert not (tmp_path / "ckpt").exists()


def test_an_unknown_device_is_one_line_not_ignored(data8, tmp_path):
    # accelerate ignores a device name it does not know: this trained on the CPU with exit 0.
    result = run_train(data8, "--student", "tiny-gpt2", "--device", "gpu0", "--out", tmp_path / "ckpt")
    assert_one_line_error(result, "Unknown device 'gpu0'", "auto, cpu, cuda or cuda:N")


# ---- a diverging loss ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_nan_loss_stops_training_and_saves_nothing_of_that_epoch(data8, tmp_path):
    # lr 1e30: AdamW moves every weight by ~lr in the first step, so the second step's logits overflow.
    result = run_train(data8, *TINY, "--lr", "1e30", "--out", tmp_path / "ckpt")
    assert_error_line(result, "Epoch 1, step 2", "training loss is nan", "--lr")
    assert not (tmp_path / "ckpt" / "checkpoints").exists() and not (tmp_path / "ckpt" / "best").exists()
    assert not (tmp_path / "ckpt" / "train.json").exists()  # no record claims a best epoch


# ---- one training per CKPT_DIR ------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_second_training_into_a_busy_ckpt_dir_is_refused(data8, tmp_path):
    out = tmp_path / "ckpt"
    first = subprocess.Popen(train_command(data8, *TINY, "--epochs", "3", "--out", out), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env={**__import__("os").environ, **THREADS})
    try:
        deadline = time.monotonic() + 120
        while not ((out / ".lock").is_file() and (out / ".lock").read_text().strip()):
            assert first.poll() is None and time.monotonic() < deadline, "the first training never took the lock"
            time.sleep(0.1)
        second = run_train(data8, *TINY, "--lr", "1e-3", "--out", out)
        assert first.poll() is None, "the first training ended before the second was refused: not a concurrency test"
        assert_error_line(second, str(out), f"another 'ftcot train' (pid {first.pid})", "another --out")
    finally:
        _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err[-2000:]
    assert record(out)["finished"] and record(out)["config"]["lr"] == 3e-4  # the first run's model, whole
    assert best_problem(out) is None


# ---- damaged checkpoint files -------------------------------------------------------------------------------


def _cut(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: max(1, path.stat().st_size // 3)])


@pytest.mark.slow
@pytest.mark.parametrize(("damage", "file"), [
    (_cut, "checkpoints/epoch-0001/trainable.pt"),
    (Path.unlink, "checkpoints/epoch-0001/optimizer.pt"),
    (_cut, "checkpoints/epoch-0001/state.json"),
])
def test_a_damaged_checkpoint_file_is_one_line_naming_it_and_the_fix(damage, file, trained, data8, tmp_path):
    ckpt = _copy(trained, tmp_path)
    damage(ckpt / file)
    result = run_train(data8, *TINY, "--epochs", "2", "--out", ckpt)
    assert_error_line(result, str(ckpt / file), f"delete {ckpt / 'checkpoints' / 'epoch-0001'}")
    assert record(ckpt)["finished"] and best_problem(ckpt) is None  # the finished run is untouched


@pytest.mark.slow
def test_a_truncated_train_json_is_one_line(trained, data8, tmp_path):
    ckpt = _copy(trained, tmp_path)
    _cut(ckpt / "train.json")
    assert_error_line(run_train(data8, *TINY, "--out", ckpt), str(ckpt / "train.json"), "truncated")


@pytest.mark.slow
@pytest.mark.parametrize("damage", [_cut, Path.unlink], ids=["truncated", "missing"])
def test_a_damaged_best_model_is_named_by_evaluate_and_rebuilt_by_train(damage, trained, data8, tmp_path):
    ckpt = _copy(trained, tmp_path)
    weights = ckpt / "best" / "model" / "model.safetensors"
    damage(weights)
    evaluation = run_evaluate("--model", ckpt, "--task", "coin_flip", "--limit", "1", "--out", tmp_path / "eval")
    assert_error_line(evaluation, str(weights), f"ftcot train {trained.parent.parent}")
    # The fix the line gives: the same training command rebuilds best/ from the kept checkpoint.
    repaired = run_train(data8, *TINY, "--out", ckpt)
    assert repaired.returncode == 0, repaired.stderr[-2000:]
    assert "rewriting" in repaired.stderr
    assert weights.read_bytes() == (trained / "best" / "model" / "model.safetensors").read_bytes()


# ---- the CKPT_DIR's file system -----------------------------------------------------------------------------


@pytest.mark.slow
def test_a_read_only_ckpt_dir_fails_before_training(read_only_dir, data8):
    started = time.monotonic()
    result = run_train(data8, *TINY, "--out", read_only_dir / "ckpt")
    assert_error_line(result, str(read_only_dir / "ckpt"), "not writable")
    assert "epoch" not in result.stderr.lower().replace("error", "")
    assert time.monotonic() - started < 60


@pytest.mark.slow
def test_a_full_disk_is_one_line_leaves_no_temporary_and_a_rerun_resumes(small_disk, data8):
    disk = small_disk(3 * 1024)  # tiny-gpt2's checkpoint is ~45 MB
    out = disk / "ckpt"
    result = run_train(data8, *TINY, "--out", out)
    assert_error_line(result, str(out / "checkpoints" / "epoch-0001"), "the disk is full", "free some space")
    assert not list((out / "checkpoints").glob(".*tmp*"))  # the half-written checkpoint is gone
    resize(disk, 200 * 1024)
    again = run_train(data8, *TINY, "--out", out)
    assert again.returncode == 0, again.stderr[-2000:]
    assert record(out)["finished"] and best_problem(out) is None


@pytest.mark.slow
def test_a_disk_that_fills_while_writing_best_keeps_the_checkpoint(small_disk, trained, data8):
    """Room for the epoch's checkpoint but not for best/: best/ is rebuilt by the rerun."""
    def size(path: Path) -> int:
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())

    room = size(trained / "checkpoints") + size(trained / "best") // 2 + 512 * 1024  # + metrics, events
    disk = small_disk(room // 1024)
    out = disk / "ckpt"
    result = run_train(data8, *TINY, "--out", out)
    assert_error_line(result, str(out / "best"), "the disk is full")
    assert (out / "checkpoints" / "epoch-0001" / "state.json").is_file()
    assert not list(out.glob(".best.tmp*"))
    resize(disk, 200 * 1024)
    again = run_train(data8, *TINY, "--out", out)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resuming after epoch 1" in again.stderr and best_problem(out) is None
