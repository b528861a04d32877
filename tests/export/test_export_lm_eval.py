"""``ftcot export tasks``: the benchmarks as lm-evaluation-harness tasks that ask and score what ftcot does.

The real ``lm_eval`` (its TaskManager, its CLI and its ``hf`` model) runs the exported directory, offline.
The agreement test generates with a tiny random GPT-2 built from a config; its initialisation is scaled up
(``initializer_range`` 0.5) so that greedy decoding writes varied bytes (digits, letters) that differ from
question to question: at the default scale it repeats one byte, every answer is the same empty string, and
equal accuracies would prove nothing. Outputs are compared character for character, then answers.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from ftcot.evaluate.methods import EvalMethod
from ftcot.export.lm_eval import EXPORTED_METHODS, FILTER, GROUP, SINGLE_STAGE, UTILS
from ftcot.scoring import extract_answer, is_correct, normalize_gold
from ftcot.tasks import BUILTIN_TASKS, get_spec, load_task
from ftcot.templates import Template
from tests.cli import assert_one_line_error, run_ftcot
from tests.conftest import TEACHER_DIR
from tests.export.conftest import THREADS, ok

LIMIT = 3  # questions per task and method in the agreement test
# What ftcot and lm-eval need to generate the same tokens: one thread each (a matmul's sums are ordered by
# its blocking), fp32, no hub.
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", **THREADS}


@pytest.fixture(scope="module")
def exported(tmp_path_factory, data_root) -> Path:
    out = tmp_path_factory.mktemp("lm-eval") / "tasks"
    result = ok(run_ftcot("export", "tasks", "--to", out, "--data-dir", data_root, env=THREADS))
    assert f"wrote {out}: {12 * len(EXPORTED_METHODS)} lm-eval tasks (12 task(s)" in result.stdout
    assert f"--include_path {out} --tasks {GROUP}" in result.stdout
    return out


class _FunctionLoader(yaml.SafeLoader):
    """lm-eval's ``!function utils.NAME`` read as its name."""


_FunctionLoader.add_constructor("!function", lambda loader, node: loader.construct_scalar(node))


def read_config(exported: Path, key: str, method: str) -> dict:
    return yaml.load((exported / f"{GROUP}_{key}_{method}.yaml").read_text(encoding="utf-8"), Loader=_FunctionLoader)


