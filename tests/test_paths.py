"""ftcot.paths on real files: outputs never over inputs, files written whole, OS errors as one line."""

from __future__ import annotations

import errno
import os

import pytest

from ftcot.errors import FtcotError
from ftcot.paths import atomic_file, atomic_write_text, check_output, check_writable_dir, find_os_error, os_error
from tests.mounts import read_only_dir, small_disk  # noqa: F401  (fixtures)


@pytest.fixture
def tree(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "teach.sqlite").write_bytes(b"paid completions")
    (tmp_path / "data.jsonl").write_text("{}\n")
    return tmp_path


@pytest.mark.parametrize(("out", "kind", "message"), [
    ("run", "dir", "is the input"),
    ("run/teach.sqlite", "file", "lies inside the input"),
    ("run/sub/deeper", "dir", "lies inside the input"),
    (".", "dir", "contains the input"),
    ("data.jsonl", "file", "is the input"),
    ("run/../data.jsonl", "file", "is the input"),  # the same file by another spelling
    ("link.jsonl", "file", "is the input"),  # a symbolic link to the input
    ("hard.jsonl", "file", "is the input"),  # a hard link: another name of the same file
    ("run", "file", "is a directory"),
])
def test_an_output_over_an_input_is_refused(tree, monkeypatch, out, kind, message):
    monkeypatch.chdir(tree)
    (tree / "link.jsonl").symlink_to(tree / "data.jsonl")
    os.link(tree / "data.jsonl", tree / "hard.jsonl")
    with pytest.raises(FtcotError) as info:
        check_output(out, [tree / "run", tree / "data.jsonl", None], kind=kind)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert (tree / "run" / "teach.sqlite").read_bytes() == b"paid completions"


def test_outputs_beside_the_inputs_are_fine(tree):
    assert check_output(tree / "out", [tree / "run", tree / "data.jsonl"]) == (tree / "out").resolve()
    assert check_output(tree / "details.jsonl", [tree / "data.jsonl"], kind="file")
    with pytest.raises(FtcotError, match="is a file; give a directory path"):
        check_output(tree / "data.jsonl", [], kind="dir")


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "details.jsonl"
    target.write_text("old\n")
    with pytest.raises(RuntimeError):
        with atomic_file(target) as handle:
            handle.write("half of the new")
            raise RuntimeError("killed midway")
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["details.jsonl"]


def test_a_full_disk_is_one_line_naming_the_file_and_keeps_the_old_one(small_disk):
    disk = small_disk(64)
    target = disk / "details.jsonl"
    target.write_text("old\n")
    with pytest.raises(FtcotError) as info:
        atomic_write_text(target, "x" * 200_000, option="--details")
    assert str(info.value).startswith(f"--details {target}: the disk is full")
    assert target.read_text() == "old\n" and sorted(p.name for p in disk.iterdir()) == ["details.jsonl"]


def test_torch_save_on_a_full_disk_yields_its_os_error(small_disk):
    """torch.save says "unexpected pos" when the disk fills up; the ENOSPC is found behind it."""
    torch = pytest.importorskip("torch")
    disk = small_disk(64)
    with pytest.raises(RuntimeError) as info:
        with (disk / "w.pt").open("wb") as handle:
            torch.save({"w": torch.zeros(100_000)}, handle)
    assert "No space left" not in str(info.value)  # why find_os_error exists
    assert find_os_error(info.value).errno == errno.ENOSPC


def test_a_read_only_folder_is_found_before_any_work(read_only_dir):
    with pytest.raises(FtcotError) as info:
        check_writable_dir(read_only_dir / "ckpt")
    assert "not writable" in str(info.value) and str(read_only_dir) in str(info.value)


def test_os_errors_say_what_to_do():
    """A test double: errno values a real disk produces, each with its advice."""
    assert "disk is full" in str(os_error(OSError(errno.ENOSPC, "No space left on device"), "f"))
    assert "not writable" in str(os_error(OSError(errno.EROFS, "Read-only file system"), "f"))
    assert "cannot write" in str(os_error(OSError(errno.EIO, "Input/output error"), "f"))
    # safetensors (Rust) reports the disk as text only
    assert find_os_error(Exception("Error while serializing: I/O error: No space left on device (os error 28)"
                                   )).errno == errno.ENOSPC
    assert find_os_error(ValueError("unrelated")) is None
