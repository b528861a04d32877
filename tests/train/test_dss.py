"""Distilling step-by-step (``ft_dss``): the two-task loss, training on both tasks, answering with the label task.

Data: the recorded text-davinci-002 rationales of coin_flip curated with ``--template ft_dss`` (a label
row and a rationale row per correct rationale). Students: tiny-gpt2 and tiny-t5, built from a config.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from ftcot.curate import curate
from ftcot.curate.dataset import write_data_dir
from ftcot.errors import FtcotError
from ftcot.evaluate import evaluate
from ftcot.evaluate.methods import EvalMethod, default_max_new_tokens
from ftcot.models import load_model
from ftcot.tasks import get_spec, load_task
from ftcot.templates import LABEL, RATIONALE, get_template
from ftcot.train import TrainConfig, load_student, train
from ftcot.train.data import IGNORE, Tokenized, collate, read_data_dir, tokenize, weigh_tasks
from ftcot.train.loss import CompletionLM, linear_cross_entropy
from ftcot.train.trainer import _default_max_new_tokens, prepare_data
from tests.cli import assert_one_line_error, run_ftcot
from tests.conftest import TEACHER_DIR
from tests.train.conftest import make_coin_flip_dir


def _records() -> list[dict]:
    return [json.loads(line) for line in (TEACHER_DIR / "zs_cot" / "coin_flip.jsonl").open()]


def make_dss_dir(data_root: Path, out: Path, n_questions: int, n_val: int) -> Path:
    """The ``n_questions`` shortest curated coin_flip examples as ft_dss rows (label, rationale, label, …);
    validation on the first ``n_val`` of those questions (model selection rewards learning them)."""
    task = load_task("coin_flip", data_root)
    rows, _, summary = curate(task, get_template("ft_dss"), _records(), val_fraction=0)
    pairs = sorted(zip(rows[0::2], rows[1::2]), key=lambda p: (len(p[1].completion), p[0].sample_index))
    train_rows = [row for pair in pairs[:n_questions] for row in pair]
    val_rows = train_rows[:2 * n_val]
    summary.update(train_examples=len(train_rows), val_examples=len(val_rows))
    write_data_dir(out, train_rows, val_rows, summary)
    return out


@pytest.fixture(scope="module")
def dss_4(data_root, tmp_path_factory) -> Path:
    """4 questions, 8 rows; validation on 2 of the questions (byte-level students are slow on long rows)."""
    return make_dss_dir(data_root, tmp_path_factory.mktemp("dss4"), 4, 2)


def _item(objective: str | None, targets: int) -> Tokenized:
    return Tokenized([1] * (3 + targets), [IGNORE] * 3 + [2] * targets, 3, 0, False, objective=objective)


@pytest.mark.parametrize("rationale_weight", [None, 1.0, 3.0, 0.0])
def test_task_weights_make_the_loss_each_tasks_token_mean_weighted_by_lambda(rationale_weight):
    items = [_item(LABEL, 2), _item(RATIONALE, 30), _item(LABEL, 3), _item(RATIONALE, 12), _item(LABEL, 1)]
    weighted = weigh_tasks(items, rationale_weight)
    torch.manual_seed(0)
    losses = [torch.rand(t.target_tokens, dtype=torch.float64) for t in items]  # per-token cross-entropies
    # What the trainer computes: the weighted sum over the rows, divided by their loss units (one per row).
    got = sum(t.loss_weight * ce.sum() for t, ce in zip(weighted, losses)) / sum(t.loss_units for t in weighted)
    lam = 1.0 if rationale_weight is None else rationale_weight
    label = torch.cat([ce for t, ce in zip(items, losses) if t.objective == LABEL]).mean()
    rationale = torch.cat([ce for t, ce in zip(items, losses) if t.objective == RATIONALE]).mean()
    assert math.isclose(got, (label + lam * rationale) / (1 + lam), rel_tol=1e-12)
    # Unweighted, the 42 rationale tokens would outweigh the 6 label tokens seven to one.
    plain = torch.cat(losses).mean()
    assert not math.isclose(plain, (label + rationale) / 2, rel_tol=1e-3)


def test_single_task_rows_are_left_as_they_were():
    items = [_item(None, 4), _item(None, 9)]
    assert weigh_tasks(items, None) is items
    assert [t.loss_units for t in items] == [4, 9] and all(t.loss_weight is None for t in items)
    batch = collate(items, 0, False)
    assert "loss_weights" not in batch


@pytest.mark.parametrize("softcap", [None, 30.0])
def test_weighted_chunked_loss_matches_full_logits(softcap):
    torch.manual_seed(0)
    hidden = torch.randn(37, 16, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(50, 16, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 50, (37,))
    row_weights = torch.rand(37, dtype=torch.float64) * 3

    loss = linear_cross_entropy(hidden, weight, None, targets, chunk_rows=8, softcap=softcap, weights=row_weights)
    loss.backward()
    got = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None
    logits = hidden @ weight.T
    if softcap:
        logits = softcap * torch.tanh(logits / softcap)
    want = (torch.nn.functional.cross_entropy(logits, targets, reduction="none") * row_weights).sum()
    want.backward()
    assert torch.allclose(loss.double(), want, rtol=1e-6)
    assert torch.allclose(got[0], hidden.grad) and torch.allclose(got[1], weight.grad)


@pytest.mark.parametrize("spec", ["tiny-gpt2", "tiny-t5"])
def test_a_dss_batch_through_the_student_is_the_papers_two_task_loss(dss_4, spec):
    """Real rows, a real student: the wrapper's loss / rows = (label mean + λ·rationale mean) / (1 + λ),
    the means taken from the model's own logits."""
    loaded = load_model(spec, dtype="float32", device="cpu", seed=1)
    model = loaded.model.double().eval()
    data = read_data_dir(dss_4)
    rows = data.train[:4]  # two questions, both tasks
    items = weigh_tasks([tokenize(loaded, e, data.template, 768) for e in rows], 2.0)
    assert [t.objective for t in items] == [LABEL, RATIONALE] * 2
    batch = collate(items, loaded.tokenizer.pad_token_id or 0, loaded.is_encoder_decoder)
    loss_sum, count = CompletionLM(model, loaded.is_encoder_decoder, chunk_rows=7)(**batch)
    assert count == 4

    per_token = {LABEL: [], RATIONALE: []}
    for item in items:
        ids = torch.tensor([item.input_ids])
        if loaded.is_encoder_decoder:
            out = model(input_ids=ids, labels=torch.tensor([item.labels]))
            logits, targets = out.logits[0], torch.tensor(item.labels)
        else:
            logits, targets = model(input_ids=ids).logits[0, :-1], torch.tensor(item.labels[1:])
        keep = targets != IGNORE
        per_token[item.objective].append(torch.nn.functional.cross_entropy(logits[keep], targets[keep],
                                                                           reduction="none"))
    label, rationale = (torch.cat(per_token[k]).mean() for k in (LABEL, RATIONALE))
    assert torch.allclose(loss_sum / count, (label + 2.0 * rationale) / 3.0, rtol=1e-6)


