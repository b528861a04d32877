"""The Python API: ``import ftcot`` stays light, the stage functions and ``ftcot.Experiment`` write what the
commands write, and examples/quickstart.py runs offline end to end."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import re
import subprocess
import sys

import pytest

import ftcot
from ftcot.errors import FtcotError
from tests.conftest import PROJECT_ROOT, SHARED_DATA, TEACHER_DIR

QUICKSTART = PROJECT_ROOT / "examples" / "quickstart.py"
THREADS = {"OMP_NUM_THREADS": "1"}


def test_import_ftcot_loads_no_heavy_library():
    code = ("import sys, ftcot; ftcot.Experiment; ftcot.export_model; "
            "print(sorted(m for m in ('torch', 'transformers', 'peft', 'pyarrow', 'datasets') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_the_stages_are_callable_however_their_packages_were_imported():
    # A fresh interpreter that imports the stage packages first, as library code does.
    code = ("import ftcot.curate.dataset, ftcot.train.config, ftcot.teach.plan, ftcot.evaluate.store, ftcot\n"
            "from ftcot import api\n"
            "assert all(callable(getattr(ftcot, s)) for s in ('teach', 'curate', 'train', 'evaluate'))\n"
            "assert ftcot.curate.dataset.API_STOP == ' END'  # still the package, submodules and all\n"
            "try:\n"
            "    ftcot.curate(None, 'x', template='ft_cot', task='coin_flip')\n"
            "except ftcot.FtcotError as exc:\n"
            "    print(exc)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "needs teacher rationales" in result.stdout  # ftcot.curate(...) ran ftcot.api.curate


def test_teach_restricted_to_questions_and_a_rerun_asks_nothing(data_root, tmp_path):
    questions = json.loads((data_root / "splits" / "coin_flip__default.json").read_text())["train"][:4]
    first = ftcot.teach("coin_flip", "replay:text-davinci-002", tmp_path / "teach", questions=questions,
                        data_dir=data_root)
    assert (first.questions, first.complete_chains, first.new_completions) == (4, 4, 8)  # rationale + answer each
    assert json.loads((tmp_path / "teach" / "report.json").read_text())["chains"] == 4
    again = ftcot.teach("coin_flip", "replay:text-davinci-002", tmp_path / "teach", questions=questions,
                        data_dir=data_root)
    assert again.new_completions == 0 and again.complete_chains == 4
    data = ftcot.curate(first.out, tmp_path / "data", val_fraction=0, data_dir=data_root)
    rows = (tmp_path / "data" / "train.jsonl").read_text().splitlines()
    assert data.train_examples == len(rows) == 4 - data.dropped.get("wrong answer", 0)
    assert data.summary["source"] == str(first.out)


def test_bad_arguments_are_one_line_errors(data_root, tmp_path):
    with pytest.raises(FtcotError, match="Unknown train setting 'epochz'. Did you mean 'epochs'"):
        ftcot.train(tmp_path, tmp_path / "ckpt", student="tiny-gpt2", epochz=1)
    with pytest.raises(FtcotError, match="tasks"):
        ftcot.Experiment({"methods": ["zs"], "students": ["tiny-gpt2"]}, data_dir=data_root)
    with pytest.raises(FtcotError, match="no such experiment file"):
        ftcot.Experiment(tmp_path / "missing.yaml", data_dir=data_root)
    with pytest.raises(FtcotError, match="expected a mapping"):
        ftcot.Experiment(42)
    assert not (tmp_path / "ckpt").exists()


@pytest.mark.parametrize("call, message", [
    (lambda d: ftcot.teach(123, "replay:text-davinci-002", d / "a"), "teach(): task: Input should be a valid string"),
    (lambda d: ftcot.teach("coin_flip", None, d / "a"), "teach(): teacher must be a spec"),
    (lambda d: ftcot.teach("coin_flip", "replay:text-davinci-002", None), "teach(): out must be a path"),
    (lambda d: ftcot.teach("coin_flip", "replay:text-davinci-002", d / "a", data_dir=7), "teach(): data_dir must"),
    (lambda d: ftcot.teach("coin_flip", "replay:text-davinci-002", d / "a", temperature="hot"), "temperature"),
    (lambda d: ftcot.teach("coin_flip", "replay:text-davinci-002", d / "a", concurrency=2.5), "concurrency"),
    (lambda d: ftcot.curate(123, d / "a"), "curate(): source must be a path"),
    (lambda d: ftcot.curate(d, ["x"]), "curate(): out must be a path"),
    (lambda d: ftcot.train(None, d / "a", student="tiny-gpt2"), "train(): data_dir must be a path"),
    (lambda d: ftcot.train(d, "", student="tiny-gpt2"), "train(): out must be a path"),
    (lambda d: ftcot.train(d, d / "a", student=None), "train(): student must be a model spec"),
    (lambda d: ftcot.train(d, d / "a", student="tiny-gpt2", epochs="x"), "--epochs must be a whole number"),
    (lambda d: ftcot.evaluate(None, "coin_flip", d / "a"), "evaluate(): model"),
    (lambda d: ftcot.evaluate("tiny-gpt2", "coin_flip", 3.5), "evaluate(): out must be a path"),
    (lambda d: ftcot.Experiment({"tasks": ["coin_flip"], "methods": ["zs"], "students": ["tiny-gpt2"],
                                 "teacher_row": False}, out=5),
     "Experiment(): out must be a path"),
])
def test_a_wrong_type_for_any_argument_is_one_line_and_writes_nothing(data_root, tmp_path, monkeypatch, call,
                                                                      message):
    monkeypatch.setenv("FTCOT_DATA", str(data_root))
    with pytest.raises(FtcotError) as caught:
        call(tmp_path)
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert not (tmp_path / "a").exists()


def _recorded_accuracy(split: str) -> float:
    """The recorded text-davinci-002's coin-flip accuracy on ``split``, by the paper's yes/no rule restated
    (the answer completion's first "yes" or "no"): an oracle that does not use ftcot.scoring."""
    indices = set(json.loads((SHARED_DATA / "splits" / "coin_flip__default.json").read_text())[split])
    records = [json.loads(line) for line in (TEACHER_DIR / "zs_cot" / "coin_flip.jsonl").read_text().splitlines()]
    scored = [r for r in records if r["sample_index"] in indices]
    right = sum((re.findall(r"\b(yes|no)\b", r["answer_completion"].lower()) or [""])[0] == r["answer"].lower()
                for r in scored)
    return 100 * right / len(scored)


@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory, data_root):
    out = tmp_path_factory.mktemp("quickstart") / "out"
    env = {**os.environ, **THREADS, "FTCOT_DATA": str(data_root)}
    result = subprocess.run([sys.executable, str(QUICKSTART), str(out)], capture_output=True, text=True, env=env,
                            cwd=tmp_path_factory.mktemp("cwd"), timeout=600)
    assert result.returncode == 0, result.stderr
    return out, result


