"""Logit distillation (``ft_cot_kd``): a real hf: teacher stores its top-K, curate carries them, train distils.

The teacher is a tiny GPT-2 on the byte tokenizer of ``tiny-gpt2`` whose weights are set by hand (see
:func:`yes_teacher`) so that it writes " yes yes yes …" whatever it is asked: right on the coin-flip questions
whose answer is yes, so curation keeps real rationales, and with its next-token probability spread over other
tokens too (about 0.4 on the one it writes), so its top-K says more than the sampled token. Everything runs
for real: ``ftcot.teach`` with ``top_logprobs``, ``ftcot curate`` (which carries them), ``ftcot train
--kd-weight`` on tiny-gpt2 (the same tokenizer), and a student of another tokenizer.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import pytest

import ftcot
from ftcot.curate.logprobs import TEACHER_LOGPROBS_FILE
from ftcot.errors import FtcotError
from ftcot.teach.export import export, logprobs_json
from ftcot.teach.store import TeachStore
from tests.cli import assert_one_line_error, run_ftcot
from tests.train.helpers import THREADS

FAST = {"epochs": 2, "batch_size": 2, "lr": 1e-3, "max_new_tokens": 4, "device": "cpu", "bf16": False,
        "max_length": 256}


def yes_teacher(out: Path) -> Path:
    """A one-layer GPT-2 (byte tokenizer) whose next token depends on its current one only: y→e→s→' '→y, any
    other → ' '. Its blocks add nothing (output projections zero), positions are zero, each token embeds as
    one of five one-hot groups, and the untied output layer maps a group to its next token (logit ≈ 6 above
    the rest) plus small noise, so the other tokens of its top-K differ."""
    import torch
    from transformers import ByT5Tokenizer, GPT2Config, GPT2LMHeadModel

    tokenizer = ByT5Tokenizer(extra_ids=0)
    width = 64
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        config = GPT2Config(vocab_size=len(tokenizer), n_layer=1, n_embd=width, n_head=2, n_positions=1024,
                            tie_word_embeddings=False, pad_token_id=tokenizer.pad_token_id,
                            eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id)
        model = GPT2LMHeadModel(config)
        with torch.no_grad():
            for block in model.transformer.h:
                for layer in (block.attn.c_proj, block.mlp.c_proj):
                    layer.weight.zero_()
                    layer.bias.zero_()
            model.transformer.wpe.weight.zero_()
            ids = {c: tokenizer.convert_tokens_to_ids(c) for c in "yes "}
            group = torch.full((len(tokenizer),), 4, dtype=torch.long)
            for g, c in enumerate("yes "):
                group[ids[c]] = g
            model.transformer.wte.weight.copy_(torch.nn.functional.one_hot(group, width).float())
            head = torch.randn(len(tokenizer), width) * 0.06
            normed = torch.nn.functional.layer_norm(torch.eye(width), (width,))
            for g, following in enumerate("es y "):
                head[ids[following]] += 0.09 * normed[g]
            model.lm_head.weight.copy_(head)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def char_student(out: Path) -> Path:
    """A tiny GPT-2 with a character tokenizer of its own: the same text, other token ids than the teacher's."""
    import torch
    from tokenizers import Tokenizer, decoders, models
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    chars = [chr(c) for c in range(32, 127)] + ["\n"]
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{c: 3 + len(chars) - 1 - i for i, c in enumerate(chars)}}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    core.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="</s>",
                                        unk_token="<unk>")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = GPT2LMHeadModel(GPT2Config(vocab_size=len(vocab), n_layer=1, n_embd=32, n_head=2, n_positions=1024,
                                           pad_token_id=0, eos_token_id=1, bos_token_id=1))
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models on a shared 2-core machine: threads that wait for each other made training ~10x slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    return yes_teacher(tmp_path_factory.mktemp("kd") / "teacher")


def _train_questions(data_root: Path, n: int) -> list[int]:
    from ftcot.tasks import load_task

    return load_task("coin_flip", data_root).split_indices("train")[:n]


@pytest.fixture(scope="module")
def taught(teacher, data_root, tmp_path_factory) -> Path:
    """24 training questions taught with top_logprobs=5 (about half are right: the 'yes' ones)."""
    out = tmp_path_factory.mktemp("kd") / "run"
    ftcot.teach("coin_flip", f"hf:{teacher}", out, data_dir=data_root, split="train",
                questions=_train_questions(data_root, 24), top_logprobs=5, max_tokens=20)
    return out