def test_validation_generates_for_label_rows_only_within_an_answers_budget(dss_4, data_root):
    loaded = load_model("tiny-gpt2", device="cpu")
    prepared = prepare_data(read_data_dir(dss_4), loaded, get_spec("coin_flip"),
                            TrainConfig(student="tiny-gpt2", max_length=768))
    assert all(t.loss_weight is not None for t in prepared.train + prepared.val)
    label_targets = max(t.target_tokens for t in prepared.train if t.objective == LABEL)
    rationale_targets = max(t.target_tokens for t in prepared.train if t.objective == RATIONALE)
    budget = _default_max_new_tokens(prepared)
    assert budget == math.ceil(1.25 * label_targets) + 4 < rationale_targets


def _task_losses(loaded, data) -> dict[str, float]:
    """Mean cross-entropy per target token of each task over the training rows (no weights)."""
    items = [tokenize(loaded, e, data.template, 768) for e in data.train]
    wrapper = CompletionLM(loaded.model.float().eval(), loaded.is_encoder_decoder)
    totals = {}
    with torch.no_grad():
        for task in (LABEL, RATIONALE):
            chosen = [t for t in items if t.objective == task]
            loss_sum, count = wrapper(**collate(chosen, loaded.tokenizer.pad_token_id or 0, False))
            totals[task] = float(loss_sum) / count
    return totals