def test_quickstart_runs_offline_and_writes_every_stage_and_export(quickstart_run):
    out, result = quickstart_run
    lines = result.stdout.splitlines()
    # The recorded teacher on coin_flip's train split, scored here without ftcot's scorer.
    assert lines[0] == f"teach: 350 chains, teacher accuracy {_recorded_accuracy('train'):.1f}%"
    assert any(line.startswith("evaluate: ") and "/8)" in line for line in lines)
    assert "Traceback" not in result.stderr and "Loading weights" not in result.stderr  # quiet by default
    for path in ("teach/teach.sqlite", "data/train.jsonl", "ckpt/best/student.json", "eval/metrics.json",
                 "export-model/model.safetensors", "export-model/README.md", "export-dataset/data/train.parquet",
                 "experiment/results.csv", "experiment/report.html"):
        assert (out / path).is_file(), path
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    card = (out / "export-model" / "README.md").read_text()
    assert f"| coin_flip | test (default) | ft_cot | 8 | {100 * metrics['accuracy']:.2f}%" in card


def test_experiment_plan_and_results_read_the_finished_run(quickstart_run, data_root):
    out, result = quickstart_run
    spec = importlib.util.spec_from_file_location("quickstart", QUICKSTART)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    experiment = ftcot.Experiment(module.EXPERIMENT, out=out / "experiment", data_dir=data_root)
    plan = experiment.plan()
    assert [s["kind"] for s in plan] == ["teach", "curate", "train", "evaluate"]
    assert {s["status"] for s in plan} == {"done"}  # the quickstart's run: nothing left to do
    records = experiment.results()
    with (out / "experiment" / "results.csv").open() as handle:
        csv_rows = list(csv.DictReader(handle))
    assert [(r["method"], r["student"], r["n"]) for r in records if r["method"] == "ft_cot"] == [
        ("ft_cot", "tiny-gpt2", 8)]
    assert [(r["method"], r["student"], str(r["n"]), f"{r['accuracy']:g}") for r in records[:len(csv_rows)]] == [
        (r["method"], r["student"], r["n"], f"{float(r['accuracy']):g}") for r in csv_rows]
    teacher = [r for r in records if r["student"] == "replay:text-davinci-002"]
    assert teacher and teacher[0]["accuracy"] == pytest.approx(_recorded_accuracy("test"), abs=0.01)
    assert any(f"{r['accuracy']:.2f}%" in result.stdout for r in records)
    # A rerun does no work: every stage was done earlier.
    assert {o["status"] for o in experiment.run()} == {"done earlier"}


