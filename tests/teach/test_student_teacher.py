"""A Fine-tune-CoT student as the teacher (self-distillation): ``--method ft_cot``.

The student is asked in its own format (``question ###``), sampled D times like a
Zero-shot-CoT rationale, and its one completion ``rationale --> answer`` is split
at its last arrow into the rationale curation trains on and the answer it is
scored by. The end-to-end test trains a real tiny student, exports it with
``ftcot export model`` and teaches from the exported directory.
"""

from __future__ import annotations

import pytest

import ftcot
from ftcot.curate.sources import load_teacher_records
from ftcot.teach.plan import Chain, Plan, TeachSettings, split_ft_cot
from ftcot.teach.export import chain_record
from ftcot.teach.store import StoredCompletion, StoredQuestion, TeachStore
from tests.cli import run_ftcot

QUESTION = "A coin is heads up. Ka flips the coin. Is the coin still heads up?"


@pytest.mark.parametrize("text, rationale, answer", [
    (" Ka flipped it once, so it is tails. --> no", " Ka flipped it once, so it is tails. ", " no"),
    (" 3 --> 4 is wrong --> yes", " 3 --> 4 is wrong ", " yes"),  # the last arrow starts the answer
    (" no arrow, no answer", " no arrow, no answer", ""),
])
def test_an_ft_cot_completion_splits_at_its_last_arrow(text, rationale, answer):
    assert split_ft_cot(text) == (rationale, answer)
    settings = TeachSettings(task="coin_flip", split="train", teacher="hf:student", method="ft_cot", samples=2,
                             temperature=0.7, max_tokens=64)
    plan = Plan(settings)
    prompt = plan.first_prompt(QUESTION + "\n")
    assert prompt == QUESTION + " ###"  # the Fine-tune-CoT template's prompt, question stripped
    first = StoredCompletion(key="k", teacher="hf:student", stage="ft_cot", sample_index=3, sample_number=1,
                             prompt=prompt, max_tokens=64, temperature=0.7, stop=(), seed=1, text=text,
                             finish_reason="stop", prompt_tokens=9, completion_tokens=12, latency_s=0.1,
                             request_id="r", created=0.0)
    chain = Chain(StoredQuestion(3, "coin_flip", "train", QUESTION, "no"), 1, first, None)
    assert chain.complete
    record = chain_record(chain, plan)
    assert (record["reasoning_completion"], record["answer_completion"]) == (rationale, answer)
    assert record["sample_number"] == 1 and record["method"] == "ft_cot"


@pytest.mark.slow
def test_an_exported_student_teaches_in_its_own_format_with_d_samples(data_root, tmp_path):
    from tests.train.conftest import make_coin_flip_dir

    data = make_coin_flip_dir(data_root, tmp_path / "data", 8, 2)
    trained = run_ftcot("train", data, "--out", tmp_path / "ckpt", "--student", "tiny-gpt2", "--epochs", "1",
                        "--max-new-tokens", "8", env={"OMP_NUM_THREADS": "1"})
    assert trained.returncode == 0, trained.stderr
    exported = run_ftcot("export", "model", tmp_path / "ckpt", "--to", tmp_path / "student")
    assert exported.returncode == 0, exported.stderr
    questions = [1, 4, 7]
    result = ftcot.teach("coin_flip", f"hf:{tmp_path / 'student'}", tmp_path / "teach", method="ft_cot", samples=3,
                         temperature=0.7, max_tokens=16, questions=questions, data_dir=data_root)
    assert result.complete_chains == 9 and result.new_completions == 9
    with TeachStore.open_readonly(tmp_path / "teach") as store:
        rows = list(store.completions())
    assert {row.prompt.endswith(" ###") and row.stage == "ft_cot" for row in rows} == {True}
    assert sorted(row.seed for row in rows if row.sample_index == 1) == [0, 1, 2]  # one seed a sample
    # Curation reads the student's chains like Zero-shot-CoT ones: one record a sample.
    records, task = load_teacher_records(tmp_path / "teach")
    assert task == "coin_flip" and len(records) == 9
    assert all(r["reasoning_completion"] + ("-->" if r["answer_completion"] else "") + r["answer_completion"]
               in {row.text for row in rows} for r in records)
    # A rerun asks for nothing stored.
    again = ftcot.teach("coin_flip", f"hf:{tmp_path / 'student'}", tmp_path / "teach", method="ft_cot", samples=3,
                        temperature=0.7, max_tokens=16, questions=questions, data_dir=data_root)
    assert again.new_completions == 0