@pytest.fixture(scope="module")
def kd_data(taught, data_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("kd") / "data"
    ftcot.curate(taught, out, data_dir=data_root, val_fraction=0.2)
    return out


def _sidecar(data_dir: Path) -> list[dict]:
    with gzip.open(data_dir / TEACHER_LOGPROBS_FILE, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def _examples(data_dir: Path, name: str = "train.jsonl") -> list[dict]:
    return [json.loads(line) for line in (data_dir / name).open(encoding="utf-8")]


def test_curate_carries_the_stored_top_k_of_each_training_rationale(kd_data, taught):
    train, rows = _examples(kd_data), _sidecar(kd_data)
    assert len(train) >= 4 and [r["teacher_record"] for r in rows] == [e["teacher_record"] for e in train]
    with TeachStore.open_readonly(taught) as store:
        stored = store.top_logprobs(e["teacher_record"] for e in train)
    for row in rows:
        assert {k: v for k, v in row.items() if k not in ("teacher_record", "teacher")} == \
            logprobs_json(stored[row["teacher_record"]])
        assert row["k"] == 5 and len(row["ids"]) == len(row["logprobs"]) == 20 and row["teacher"].startswith("hf:")
    summary = json.loads((kd_data / "curation.json").read_text())["teacher_logprobs"]
    assert summary == {"file": TEACHER_LOGPROBS_FILE, "records": len(rows), "k": 5, "token_ids": True,
                       "teachers": [rows[0]["teacher"]]}


def test_an_exported_jsonl_with_logprobs_curates_to_the_same_rows(kd_data, taught, data_root, tmp_path):
    exported = tmp_path / "run.jsonl"
    with TeachStore.open_readonly(taught) as store:
        export(store, exported, logprobs=True)
    teachers = {json.loads(line)["teacher"] for line in exported.open()}
    out = tmp_path / "data"
    ftcot.curate(exported, out, data_dir=data_root, task="coin_flip", val_fraction=0.2)
    strip = ("teacher_record", "teacher")
    assert [{k: v for k, v in r.items() if k not in strip} for r in _sidecar(out)] == \
        [{k: v for k, v in r.items() if k not in strip} for r in _sidecar(kd_data)]
    assert {r["teacher"] for r in _sidecar(out)} == teachers and len(teachers) == 1


def test_a_run_without_stored_logprobs_curates_as_before_and_kd_on_it_is_one_line(teacher, data_root, tmp_path):
    run = tmp_path / "plain"
    ftcot.teach("coin_flip", f"hf:{teacher}", run, data_dir=data_root, split="train",
                questions=_train_questions(data_root, 6), max_tokens=20)
    result = run_ftcot("--data-dir", data_root, "curate", run, "--out", tmp_path / "data", env=THREADS)
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "data" / TEACHER_LOGPROBS_FILE).exists()
    assert "teacher_logprobs" not in json.loads((tmp_path / "data" / "curation.json").read_text())
    result = run_ftcot("--data-dir", data_root, "train", tmp_path / "data", "--out", tmp_path / "ckpt", "--student",
                       "tiny-gpt2", "--kd-weight", "1", "--device", "cpu", env=THREADS)
    assert_one_line_error(result, str(tmp_path / "data"), "no teacher log-probabilities",
                          "--teacher-args top_logprobs=5")
    assert not (tmp_path / "ckpt").exists()


def test_a_store_with_top_k_for_some_rationales_only_carries_none_and_says_why(taught, kd_data, data_root,
                                                                                tmp_path):
    import shutil
    import sqlite3

    run = tmp_path / "run"
    shutil.copytree(taught, run)
    with sqlite3.connect(run / "teach.sqlite") as db:  # as if a rationale had been taught before top_logprobs
        db.execute("DROP TRIGGER logprobs_no_delete")  # the store keeps what it stored; this test edits a copy
        db.execute("DELETE FROM logprobs WHERE key = ?", (_examples(kd_data)[0]["teacher_record"],))
    ftcot.curate(run, tmp_path / "data", data_dir=data_root, val_fraction=0.2)
    assert not (tmp_path / "data" / TEACHER_LOGPROBS_FILE).exists()
    why = json.loads((tmp_path / "data" / "curation.json").read_text())["teacher_logprobs"]
    assert why["carried"] is False and "have no stored log-probabilities" in why["why"]


def test_the_top_k_lands_on_the_completion_tokens_the_teacher_wrote(kd_data, data_root):
    from ftcot.models import load_model
    from ftcot.train.config import TrainConfig
    from ftcot.train.data import collate, read_data_dir
    from ftcot.train.trainer import prepare_data, resolve_task_spec

    loaded = load_model("tiny-gpt2", dtype="float32", device="cpu")
    prepared = prepare_data(read_data_dir(kd_data), loaded, resolve_task_spec("coin_flip"),
                            TrainConfig(student="tiny-gpt2", kd_weight=1.0, max_length=256))
    rows = {r["teacher_record"]: r for r in _sidecar(kd_data)}
    for example, item in zip(_examples(kd_data), prepared.train):
        positions, ids, _ = item.kd
        written = [r[0] for r in rows[example["teacher_record"]]["ids"]]
        # Every teacher token, " yes yes yes yes yes", is the student's label at its position, in order.
        assert [item.labels[p] for p in positions] == written and positions == list(
            range(item.prompt_tokens, item.prompt_tokens + len(written)))
        assert [r[0] for r in ids] == [r[1] for r in rows[example["teacher_record"]]["ids"]]
    assert all(t.kd is None for t in prepared.val)  # validation loss stays the cross-entropy
    batch = collate(prepared.train[:2], 0, False)
    covered = batch["teacher_ids"][..., 0] >= 0
    assert covered.sum() == sum(len(t.kd[0]) for t in prepared.train[:2])
    assert (batch["labels"][covered] >= 0).all()


def _digest(ckpt: Path) -> str:
    return hashlib.sha256(b"".join(p.read_bytes() for p in sorted((ckpt / "best").rglob("*.safetensors")))).hexdigest()


def test_kd_training_logs_its_kl_and_trains_another_student_than_lambda_zero(kd_data, tmp_path):
    runs = {weight: ftcot.train(kd_data, tmp_path / f"kd-{weight}", student="tiny-gpt2", kd_weight=weight, **FAST)
            for weight in (None, 0.0, 1.0)}
    plain, zero, kd = runs[None], runs[0.0], runs[1.0]
    # λ = 0: the KL is computed and logged, and the training is the plain one, bit for bit.
    assert [e["step_losses"] for e in zero.epochs] == [e["step_losses"] for e in plain.epochs]
    assert _digest(zero.out) == _digest(plain.out)
    assert "train_kd_loss" not in plain.epochs[0] and zero.epochs[0]["train_kd_loss"] > 0
    # λ = 1: the objective is CE + KL, the KL falls as the student learns the teacher's distribution.
    steps = [json.loads(line) for line in (kd.out / "metrics.jsonl").open() if '"step"' in line]
    steps = [s for s in steps if s["kind"] == "step"]
    assert all("kd_loss" in s for s in steps) and steps[-1]["kd_loss"] < steps[0]["kd_loss"] / 2
    assert steps[-1]["train_loss"] < steps[0]["train_loss"]
    assert kd.epochs[0]["step_losses"][0] > zero.epochs[0]["step_losses"][0]  # the same CE, plus λ·KL > 0
    assert _digest(kd.out) != _digest(zero.out)
    assert kd.record["config"]["kd_weight"] == 1.0
    assert kd.epochs[-1]["train_kd_loss"] < zero.epochs[0]["train_kd_loss"]


def test_a_student_with_another_tokenizer_is_refused_before_training(kd_data, tmp_path, data_root):
    student = char_student(tmp_path / "char-student")
    out = tmp_path / "ckpt"
    result = run_ftcot("--data-dir", data_root, "train", kd_data, "--out", out, "--student", student,
                       "--kd-weight", "1", "--epochs", "1", "--device", "cpu", "--max-length", "256", env=THREADS)
    assert_one_line_error(result, f"--kd-weight: the student's tokenizer ({student}:", "99 tokens",
                          "does not reproduce the tokens of the teacher (hf:", "needs the teacher's tokenizer")
    assert not out.exists()
    # Without distillation the same student trains on the same data (the tokenizer is only KD's business).
    ftcot.train(kd_data, out, student=str(student), **{**FAST, "epochs": 1})


def test_kd_weight_needs_a_data_dir_with_the_teachers_top_k(taught, data_root, tmp_path):
    plain = tmp_path / "plain"
    ftcot.curate(taught, plain, data_dir=data_root, val_fraction=0.2)
    (plain / TEACHER_LOGPROBS_FILE).unlink()
    with pytest.raises(FtcotError, match=r"--kd-weight: .* has no teacher log-probabilities .*top_logprobs=5"):
        ftcot.train(plain, tmp_path / "ckpt", student="tiny-gpt2", kd_weight=1.0, **FAST)
    with pytest.raises(FtcotError, match="--kd-weight must be"):
        ftcot.train(plain, tmp_path / "ckpt", student="tiny-gpt2", kd_weight=-1.0, **FAST)
    ftcot.curate(taught, tmp_path / "ft", data_dir=data_root, template="ft")  # no rationale: nothing to carry
    assert not (tmp_path / "ft" / TEACHER_LOGPROBS_FILE).exists()
    # A provider's fine-tuning job sees the text only: refused, not silently ignored.
    assert_one_line_error(run_ftcot("train", plain, "--out", tmp_path / "api", "--student", "openai:m",
                                    "--kd-weight", "1"), "--kd-weight distils", "openai: students")
