"""bf16 on the CPU only where its kernels survive a probe in a child process (real child processes; a CI
machine's bf16 kernels killed training with SIGFPE, which a CPU here cannot be made to do, so that
crash is produced by the probed code itself)."""

from __future__ import annotations

import json

import pytest
import torch

from ftcot.models import cpu_bf16
from ftcot.models.loading import resolve_dtype
from ftcot.train.config import TrainConfig
from ftcot.train.trainer import load_for_training

REAL_PROBE = cpu_bf16.probe
CLAIMS_BF16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def test_the_probe_runs_the_training_kernels_in_bf16_here():
    assert cpu_bf16.probe() is None


def test_a_probe_killed_by_a_signal_or_failing_says_so():
    assert cpu_bf16.probe("import os, signal; os.kill(os.getpid(), signal.SIGFPE)") == "killed by SIGFPE"
    assert cpu_bf16.probe("raise SystemExit('no bf16 kernel')") == "failed: no bf16 kernel"
    assert cpu_bf16.probe("print('ok')") is None
    assert cpu_bf16.probe("import time; time.sleep(5)", timeout=0.5) == "no answer in 0 s"


@pytest.fixture
def fresh_verdict(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cpu_bf16.cpu_bf16_works.cache_clear()
    yield tmp_path / "ftcot" / "cpu-bf16.json"
    cpu_bf16.cpu_bf16_works.cache_clear()


@pytest.mark.skipif(not CLAIMS_BF16, reason="this CPU does not claim native bf16: nothing is probed")
def test_a_crashing_probe_turns_bf16_off_once_a_machine(fresh_verdict, monkeypatch, capsys):
    calls = []
    crash = "import os, signal; os.kill(os.getpid(), signal.SIGFPE)"
    monkeypatch.setattr(cpu_bf16, "probe", lambda: calls.append(1) or REAL_PROBE(crash))
    assert cpu_bf16.cpu_bf16_works() is False
    warning = capsys.readouterr().err
    assert "killed by SIGFPE" in warning and "fp32" in warning and warning.count("\n") == 1
    assert list(json.loads(fresh_verdict.read_text()).values()) == [False]

    # Every later process on this machine reads the verdict instead of probing again.
    cpu_bf16.cpu_bf16_works.cache_clear()
    assert cpu_bf16.cpu_bf16_works() is False and calls == [1]
    assert capsys.readouterr().err == ""

    cpu = torch.device("cpu")
    assert resolve_dtype("auto", cpu) == torch.float32
    assert resolve_dtype("bfloat16", cpu) == torch.bfloat16  # asked for by name: not second-guessed
    _, precision = load_for_training(TrainConfig(student="tiny-gpt2", lora=True), cpu)
    assert precision == {"bf16": False, "weights": "float32", "autocast": False, "device": "cpu"}
    _, forced = load_for_training(TrainConfig(student="tiny-gpt2", lora=True, bf16=True), cpu)
    assert forced["bf16"] is True and forced["weights"] == "bfloat16"


@pytest.mark.skipif(not CLAIMS_BF16, reason="this CPU does not claim native bf16: nothing is probed")
def test_a_surviving_probe_keeps_bf16_and_an_unreadable_verdict_is_probed_again(fresh_verdict):
    fresh_verdict.parent.mkdir(parents=True)
    fresh_verdict.write_text("[not a verdict")
    assert cpu_bf16.cpu_bf16_works() is True
    assert list(json.loads(fresh_verdict.read_text()).values()) == [True]
    assert resolve_dtype("auto", torch.device("cpu")) == torch.bfloat16