def load_utils(exported: Path):
    spec = importlib.util.spec_from_file_location("ftcot_exported_utils", exported / UTILS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def answer_filter(utils, config: dict):
    step = config["filter_list"][0]["filter"][0]
    assert step["function"] == "utils.AnswerFilter"
    return utils.AnswerFilter(**{k: v for k, v in step.items() if k != "function"})


def teacher_records(key: str, method: str) -> list[dict]:
    path = TEACHER_DIR / method / f"{key}.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_utils_imports_nothing_but_the_standard_library(exported):
    source = (exported / UTILS).read_text(encoding="utf-8")
    imports = {line.split()[1] for line in source.splitlines() if line.startswith(("import ", "from "))}
    assert imports == {"re"}


@pytest.mark.parametrize("key", list(BUILTIN_TASKS))
def test_the_exported_answer_rule_is_ftcots_on_recorded_teacher_outputs(key, exported):
    """text-davinci-002's real outputs, laid out as each method's output would be, extracted both ways."""
    spec = get_spec(key)
    utils = load_utils(exported)
    cot, direct = teacher_records(key, "zs_cot"), teacher_records(key, "zs")
    texts = [r["answer_completion"] for r in cot + direct] + [r["reasoning_completion"] for r in cot]
    # A Fine-tune-CoT completion: the gold answer after the arrow, or the teacher's own answer text.
    texts += [f" {r['reasoning_completion'].strip()} --> {r['answer']}" for r in cot]
    texts += [f" {r['reasoning_completion'].strip()} -->{r['answer_completion']}" for r in cot]
    for method in ("zs", "ft_cot", "ft"):
        got = answer_filter(utils, read_config(exported, key, method)).apply([[t] for t in texts], None)
        assert got == [[extract_answer(t, spec, method)] for t in texts], method

    # Single-stage Zero-shot-CoT: a model that writes the trigger itself has its answer read as stage 2 reads it.
    single = answer_filter(utils, read_config(exported, key, SINGLE_STAGE))
    phrase = spec.trigger.strip()
    cases = [r for r in cot if phrase not in r["reasoning_completion"]]
    assert len(cases) >= 0.98 * len(cot)  # the teacher wrote the phrase itself in 5 of 500 last-letter rationales
    written = [[r["reasoning_completion"] + " " + spec.trigger + r["answer_completion"]] for r in cases]
    assert single.apply(written, None) == [[extract_answer(r["answer_completion"], spec, "zs_cot")] for r in cases]

    # The metric: exact_match on the exported gold is ftcot's is_correct (values as floats where ftcot does).
    kwargs = {k: v for k, v in read_config(exported, key, "zs")["metric_list"][0].items()
              if k not in ("metric", "aggregation", "higher_is_better")}
    assert kwargs == {"float_compare": spec.float_compare}
    for record in cot:
        prediction = extract_answer(record["answer_completion"], spec, "zs_cot")
        gold = normalize_gold(record["answer"], spec, "paper")
        correct = is_correct(prediction, record["answer"], spec)
        assert utils.exact_match([gold], [prediction], **kwargs) == float(correct)


def test_float_compare_counts_equal_values_as_equal(exported):
    utils = load_utils(exported)
    assert utils.exact_match(["2.5"], ["2.50"], float_compare=True) == 1.0
    assert utils.exact_match(["2.5"], ["2.50"], float_compare=False) == 0.0
    assert utils.exact_match(["3"], [""], float_compare=True) == 0.0


def test_lm_eval_loads_every_exported_task_offline_as_ftcot_evaluate_asks_it(exported, data_root, monkeypatch,
                                                                             tmp_path):
    import datasets
    from lm_eval.tasks import TaskManager

    # datasets read these at import (perhaps in an earlier test): set what load_dataset looks at now.
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets-cache")

    manager = TaskManager(include_path=str(exported), include_defaults=False)
    loaded = manager.load([GROUP])["tasks"]
    assert sorted(loaded) == sorted(f"{GROUP}_{key}_{m}" for key in BUILTIN_TASKS for m in EXPORTED_METHODS)
    one_method = manager.load([f"{GROUP}_ft_cot"])["tasks"]
    assert sorted(one_method) == sorted(f"{GROUP}_{key}_ft_cot" for key in BUILTIN_TASKS)
    for key in BUILTIN_TASKS:
        task = load_task(key, data_root)
        samples = task.split("test")
        for method in EXPORTED_METHODS:
            lm_task = loaded[f"{GROUP}_{key}_{method}"]
            plan = EvalMethod(method, task, encoder_decoder=False, api=False)
            docs = list(lm_task.test_docs())
            assert [d["sample_index"] for d in docs] == [s.index for s in samples]  # --limit N: the same questions
            for doc, sample in zip(docs[:3], samples):
                assert lm_task.doc_to_text(doc) == plan.first_prompt(sample.question)
                assert lm_task.doc_to_target(doc) == normalize_gold(sample.answer, task.spec, "paper")
            kwargs = lm_task.config.generation_kwargs
            assert kwargs["until"] == list(plan.stop) and kwargs["max_gen_toks"] == plan.max_new_tokens
            assert kwargs["do_sample"] is False and lm_task.config.num_fewshot == 0


def test_a_task_file_of_ones_own_exports_too(tmp_path):
    own = tmp_path / "my-sums.jsonl"
    rows = [{"question": f"What is {i} + {i}?", "answer": str(2 * i), "split": "train" if i < 3 else "test"}
            for i in range(5)]
    own.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "tasks"
    ok(run_ftcot("export", "tasks", own, "--answer-type", "number", "--to", out))
    docs = [json.loads(line) for line in (out / "my_sums.jsonl").read_text().splitlines()]
    assert [d["question"] for d in docs] == ["What is 3 + 3?", "What is 4 + 4?"]
    assert docs[0]["prompt_ft_cot"] == "What is 3 + 3? ###"
    config = read_config(out, "my_sums", "zs")
    assert config["dataset_kwargs"]["data_files"]["test"] == str(out / "my_sums.jsonl")
    assert config["metric_list"][0]["float_compare"] is True
    assert_one_line_error(run_ftcot("export", "tasks", own, "--to", tmp_path / "x"), "--answer-type")
    assert_one_line_error(run_ftcot("export", "tasks", own, "--answer-type", "number", "--to", tmp_path,
                                    "--force"), "contains the input")


def test_bad_inputs_are_one_line_errors(exported, data_root, tmp_path):
    assert_one_line_error(run_ftcot("export", "tasks", "coin_flp", "--to", tmp_path / "a", "--data-dir", data_root),
                          "Unknown task 'coin_flp'", "Did you mean 'coin_flip'?", "strategy_qa")
    assert_one_line_error(run_ftcot("export", "tasks", "coin_flip", "--to", data_root / "lm-eval",
                                    "--data-dir", data_root), "lies inside the input")
    assert_one_line_error(run_ftcot("export", "tasks", "coin_flip", "--to", exported, "--data-dir", data_root),
                          "not empty", "--force")
    assert_one_line_error(run_ftcot("export", "tasks", "coin_flip", "coin_flip", "--to", tmp_path / "b",
                                    "--data-dir", data_root), "both be exported")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    # --force replaces the directory whole: the old tasks are gone.
    replaced = tmp_path / "c"
    ok(run_ftcot("export", "tasks", "aqua", "--to", replaced, "--data-dir", data_root))
    ok(run_ftcot("export", "tasks", "coin_flip", "--to", replaced, "--force", "--data-dir", data_root))
    assert sorted(p.name for p in replaced.glob("*.yaml")) == [f"{GROUP}_coin_flip_{m}.yaml"
                                                               for m in sorted(EXPORTED_METHODS)]


# ---- agreement: ftcot evaluate and lm_eval on the same model and questions --------------------------------------
@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    import torch
    from transformers import ByT5Tokenizer, GPT2Config, GPT2LMHeadModel

    tokenizer = ByT5Tokenizer(extra_ids=0)  # bytes: needs no files, and appends EOS (see add_bos_token below)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        config = GPT2Config(vocab_size=len(tokenizer), n_layer=2, n_embd=64, n_head=2, n_positions=2048,
                            initializer_range=0.5, pad_token_id=tokenizer.pad_token_id,
                            eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id)
        model = GPT2LMHeadModel(config)
    out = tmp_path_factory.mktemp("tiny") / "model"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def _ftcot_records(model: Path, data_root: Path, out: Path) -> dict[tuple[str, str], list[dict]]:
    import torch

    from ftcot.evaluate import evaluate

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        records = {}
        for key in BUILTIN_TASKS:
            task = load_task(key, data_root)
            for method in EXPORTED_METHODS:
                result = evaluate(task, str(model), out / f"{key}-{method}", method=method, batch_size=1,
                                  limit=LIMIT, dtype="float32", device="cpu")
                records[key, method] = result.records
        return records
    finally:
        torch.set_num_threads(threads)


