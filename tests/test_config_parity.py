"""One config, three ways in: the same settings through the command line, a YAML config (``ftcot run``) and
the Python API give byte-identical outputs, stage by stage.

Each stage's settings are one model (ftcot.settings): the command's options, the config's keys and the API's
parameters are derived from it, and all three call the same function. This runs one small pipeline three
ways — coin flip, the recorded teacher (replayed), a tiny student — with settings off their defaults, and
compares what each stage wrote. Every run is a subprocess with one thread, so training is bit-for-bit
repeatable.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from ftcot.experiment.config import load_config
from ftcot.experiment.runner import Experiment
from tests.cli import run_ftcot

pytestmark = pytest.mark.slow

ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
TRAIN = {"student": "tiny-gpt2", "epochs": 1, "batch_size": 4, "lr": 1e-3, "max_length": 1024, "max_new_tokens": 8,
         "dropout": 0.0, "device": "cpu", "bf16": False}
EVALUATE = {"limit": 6, "max_new_tokens": 8, "batch_size": 3, "device": "cpu", "dtype": "float32"}


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _weights(ckpt: Path) -> dict[str, str]:
    return {p.name: _digest(p) for p in sorted((ckpt / "best").rglob("*.safetensors"))}


def _ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.fixture(scope="module")
def three_ways(tmp_path_factory, data_root) -> dict[str, dict[str, Path]]:
    tmp = tmp_path_factory.mktemp("parity")
    cli = {stage: tmp / "cli" / stage for stage in ("teach", "curate", "train", "evaluate")}
    _ok(run_ftcot("--data-dir", data_root, "teach", "--task", "coin_flip", "--split", "all", "--teacher",
                  "replay:text-davinci-002", "--out", cli["teach"], "--teacher-args", "concurrency=4", env=ONE_THREAD))
    _ok(run_ftcot("--data-dir", data_root, "curate", cli["teach"], "--out", cli["curate"], "--label", "majority:1",
                  "--drop", "truncated,no-reasoning:6", "--val-seed", "3", "--val-fraction", "0.2", env=ONE_THREAD))
    train_args = [a for k, v in TRAIN.items() for a in ((f"--{k.replace('_', '-')}", str(v)) if k != "bf16" else
                                                         ("--no-bf16",))]
    _ok(run_ftcot("--data-dir", data_root, "train", cli["curate"], "--out", cli["train"], *train_args, env=ONE_THREAD))
    eval_args = [a for k, v in EVALUATE.items() for a in (f"--{k.replace('_', '-')}", str(v))]
    _ok(run_ftcot("evaluate", "--model", cli["train"], "--task", "coin_flip", "--out", cli["evaluate"], *eval_args,
                  "--data-dir", data_root, env=ONE_THREAD))

    api = {stage: tmp / "api" / stage for stage in cli}
    script = textwrap.dedent(f"""
        import ftcot
        root = {str(data_root)!r}
        ftcot.teach("coin_flip", "replay:text-davinci-002", {str(api['teach'])!r}, split="all", concurrency=4,
                    data_dir=root)
        ftcot.curate({str(api['teach'])!r}, {str(api['curate'])!r}, label="majority", min_votes=1,
                     drop_truncated=True, min_rationale_words=6, val_seed=3, val_fraction=0.2, data_dir=root)
        ftcot.train({str(api['curate'])!r}, {str(api['train'])!r}, **{TRAIN!r})
        ftcot.evaluate({str(api['train'])!r}, "coin_flip", {str(api['evaluate'])!r}, data_dir=root, **{EVALUATE!r})
    """)
    _ok(subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=900,
                       env={**__import__("os").environ, **ONE_THREAD}))

    config = {"name": "parity", "tasks": ["coin_flip"], "methods": ["ft_cot"],
              "teachers": [{"spec": "replay:text-davinci-002", "concurrency": 4}],
              "curate": {"label": "majority", "min_votes": 1, "drop_truncated": True, "min_rationale_words": 6,
                         "val_seed": 3, "val_fraction": 0.2},
              "students": [{"spec": TRAIN["student"], **{k: v for k, v in TRAIN.items() if k != "student"}}],
              "evaluate": EVALUATE}
    path = tmp / "parity.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    _ok(run_ftcot("run", path, "--out", tmp / "yaml", "--data-dir", data_root, env=ONE_THREAD))
    experiment = Experiment(load_config(path), tmp / "yaml", data_root)
    yaml_dirs = {stage.kind: experiment.stage_dir(stage) for stage in experiment.plan.ordered()}
    return {"cli": cli, "api": api, "yaml": yaml_dirs}


def _export(run_dir: Path) -> bytes:
    out = run_dir.parent / f"{run_dir.parent.name}-{run_dir.name}-export.jsonl"
    _ok(run_ftcot("teach", "export", run_dir, "--out", out))
    return out.read_bytes()


def test_teach(three_ways):
    exports = {way: _export(dirs["teach"]) for way, dirs in three_ways.items()}
    assert exports["cli"] == exports["api"] == exports["yaml"] and exports["cli"].count(b"\n") == 500


def test_curate(three_ways):
    for name in ("train.jsonl", "val.jsonl"):
        files = {way: (dirs["curate"] / name).read_bytes() for way, dirs in three_ways.items()}
        assert files["cli"] == files["api"] == files["yaml"], name
    summary = json.loads((three_ways["cli"]["curate"] / "curation.json").read_text())
    # The settings off their defaults took effect (not three runs of the defaults).
    assert summary["filters"]["truncated"] is True and summary["filters"]["min_words"] == 6
    assert summary["pseudo_labels"]["min_votes"] == 1 and len(summary["val_questions"]) > 60  # 0.1 would hold ~34


def test_train(three_ways):
    weights = {way: _weights(dirs["train"]) for way, dirs in three_ways.items()}
    assert weights["cli"] and weights["cli"] == weights["api"] == weights["yaml"]
    configs = {way: json.loads((dirs["train"] / "train.json").read_text())["config"] for way, dirs in three_ways.items()}
    assert configs["cli"] == configs["api"] == configs["yaml"] and configs["cli"]["lr"] == 1e-3


def test_evaluate(three_ways):
    predictions = {way: [{k: v for k, v in json.loads(line).items() if k != "generation_s"}  # timings differ
                         for line in (dirs["evaluate"] / "predictions.jsonl").open()]
                   for way, dirs in three_ways.items()}
    assert len(predictions["cli"]) == 6
    assert predictions["cli"] == predictions["api"] == predictions["yaml"]