def test_export_model_finds_the_evaluation_of_an_experiments_train_stage(quickstart_run, tmp_path):
    out, _ = quickstart_run
    [train_stage] = (out / "experiment" / "stages" / "train").iterdir()
    [evaluate_stage] = (out / "experiment" / "stages" / "evaluate").iterdir()
    exported = ftcot.export_model(train_stage, tmp_path / "model")
    assert [(e.eval_dir, e.n, e.method) for e in exported.evaluations] == [(str(evaluate_stage), 8, "ft_cot")]
    info = json.loads((tmp_path / "model" / "ftcot.json").read_text())
    # The experiment's curate stage names its teach stage by key; the card still finds the teacher.
    assert info["training_data"]["provenance"]["teacher"]["teacher"] == "replay:text-davinci-002"
    assert exported.kind == "full" and not (tmp_path / "model" / "adapter_config.json").exists()


def test_teach_hides_url_credentials_and_raises_when_nothing_came_back(data_root, tmp_path):
    """The same redaction and the same failure as ``ftcot teach``'s, against a real server refusing everything."""
    from tests.teach.stub_openai import StubOpenAI

    server = StubOpenAI(outage=400, echo=True)  # every request refused, the reply repeating its URL and auth
    try:
        password, token = "pa55-word-secret", "tok-secret-0123"
        base_url = server.base_url.replace("http://", f"http://alice:{password}@") + f"?token={token}"
        questions = json.loads((data_root / "splits" / "coin_flip__default.json").read_text())["train"][:2]
        with pytest.raises(FtcotError) as raised:
            ftcot.teach("coin_flip", "openai:stub", tmp_path / "run", questions=questions, base_url=base_url,
                        extra_body={"repeat_penalty": 1.0}, data_dir=data_root)
        assert "0/2 chains complete" in str(raised.value)
        assert server.count() == 2  # a 400 is not retried
        for secret in (password, token):
            assert secret not in str(raised.value)
            for path in (tmp_path / "run").rglob("*"):
                assert secret.encode() not in path.read_bytes(), f"{secret} leaked into {path.name}"
    finally:
        server.close()