def _lm_eval_samples(model: Path, exported: Path, out: Path) -> dict[str, list[dict]]:
    # The CLI as a user runs it. ByT5 appends EOS to every text; ftcot drops it from a prompt, and
    # add_bos_token=False (add_special_tokens=False) keeps lm-eval from adding it.
    command = [sys.executable, "-m", "lm_eval", "--model", "hf",
               "--model_args", f"pretrained={model},add_bos_token=False,dtype=float32",
               "--include_path", str(exported), "--tasks", GROUP, "--limit", str(LIMIT), "--batch_size", "1",
               "--device", "cpu", "--log_samples", "--output_path", str(out)]
    env = {**os.environ, **OFFLINE, "HF_DATASETS_CACHE": str(out / "datasets-cache"), "TQDM_DISABLE": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    samples = {}
    for path in out.rglob("samples_*.jsonl"):
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        samples[path.name.removeprefix("samples_").rsplit("_", 1)[0]] = rows  # samples_<task>_<date>.jsonl
    return samples


@pytest.mark.slow
def test_lm_eval_generates_extracts_and_scores_what_ftcot_evaluate_does_on_every_task(
        tiny_model, exported, data_root, tmp_path):
    began = time.perf_counter()
    ours = _ftcot_records(tiny_model, data_root, tmp_path / "ftcot")
    theirs = _lm_eval_samples(tiny_model, exported, tmp_path / "lm-eval")
    assert len(theirs) == len(ours) == 12 * len(EXPORTED_METHODS)
    answered, compared, correct = set(), 0, 0
    for (key, method), records in ours.items():
        samples = sorted(theirs[f"{GROUP}_{key}_{method}"], key=lambda s: s["doc_id"])
        assert [s["doc"]["sample_index"] for s in samples] == [r["sample_index"] for r in records]
        for sample, record in zip(samples, records):
            assert sample["arguments"]["gen_args_0"]["arg_0"] == record["prompt"]
            output = sample["resps"][0][0]
            if method == SINGLE_STAGE:
                assert output == record["rationale"]  # stage 1 alike; ftcot's answer comes from a stage 2
                # Read as the paper reads a completion with the trigger phrase as its answer prefix.
                spec = get_spec(key)
                single = Template("single-stage zs_cot", "", spec.trigger.strip())
                assert sample["filtered_resps"][0] == extract_answer(output, spec, single)
                continue
            assert output == record["output"], (key, method)
            assert sample["filter"] == FILTER and sample["filtered_resps"][0] == record["prediction"], (key, method)
            assert sample["exact_match"] == float(record["correct"])
            answered.add(record["prediction"])
            compared += 1
            correct += record["correct"]
        if method != SINGLE_STAGE:
            ftcot_accuracy = 100 * sum(r["correct"] for r in records) / len(records)
            lm_eval_accuracy = 100 * sum(s["exact_match"] for s in samples) / len(samples)
            assert abs(ftcot_accuracy - lm_eval_accuracy) <= 0.5, (key, method)
    # The outputs vary, so equal answers mean something: many distinct ones, not one empty string throughout.
    assert len(answered - {""}) >= 10
    print(f"\nlm_eval agreed with ftcot evaluate on {len(ours)} tasks x {LIMIT} questions: {compared} answers "
          f"({len(answered - {''})} distinct, {correct} correct) and {len(ours) // 4 * LIMIT} zs_cot rationales, "
          f"in {time.perf_counter() - began:.0f} s")