@pytest.mark.slow
def test_tiny_gpt2_learns_both_tasks_and_answers_with_the_label_task(dss_4, data_root, tmp_path):
    """Six epochs of 8 rows (24 steps): measured here, per-token loss 5.76 → 2.01 on the label rows and
    5.57 → 3.35 on the rationale rows (ln 256 = 5.55: a byte-level student's first guess). Not a learning test
    to high accuracy: coin flip's labels alone took tiny-gpt2 far longer than a test may (see test_learning)."""
    config = TrainConfig(student="tiny-gpt2", epochs=6, lr=1e-3, batch_size=2, dropout=0.0, max_length=768,
                         bf16=False, device="cpu")
    record = train(dss_4, tmp_path / "ck", config)
    assert record["finished"] and record["template"] == "ft_dss" and record["train_examples"] == 8
    # Validation generated for the 2 label rows (not the 2 rationale rows of the same questions).
    assert {m["val_total"] for m in record["epochs"]} == {2}
    assert record["epochs"][-1]["train_loss"] < record["epochs"][0]["train_loss"]

    data = read_data_dir(dss_4)
    before = _task_losses(load_model("tiny-gpt2", dtype="float32", device="cpu", seed=config.seed), data)
    student, template = load_student(tmp_path / "ck", dtype="float32", device="cpu")
    after = _task_losses(student, data)
    assert template.name == "ft_dss"
    for task in (LABEL, RATIONALE):  # both tasks were learned, not just the one with more tokens
        assert after[task] < 0.75 * before[task], (task, before, after)

    # ftcot evaluate asks the label task only, within vanilla fine-tuning's budget (not ft_cot's 256 tokens).
    result = evaluate(load_task("coin_flip", data_root), str(tmp_path / "ck"), tmp_path / "eval", limit=3,
                      batch_size=3)
    assert result.metrics["method"] == "ft_dss" and result.metrics["max_new_tokens"] == 16
    for r in result.records:
        assert r["prompt"] == f"[label] {r['question'].strip()} ###"
        assert r["completion_tokens"] <= 16


def test_eval_method_asks_the_label_task_like_vanilla_fine_tuning(data_root):
    task = load_task("coin_flip", data_root)
    question = task.split("test")[0].question
    local = EvalMethod("ft_dss", task, encoder_decoder=False, api=False).first_request(question)
    assert local.prompt == f"[label] {question.strip()} ###" and local.stop == ()
    assert local.max_new_tokens == default_max_new_tokens("ft_dss") == default_max_new_tokens("ft") == 16
    api = EvalMethod("ft_dss", task, encoder_decoder=False, api=True).first_request(question)
    assert api.stop == (" END",)
    seq2seq = EvalMethod("ft_dss", task, encoder_decoder=True, api=False).first_prompt(question)
    assert seq2seq == f"[label] {question.strip()}"


def test_rationale_weight_is_checked_and_belongs_to_ft_dss_data(data_root, tmp_path):
    with pytest.raises(FtcotError, match=r"--rationale-weight must be a finite number in \[0, inf\)"):
        TrainConfig(rationale_weight=-1.0)
    cot = make_coin_flip_dir(data_root, tmp_path / "cot", 4, 2)
    result = run_ftcot("train", cot, "--student", "tiny-gpt2", "--rationale-weight", "2", "--epochs", "1",
                       "--max-length", "768", "--device", "cpu", "--out", tmp_path / "ck")
    assert_one_line_error(result, "--rationale-weight applies to distilling step-by-step data (ft_dss)",
                          "'ft_cot' data")
    assert not (tmp_path / "ck").exists()
    api = run_ftcot("train", cot, "--student", "openai:gpt-4o-mini", "--rationale-weight", "2", "--out",
                    tmp_path / "api")
    assert_one_line_error(api, "--rationale-weight weighs a local student's loss")


@pytest.mark.slow
def test_two_processes_follow_one_on_weighted_rows(dss_4, tmp_path):
    """Under DDP each process takes every second row of a batch (here a label row and a rationale row go to
    different processes): the task weights and the division by the update's rows are global, so the loss
    trajectory is one process's."""
    import os
    import subprocess
    import sys

    from tests.train.helpers import THREADS, record, run_train

    config = Path(__file__).resolve().parents[2] / "configs" / "accelerate" / "ddp_cpu.yaml"
    args = ("--student", "tiny-gpt2", "--epochs", "2", "--batch-size", "4", "--lr", "1e-3", "--no-bf16",
            "--dropout", "0", "--max-length", "768", "--max-new-tokens", "4", "--rationale-weight", "0.5")
    one = run_train(dss_4, *args, "--out", tmp_path / "one")
    assert one.returncode == 0, one.stderr[-2000:]
    accelerate = Path(sys.executable).with_name("accelerate")
    two = subprocess.run([str(accelerate), "launch", "--config_file", str(config), "-m", "ftcot", "train",
                          str(dss_4), *args, "--out", str(tmp_path / "two")],
                         capture_output=True, text=True, timeout=900, env={**os.environ, **THREADS})
    assert two.returncode == 0, two.stderr[-3000:]
    single, double = record(tmp_path / "one"), record(tmp_path / "two")
    assert (single["processes"], double["processes"]) == (1, 2)
    losses_1 = [loss for m in single["epochs"] for loss in m["step_losses"]]
    losses_2 = [loss for m in double["epochs"] for loss in m["step_losses"]]
    assert len(losses_1) == 4 and losses_2 == pytest.approx(losses_1, rel=1e-4)
    for a, b in zip(single["epochs"], double["epochs"]):
        assert b["val_loss"] == pytest.approx(a["val_loss"], rel=1e-4)
        assert a["val_total"] == b["val_total"] == 2  # the label rows, shared between the processes
