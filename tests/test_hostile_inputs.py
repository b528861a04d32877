"""Hostile input, as a hostile user and a misbehaving environment give it: the bad-input contract, case by case.

The contract (README, issue 14): every bad input is one clear line naming the file, line or field and the fix —
exit code 2 and one line on stderr starting with ``error: `` for the command line (no traceback), one
:class:`FtcotError` line for the Python API; nothing already done is lost; no output that is, or lies inside, an
input; a run where nothing succeeded exits non-zero; numbers finite and in range; secrets never shown.

Through the real ``ftcot`` command (subprocesses), ``ftcot.Experiment`` on real YAML files, and the Python API;
numbers, paths, files, configs, servers (a real stub OpenAI-compatible server on 127.0.0.1) and the environment.
Cases the other test files already hold (tests/test_output_guards.py, tests/test_one_config.py,
tests/experiment/test_config.py, tests/*/test_reliability.py, …) are not repeated here.

A case that breaks the contract today is an ``xfail(strict=True)`` whose reason says what happens instead: the
suite stays green and the defect stays visible (it turns into a failure, XPASS, once fixed: drop the mark then).

The command-line table runs its cases concurrently (:func:`cli_results`), each in a folder of its own: its working
directory must stay empty and its ``@OUT`` must not be created.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

import ftcot
from ftcot.errors import FtcotError
from tests.cli import assert_one_line_error
from tests.conftest import TEACHER_DIR
from tests.mounts import read_only_dir, small_disk  # noqa: F401  (fixtures)
from tests.teach.stub_openai import StubOpenAI
from tests.train.conftest import make_coin_flip_dir

SIDECARS = ("-shm", "-wal", ".lock")  # a read-only SQLite open may touch these; they hold no data
KEY = "sk-hostile-0123456789abcdef-SECRET"  # an API key that must never be shown
TOKEN = "tok-hostile-SECRET-42"  # a credential in a base URL's query


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.name.endswith(SIDECARS)}


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "COLUMNS": "200", "OMP_NUM_THREADS": "1", **extra}


def _ftcot(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "ftcot", *map(str, args)]


def assert_error_line(result: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """After work began (progress, retries): exit code 2, no traceback, one error line and it is the last."""
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("error: "), result.stderr[-3000:]
    assert sum(line.startswith("error") for line in lines) == 1, result.stderr[-3000:]
    for fragment in fragments:
        assert fragment in lines[-1], lines[-1]
    return lines[-1]


# ---- the inputs: a teach run, a DATA_DIR, a copy of coin flip's data root, and hostile files ----------------------


def _hostile_files(root: Path, data_root: Path) -> None:
    f = root / "files"
    f.mkdir()
    good = '{"question": "1 + 1?", "answer": "2"}\n'
    texts = {
        "empty.jsonl": "", "trunc.jsonl": good + '{"question": "2 + 2?", "ans',
        "list-line.jsonl": good + "[1, 2]\n", "null-line.jsonl": good + "null\n",
        "no-answer.csv": "question,gold\n1 + 1?,2\n", "no-header.csv": "",
        "dup.jsonl": good + '{"question": "1  +  1?", "answer": "3"}\n',
        "dup.csv": "question,answer\n1 + 1?,2\n1 + 1?,3\n",
        "nan.jsonl": '{"question": "1 + 1?", "answer": NaN}\n',
        "inf.jsonl": '{"question": "1 + 1?", "answer": -Infinity}\n',
        "number-question.jsonl": '{"question": 5, "answer": "2"}\n',
        "blank-question.jsonl": '{"question": "  ", "answer": "2"}\n',
        "split-number.jsonl": '{"question": "q", "answer": "2", "split": 1}\n',
        "answer-list.jsonl": '{"question": "1 + 1?", "answer": [2]}\n',
        "answer-nan-text.jsonl": '{"question": "1 + 1?", "answer": "nan"}\n',
        "answer-twice.jsonl": '{"question": "1 + 1?", "answer": "2", "answer": "3"}\n',
        "a:x:b.jsonl": "",
        "prices-trunc.json": '{"x": ', "prices-negative.json": '{"x": {"prompt": -1, "completion": 2}}',
        "prices-nan.json": '{"x": {"prompt": NaN, "completion": 2}}', "prices-inf.json": '{"x": [1e400, 1]}',
        "prices-list.json": "[1, 2]", "prices-text.json": '{"x": {"prompt": "cheap", "completion": 2}}',
        "no-question.csv": "text,answer\nhello?,2\n", "no-question.jsonl": '{"text": "hello?"}\n',
    }
    for name, text in texts.items():
        (f / name).write_text(text, encoding="utf-8")
    (f / "binary.jsonl").write_bytes(bytes(range(256)) * 4)
    (f / "binary.json").write_bytes(bytes(range(128, 256)) * 2)
    (f / "utf16.jsonl").write_text(good, encoding="utf-16")
    (f / "bom.jsonl").write_bytes(b"\xef\xbb\xbf" + (good + '{"question": "2 + 2?", "answer": "4"}\n').encode())
    (f / "huge-line.jsonl").write_text(json.dumps({"question": "x " * 2_000_000 + "?", "answer": "2"}) + "\n")
    # Teacher records (the shared format) of coin flip's first training questions, damaged one way each.
    train = set(json.loads((data_root / "splits" / "coin_flip__default.json").read_text())["train"])
    records = [json.loads(line) for line in (TEACHER_DIR / "zs_cot" / "coin_flip.jsonl").open()]
    records = [r for r in records if r["sample_index"] in train][:12]

    def write(name: str, rows: list[dict], prefix: bytes = b"") -> None:
        (f / name).write_bytes(prefix + "".join(json.dumps(r) + "\n" for r in rows).encode())

    write("rec-bom.jsonl", records, b"\xef\xbb\xbf")
    for name, field, value in (("rec-int-completion.jsonl", "answer_completion", 12),
                               ("rec-text-index.jsonl", "sample_index", str(records[3]["sample_index"])),
                               ("rec-bool-index.jsonl", "sample_index", True),
                               ("rec-null-rationale.jsonl", "reasoning_completion", None),
                               ("rec-huge-rationale.jsonl", "reasoning_completion", "word " * 200_000)):
        write(name, records[:3] + [{**records[3], field: value}] + records[4:])
    (f / "rec-trunc.jsonl").write_text(json.dumps(records[0]) + "\n" + json.dumps(records[1])[:40])
    (f / "rec-binary.jsonl").write_bytes(b"\x00\xff" * 100)


def _damaged_data_dirs(root: Path) -> None:
    data = root / "data"
    first = json.loads((data / "train.jsonl").read_text().splitlines()[0])
    damage = {
        "empty": lambda d: (d / "train.jsonl").write_text(""),
        "bad-line": lambda d: (d / "train.jsonl").write_text('{"prompt": "x", "completion": "y"}\n{bad\n'),
        "cut-curation": lambda d: (d / "curation.json").write_text((data / "curation.json").read_text()[:100]),
        "binary-val": lambda d: (d / "val.jsonl").write_bytes(bytes(range(128, 256))),
        "no-curation": lambda d: (d / "curation.json").unlink(),
        "no-completion": lambda d: (d / "train.jsonl").write_text(
            json.dumps({k: v for k, v in first.items() if k != "completion"}) + "\n"),
        "bom": lambda d: (d / "train.jsonl").write_bytes(b"\xef\xbb\xbf" + (data / "train.jsonl").read_bytes()),
    }
    for name, change in damage.items():
        shutil.copytree(data, root / f"dd-{name}")
        change(root / f"dd-{name}")


def _configs(root: Path) -> None:
    c = root / "cfg"
    c.mkdir()
    zs = "tasks: [coin_flip]\nmethods: [zs]\nstudents: [tiny-gpt2]\nteacher_row: false\n"
    texts = {
        "zs1.yaml": zs + "evaluate: {limit: 1, max_new_tokens: 2}\n",
        "empty.yaml": "", "tabs.yaml": "tasks:\n\t- coin_flip\nmethods: [zs]\nstudents: [tiny-gpt2]\n",
        "list.yaml": "- tasks\n- methods\n", "two-documents.yaml": zs + "---\nname: second\n",
        "seeds-nan.yaml": zs + "seeds: [.nan]\n", "limit-inf.yaml": zs + "evaluate: {limit: .inf}\n",
        "unknown-alias.yaml": zs + "students: [*student]\n",
        "evaluate-device.yaml": zs + "evaluate: {device: gpu, limit: 1, max_new_tokens: 2}\n",
    }
    for name, text in texts.items():
        (c / name).write_text(text, encoding="utf-8")
    (c / "binary.yaml").write_bytes(bytes(range(128, 256)) * 2)
    (c / "utf16.yaml").write_text(zs, encoding="utf-16")
    (c / "bom.yaml").write_bytes(b"\xef\xbb\xbf" + zs.encode())


@pytest.fixture(scope="module")
def work(data_root, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hostile")
    mini = root / "mini"  # a copy of coin flip's files: a guard that fails must not write into the shared data
    shutil.copytree(data_root / "raw" / "coin_flip", mini / "raw" / "coin_flip")
    (mini / "splits").mkdir()
    shutil.copy(data_root / "splits" / "coin_flip__default.json", mini / "splits")
    ftcot.teach("coin_flip", "replay:text-davinci-002", root / "run", data_dir=data_root)
    make_coin_flip_dir(data_root, root / "data", 4, 2)
    (root / "afile.txt").write_text("not a directory\n")
    (root / "emptydir").mkdir()
    (root / "dir.jsonl").mkdir()  # a directory with a task file's name
    (root / "mytask.jsonl").write_text('{"question": "1 + 1?", "answer": "2"}\n{"question": "2 + 2?", "answer": "4"}\n')
    questions = [json.loads(line) for line in (TEACHER_DIR / "zs_cot" / "coin_flip.jsonl").open()][:2]
    (root / "coins2.jsonl").write_text("".join(json.dumps({"question": q["question"], "answer": q["answer"],
                                                           "split": "test"}) + "\n" for q in questions))
    _hostile_files(root, data_root)
    _damaged_data_dirs(root)
    _configs(root)
    return root


@pytest.fixture(scope="module", autouse=True)
def untouched(work) -> dict[str, str]:
    """Every input as it was before the cases ran (checked by the last test)."""
    return _snapshot(work)


# ---- the command-line table --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """``ftcot ARGS`` in a folder of its own: ``@W`` the inputs, ``@OUT`` a path that must stay uncreated, ``@DATA``
    the shared data root, ``@MINI`` the coin flip copy, ``@OWN`` a copy of ``own`` (an input the case may damage: it
    must come out unchanged), ``@CFG`` the case's ``config`` written to a file."""

    id: str
    args: str
    fragments: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    ok: bool = False  # accepted: exit 0 (with these fragments on stdout)
    own: str | None = None
    config: str | None = None


def c(id: str, args: str, *fragments: str, xfail: str | None = None, ok: bool = False, own: str | None = None,
      config: str | None = None, **env: str):
    case = Case(id, args, fragments, tuple(env.items()), ok, own, config)
    marks = [pytest.mark.xfail(strict=True, reason=xfail)] if xfail else []
    return pytest.param(case, id=id, marks=marks)


T = "teach --task coin_flip --teacher replay:text-davinci-002 --split test --out @OUT"
TO = ("teach --task coin_flip --teacher openai:x --dry-run --out @OUT "
      "--teacher-args base_url=http://127.0.0.1:9/v1 --teacher-args")
CUR = "curate @W/run --out @OUT"
TRAIN = "train @W/data --student tiny-gpt2 --out @OUT"
EVAL = "evaluate --model tiny-gpt2 --task coin_flip --method ft --out @OUT"
TINY = "--epochs 1 --max-length 1024 --max-new-tokens 2"

NUMBERS = [
    # teach: its options, --adaptive K/M and the numbers inside --teacher-args
    c("teach --samples 0", f"{T} --samples 0", "--samples", "(got 0)"),
    c("teach --samples -1", f"{T} --samples -1", "--samples", "(got -1)"),
    c("teach --samples 2.5", f"{T} --samples 2.5", "--samples"),
    c("teach --temperature nan", f"{T} --temperature nan", "--temperature", "finite", "(got nan)"),
    c("teach --temperature inf", f"{T} --temperature inf", "--temperature", "(got inf)"),
    c("teach --temperature -1", f"{T} --temperature -1", "--temperature", "0 or more"),
    c("teach --temperature hot", f"{T} --temperature hot", "--temperature"),
    c("teach --max-cost nan", f"{T} --max-cost nan", "--max-cost", "finite"),
    c("teach --max-cost -1", f"{T} --max-cost -1", "--max-cost", "0 or more"),
    c("teach --max-cost 1e400", f"{T} --max-cost 1e400", "--max-cost", "(got inf)"),
    c("teach --samples 1e9", f"{T} --samples 1000000000", "--samples", "(got 1000000000)"),
    c("teach --rationalize -1", f"{T} --rationalize -1", "--rationalize", "(got -1)"),
    c("teach --rationalize 2.5", f"{T} --rationalize 2.5", "--rationalize"),
    c("teach --adaptive 0/4", f"{T} --temperature 0.7 --adaptive 0/4", "--adaptive until_correct", "(got 0)"),
    c("teach --adaptive -1/4", f"{T} --temperature 0.7 --adaptive -1/4", "--adaptive until_correct", "(got -1)"),
    c("teach --adaptive 4/2", f"{T} --temperature 0.7 --adaptive 4/2", "max_samples 2 is below until_correct 4"),
    c("teach --adaptive x/y", f"{T} --temperature 0.7 --adaptive x/y", "--adaptive 'x/y'", "expected K/M"),
    c("teach --adaptive 2.5/4", f"{T} --temperature 0.7 --adaptive 2.5/4", "--adaptive '2.5/4'", "expected K/M"),
    c("teach --adaptive 2/", f"{T} --temperature 0.7 --adaptive 2/", "--adaptive '2/'", "expected K/M"),
    c("teach --adaptive greedy", f"{T} --adaptive 1/4", "adaptive sampling", "temperature 0.7"),
    c("teacher-args max_tokens=0", f"{TO} max_tokens=0", "--teacher-args max_tokens: must be at least 1"),
    c("teacher-args max_tokens=2.5", f"{TO} max_tokens=2.5", "--teacher-args max_tokens", "(got 2.5)"),
    c("teacher-args max_tokens=.nan", f"{TO} max_tokens=.nan", "--teacher-args max_tokens", "(got nan)"),
    c("teacher-args max_tokens=1e20", f"{TO} max_tokens=100000000000000000000", "--teacher-args max_tokens"),
    c("teacher-args concurrency=0", f"{TO} concurrency=0", "--teacher-args concurrency: must be at least 1"),
    c("teacher-args concurrency=many", f"{TO} concurrency=many", "--teacher-args concurrency", "(got 'many')"),
    c("teacher-args server_concurrency=0", f"{TO} server_concurrency=0", "--teacher-args server_concurrency"),
    c("teacher-args poll_interval_s=0", f"{TO} poll_interval_s=0", "--teacher-args poll_interval_s", "above 0"),
    c("teacher-args poll_interval_s=nan", f"{TO} poll_interval_s=nan", "--teacher-args poll_interval_s", "finite"),
    c("teacher-args batch_timeout_s=-1", f"{TO} batch_timeout_s=-1", "--teacher-args batch_timeout_s"),
    c("teacher-args batch_timeout_s=.inf", f"{TO} batch_timeout_s=.inf", "--teacher-args batch_timeout_s", "(got inf)"),
    c("teacher-args top_logprobs=21", f"{TO} top_logprobs=21", "--teacher-args top_logprobs", "[0, 20]"),
    c("teacher-args top_logprobs=2.5", f"{TO} top_logprobs=2.5", "--teacher-args top_logprobs", "(got 2.5)"),
    c("teacher-args workers=-1", f"{TO} workers=-1", "--teacher-args workers: must be at least 0"),
    c("teacher-args worker_cpus=0", f"{TO} workers=2,worker_cpus=0", "--teacher-args worker_cpus", "above 0"),
    c("teacher-args worker_gpus=.nan", f"{TO} workers=2,worker_gpus=.nan", "--teacher-args worker_gpus", "finite"),
    c("teacher-args extra_body NaN", f"{TO} 'extra_body={{temperature: .nan}}'", "extra_body"),
    # curate: the numbers the other tests leave out, and the numbers inside its compound options
    c("curate --val-fraction inf", f"{CUR} --val-fraction inf", "--val-fraction", "(got inf)"),
    c("curate --val-fraction x", f"{CUR} --val-fraction x", "--val-fraction"),
    c("curate --max-per-question 2.5", f"{CUR} --max-per-question 2.5", "--max-per-question"),
    c("curate --max-rationale-tokens 0", f"{CUR} --max-rationale-tokens 0", "--max-rationale-tokens", "at least 1"),
    c("curate --val-seed 2.5", f"{CUR} --val-seed 2.5", "--val-seed"),
    c("curate --train-size 0", f"{CUR} --train-size 0", "--train-size: must be at least 1 (got 0)"),
    c("curate --train-size 2.5", f"{CUR} --train-size 2.5", "--train-size '2.5'", "expected N or N:SEED"),
    c("curate --train-size 8:-1", f"{CUR} --train-size 8:-1", "--train-size subset_seed", "at least 0"),
    c("curate --train-size 8:x", f"{CUR} --train-size 8:x", "--train-size '8:x'"),
    c("curate --train-size beyond the task", f"{CUR} --train-size 100000", "100000", "'coin_flip' has 350"),
    c("curate --label majority:0", f"{CUR} --label majority:0", "--label min_votes: must be at least 1"),
    c("curate --label majority:x", f"{CUR} --label majority:x", "--label 'majority:x'", "MODE:VOTES"),
    c("curate --decontaminate ngram=0", f"{CUR} --decontaminate warn,ngram=0", "--decontaminate ngram", "at least 1"),
    c("curate --decontaminate ngram=2.5", f"{CUR} --decontaminate warn,ngram=2.5", "--decontaminate ngram",
      "(got 2.5)"),
    c("curate --decontaminate ngram=x", f"{CUR} --decontaminate warn,ngram=x", "--decontaminate ngram", "(got 'x')"),
    c("curate --decontaminate max_df=0", f"{CUR} --decontaminate warn,max_df=0", "--decontaminate max_df"),
    c("curate --decontaminate min_overlap=1.5", f"{CUR} --decontaminate warn,min_overlap=1.5",
      "--decontaminate min_overlap", "[0, 1]"),
    c("curate --decontaminate min_overlap=-0.1", f"{CUR} --decontaminate warn,min_overlap=-0.1",
      "--decontaminate min_overlap", "(got -0.1)"),
    c("curate --drop truncated:0", f"{CUR} --drop truncated:0", "--drop teacher_token_limit", "at least 1"),
    c("curate --drop no-reasoning:-1", f"{CUR} --drop no-reasoning:-1", "--drop min_rationale_words"),
    c("curate --drop no-reasoning:2.5", f"{CUR} --drop no-reasoning:2.5", "no-reasoning:2.5", "whole number"),
    c("curate --drop truncated:x", f"{CUR} --drop truncated:x", "--drop 'truncated:x'", "truncated:x: expected"),
    # train
    c("train --epochs -1", f"{TRAIN} --epochs -1", "--epochs must be at least 1 (got -1)"),
    c("train --epochs 2.5", f"{TRAIN} --epochs 2.5", "--epochs"),
    c("train --batch-size 0", f"{TRAIN} --batch-size 0", "--batch-size must be at least 1"),
    c("train --grad-accum 0", f"{TRAIN} --grad-accum 0", "--grad-accum must be at least 1"),
    c("train --max-length 0", f"{TRAIN} --max-length 0", "--max-length must be at least 1"),
    c("train --lora-r 0", f"{TRAIN} --lora --lora-r 0", "--lora-r must be at least 1"),
    c("train --lora-alpha -3", f"{TRAIN} --lora-alpha -3", "--lora-alpha", "(got -3)"),
    c("train --eval-batch-size -1", f"{TRAIN} --eval-batch-size -1", "--eval-batch-size"),
    c("train --pad-multiple 0", f"{TRAIN} --pad-multiple 0", "--pad-multiple"),
    c("train --loss-chunk -5", f"{TRAIN} --loss-chunk -5", "--loss-chunk"),
    c("train --rationale-weight nan", f"{TRAIN} --rationale-weight nan", "--rationale-weight", "(got nan)"),
    c("train --rationale-weight -1", f"{TRAIN} --rationale-weight -1", "--rationale-weight", "[0, inf)"),
    c("train --seed 2**32", f"{TRAIN} --seed 4294967296", "--seed must be between 0 and 4294967295"),
    c("train --lr 1e400", f"{TRAIN} --lr 1e400", "--lr", "(got inf)"),
    c("train --lr x", f"{TRAIN} --lr x", "--lr"),
    c("train --weight-decay inf", f"{TRAIN} --weight-decay inf", "--weight-decay", "(got inf)"),
    c("train --device cuda:x", f"{TRAIN} --device cuda:x", "Unknown device 'cuda:x'"),
    c("train --student ''", f"{TRAIN} --student ''", "--student must be a non-empty name"),
    c("train --timeout nan (API student)", f"{TRAIN} --student openai:gpt-4o-mini --timeout nan", "--timeout",
      "(got nan)"),
    c("train --timeout 0 (API student)", f"{TRAIN} --student openai:gpt-4o-mini --timeout 0", "--timeout"),
    c("train --select-epoch last (API student)", f"{TRAIN} --student openai:gpt-4o-mini --select-epoch last",
      "--select-epoch", "openai: students"),
    c("train --select-epoch first", f"{TRAIN} --select-epoch first", "--select-epoch must be one of best, last"),
    c("train --timeout nan (local student)", f"{TRAIN} {TINY} --timeout nan", "--timeout"),
    # evaluate
    c("evaluate --batch-size -1", f"{EVAL} --batch-size -1", "--batch-size: must be at least 1 (got -1)"),
    c("evaluate --batch-size 2.5", f"{EVAL} --batch-size 2.5", "--batch-size"),
    c("evaluate --limit -5", f"{EVAL} --limit -5", "--limit: must be at least 1 (got -5)"),
    c("evaluate --limit x", f"{EVAL} --limit x", "--limit"),
    c("evaluate --max-new-tokens -1", f"{EVAL} --max-new-tokens -1", "--max-new-tokens"),
    c("evaluate --dtype float8", f"{EVAL} --dtype float8", "Unknown dtype 'float8'", "Did you mean 'float32'"),
    c("evaluate --device gpu0", f"{EVAL} --device gpu0", "--device", "unknown device 'gpu0'"),
    c("evaluate --split-scheme paper", f"{EVAL} --split-scheme paper", "Unknown split scheme 'paper'"),
    # data
    c("data synth --names 0", "data synth coin_flip --names 0 --n 3 --out @OUT", "--names is 0"),
    c("data synth --names -1", "data synth coin_flip --names -1 --n 3 --out @OUT", "--names is -1"),
    c("data synth --names huge", "data synth coin_flip --names 100000000 --n 1 --out @OUT", "has only 1985 names"),
    c("data synth --n 2.5", "data synth coin_flip --n 2.5 --out @OUT", "--n"),
    c("data synth unknown kind", "data synth dice --n 3 --out @OUT", "Unknown synthetic task 'dice'"),
    c("data export --split dev", "data export coin_flip --split dev", "Unknown split 'dev'"),
]

CHOICES = [
    c("teach --method (a typo)", f"{T} --method zs-cot", "Unknown method 'zs-cot'", "Did you mean 'zs_cot'"),
    c("teach --split (unknown)", "teach --task coin_flip --teacher replay:text-davinci-002 --split dev --out @OUT",
      "--split", "'dev'"),
    c("teacher-args chat=maybe", f"{TO} chat=maybe", "--teacher-args chat", "(got 'maybe')"),
    c("teacher-args extra_body not a mapping", f"{TO} extra_body=notjson", "--teacher-args extra_body", "dictionary"),
    c("teacher-args base_url a number", "teach --task coin_flip --teacher openai:x --dry-run --out @OUT "
      "--teacher-args base_url=5", "--teacher-args base_url", "(got 5)"),
    c("teacher-args base_url empty list", "teach --task @W/coins2.jsonl --answer-type yes/no --split test "
      "--teacher openai:x --teacher-args base_url=[] --dry-run --out @OUT", "base_url"),
    c("teacher-args base_url twice", "teach --task coin_flip --teacher openai:x --dry-run --out @OUT --teacher-args "
      "base_url=[http://127.0.0.1:9/v1,http://127.0.0.1:9/v1]", "a base URL is given twice"),
    c("teacher-args unknown name", f"{TO} temprature=1", "--teacher-args", "'temprature'"),
    c("teacher-args without '='", "teach --task coin_flip --teacher openai:x --dry-run --out @OUT "
      "--teacher-args base_url",
      "expected NAME=VALUE, got 'base_url'"),
    c("curate --label (unknown)", f"{CUR} --label silver", "--label: Unknown label 'silver'"),
    c("curate --decontaminate (unknown)", f"{CUR} --decontaminate purge", "Unknown decontaminate 'purge'"),
    c("curate --drop (unknown filter)", f"{CUR} --drop loops", "--drop 'loops'", "unknown filter 'loops'"),
    c("curate --drop repetitive:3", f"{CUR} --drop repetitive:3", "repetitive takes no number"),
    c("curate --template (a typo)", f"{CUR} --template cot", "Unknown template 'cot'", "Did you mean 'ft_cot'"),
    c("curate --split-scheme (unknown)", f"{CUR} --split-scheme paper", "Unknown split scheme 'paper'"),
    c("run --executor (unknown)", "run @W/cfg/zs1.yaml --out @OUT --executor slurm --plan", "--executor must be"),
    c("run --address without ray", "run @W/cfg/zs1.yaml --out @OUT --address auto --plan", "--address auto",
      "--executor ray"),
    c("run --explain (no such cell)", "run @W/cfg/zs1.yaml --out @OUT --explain nope zs", "No result for nope zs"),
]

PATHS = [
    # the empty string: the API refuses it (out must be a path); the command line takes it as '.'
    c("teach --out ''", "teach --task coin_flip --teacher replay:text-davinci-002 --split test --out ''", "--out"),
    c("curate --out ''", "curate @W/run --out ''", "--out"),
    c("evaluate --out ''", "evaluate --model tiny-gpt2 --task coin_flip --method ft --limit 1 --max-new-tokens 1 "
      "--out ''",
      "--out"),
    c("export dataset --to ''", "export dataset @W/data --to ''", "--to"),
    c("run --out ''", "run @W/cfg/zs1.yaml --out '' --plan", "--out"),
    c("data synth --out ''", "data synth coin_flip --n 2 --out ''", "--out . is a directory"),
    c("run CONFIG ''", "run ''", "no such experiment file"),
    c("--data-dir ''", "--data-dir '' data export coin_flip", "raw/coin_flip/coin_flip.json is missing"),
    c("--data-dir a file", "--data-dir @W/afile.txt data export coin_flip", "afile.txt/raw/coin_flip",
      "ftcot data download"),
    c("--data-dir an empty folder", "--data-dir @W/emptydir data export coin_flip", "emptydir/raw/coin_flip"),
    c("FTCOT_DATA a file", "data export coin_flip", "afile.txt/raw/coin_flip", FTCOT_DATA="@W/afile.txt"),
    # a file where a directory is expected, and the other way round
    c("teach --out a file", "teach --task coin_flip --teacher replay:text-davinci-002 --out @W/afile.txt",
      "--out @W/afile.txt is a file; give a directory path"),
    c("teach --task a directory", "teach --task @W/dir.jsonl --answer-type number --teacher hf:tiny-gpt2 --out @OUT",
      "dir.jsonl: cannot read (Is a directory)"),
    c("teach --task missing", "teach --task @W/nope.jsonl --answer-type number --teacher hf:tiny-gpt2 --out @OUT",
      "nope.jsonl: cannot read (No such file or directory)"),
    c("teach --task ''", "teach --task '' --teacher replay:text-davinci-002 --out @OUT", "Unknown task ''"),
    c("teach --teacher ''", "teach --task coin_flip --teacher '' --out @OUT", "Unknown teacher ''"),
    c("teach --teacher replay:missing file", "teach --task coin_flip --teacher replay:@W/nope.jsonl --out @OUT",
      "no such recorded teacher or file"),
    c("teach --teacher replay:empty folder", "teach --task coin_flip --teacher replay:@W/emptydir --out @OUT",
      "no .jsonl records in @W/emptydir"),
    c("teach --teacher hf:missing folder", "teach --task @W/coins2.jsonl --answer-type yes/no --split test "
      "--teacher hf:@W/nope --out @OUT", "@W/nope", "no such directory"),
    c("teacher-args prices= missing", f"{TO} prices=@W/nope.json", "nope.json: cannot read the price file"),
    c("teacher-args prices= a folder", f"{TO} prices=@W/emptydir", "emptydir: cannot read the price file"),
    c("curate SOURCE missing", "curate @W/nope --out @OUT", "no such teach run directory or JSONL file"),
    c("curate SOURCE an empty folder", "curate @W/emptydir --out @OUT", "no teach store (teach.sqlite) here"),
    c("curate SOURCE a DATA_DIR", "curate @W/data --out @OUT", "@W/data: no teach store"),
    c("train DATA_DIR missing", "train @W/nope --student tiny-gpt2 --out @OUT",
      "DATA_DIR '@W/nope' does not exist"),
    c("train DATA_DIR a file", "train @W/afile.txt --student tiny-gpt2 --out @OUT", "@W/afile.txt", "is a file"),
    c("train DATA_DIR an empty folder", "train @W/emptydir --student tiny-gpt2 --out @OUT", "curation.json: missing"),
    c("train DATA_DIR a teach run", "train @W/run --student tiny-gpt2 --out @OUT", "@W/run/curation.json: missing"),
    c("train --out a file", "train @W/data --student tiny-gpt2 --out @W/afile.txt", "is a file; give a directory path"),
    c("evaluate --model a teach run", "evaluate --model @W/run --task coin_flip --out @OUT",
      "'@W/run' is not a finished 'ftcot train' output"),
    c("evaluate --model an empty folder", "evaluate --model @W/emptydir --task coin_flip --out @OUT",
      "@W/emptydir/best/student.json: missing"),
    c("evaluate --out a file", "evaluate --model tiny-gpt2 --task coin_flip --method ft --out @W/afile.txt",
      "is a file; give a directory path"),
    c("evaluate --task a missing CSV", "evaluate --model tiny-gpt2 --task @W/nope.csv --answer-type number "
      "--method ft --out @OUT", "nope.csv: cannot read"),
    c("run CONFIG a folder", "run @W/emptydir --out @OUT", "@W/emptydir: no such experiment file"),
    c("run --out the config file", "run @W/cfg/zs1.yaml --out @W/cfg/zs1.yaml", "zs1.yaml", "is a file"),
    c("export model CKPT_DIR missing", "export model @W/nope --to @OUT", "@W/nope: no such CKPT_DIR"),
    c("export model CKPT_DIR a DATA_DIR", "export model @W/data --to @OUT", "is not a finished 'ftcot train' output"),
    c("export dataset DATA_DIR missing", "export dataset @W/nope --to @OUT", "@W/nope: no such DATA_DIR"),
    c("export dataset --to a file", "export dataset @W/data --to @W/afile.txt", "is a file; give a directory path"),
    c("diagnose a missing folder", "diagnose @W/nope", "@W/nope: no predictions.jsonl here"),
    c("diagnose a file", "diagnose @W/afile.txt", "@W/afile.txt: no predictions.jsonl here"),
    c("score FILE a folder", "score @W/emptydir --task coin_flip", "@W/emptydir: cannot read (Is a directory)"),
    c("data synth --out a folder", "data synth coin_flip --n 2 --out @W/emptydir", "is a directory; give a file path"),
    c("teach report a missing run", "teach report @W/nope", "no teach store (teach.sqlite) here"),
    c("teach export --out a folder", "teach export @W/run --out @W/emptydir", "is a directory; give a file path"),
    c("import logs: a missing log", "teach import-zero-shot-cot-logs @W/nope.log --out @OUT",
      "cannot tell task and method from the name"),
    # an output that is, or lies inside, an input (the data root here is coin flip's copy)
    c("teach --out the data root", "--data-dir @MINI teach --task coin_flip --teacher replay:text-davinci-002 "
      "--out @MINI", "--out @MINI is the input @MINI"),
    c("teach --out its task file", "teach --task @W/mytask.jsonl --answer-type number --split all --teacher "
      "hf:tiny-gpt2 --out @W/mytask.jsonl", "is the input @W/mytask.jsonl"),
    c("teach --out a folder holding its task file", "teach --task @W/mytask.jsonl --answer-type number --split all "
      "--teacher hf:tiny-gpt2 --out @W", "--out @W contains the input @W/mytask.jsonl"),
    c("curate --out a folder holding its JSONL", "curate @W/files/rec-bom.jsonl --task coin_flip --out @W/files",
      "contains the input @W/files/rec-bom.jsonl"),
    c("train --out the data root", "train @W/data --student tiny-gpt2 --out @MINI", "--out @MINI is the input @MINI",
      FTCOT_DATA="@MINI"),
    c("train --out a folder holding DATA_DIR", "train @W/data --student tiny-gpt2 --out @W",
      "contains the input @W/data"),
    c("train --out inside DATA_DIR", "train @W/data --student tiny-gpt2 --out @W/data/ckpt", "lies inside the input"),
    c("evaluate --out the data root", "--data-dir @MINI evaluate --model tiny-gpt2 --task coin_flip --method ft "
      "--out @MINI", "--out @MINI is the input @MINI"),
    c("export dataset --to its DATA_DIR", "export dataset @W/data --to @W/data", "lies inside the input @W/data"),
    c("export dataset --to inside DATA_DIR", "export dataset @W/data --to @W/data/hub", "lies inside the input"),
    c("export dataset --to a folder holding DATA_DIR", "export dataset @W/data --to @W", "contains the input @W/data"),
    c("curate --out inside the data root", "--data-dir @MINI curate @W/run --out @MINI/data",
      "--out @MINI/data lies inside the input @MINI"),
    c("data synth --out the data root", "--data-dir @MINI data synth coin_flip --n 2 --out @MINI",
      "is a directory; give a file path"),
    c("run --archive its --out", "run @W/cfg/zs1.yaml --out @OUT --archive @OUT", "--archive @OUT is the input @OUT"),
    c("run --archive inside its --out", "run @W/cfg/zs1.yaml --out @OUT --archive @OUT/archive", "lies inside"),
    c("run --archive holding its --out", "run @W/cfg/zs1.yaml --out @OUT/inner --archive @OUT", "contains the input"),
    c("run --archive a file", "run @W/cfg/zs1.yaml --out @OUT --archive @W/afile.txt", "is a file"),
    c("run --out the data root", "run @W/cfg/zs1.yaml --out @OWN --data-dir @OWN", "--out", "@OWN", own="mini"),
    c("run --out inside the data root", "run @W/cfg/zs1.yaml --out @OWN/runs/x --data-dir @OWN", "--out", own="mini"),
    c("run --archive the data root", "run @W/cfg/zs1.yaml --out @OUT --archive @OWN --data-dir @OWN", "--archive",
      own="mini"),
    c("run --out a folder holding a task file", "run @CFG --out @OWN", "contains the input @OWN/mytask.jsonl",
      own="tasks", config="tasks: [{spec: '@OWN/mytask.jsonl', answer_type: number}]\nmethods: [zs]\n"
                          "students: [tiny-gpt2]\nteacher_row: false\nevaluate: {limit: 1, max_new_tokens: 2}\n"),
]

FILES = [
    # your own task file
    c("task file empty", "data export @W/files/empty.jsonl --answer-type number", "empty.jsonl: no samples"),
    c("task file binary", "data export @W/files/binary.jsonl --answer-type number", "binary.jsonl:1"),
    c("task file UTF-16", "data export @W/files/utf16.jsonl --answer-type number", "utf16.jsonl:1: not UTF-8 text"),
    c("task file truncated JSON (teach)", "teach --task @W/files/trunc.jsonl --answer-type number --teacher "
      "hf:tiny-gpt2 --out @OUT", "trunc.jsonl:2: not valid JSON"),
    c("task file line a list", "data export @W/files/list-line.jsonl --answer-type number",
      "list-line.jsonl:2: expected a JSON object, got list"),
    c("task file line null", "data export @W/files/null-line.jsonl --answer-type number", "null-line.jsonl:2"),
    c("task file with a BOM", "data export @W/files/bom.jsonl --answer-type number", '"question": "1 + 1?"', ok=True),
    c("task file with a BOM (teach)", "teach --task @W/files/bom.jsonl --answer-type number --split all --teacher "
      "openai:x --teacher-args base_url=http://127.0.0.1:9/v1 --dry-run --out @OUT", "2 questions", ok=True),
    c("task CSV without 'answer' (teach)", "teach --task @W/files/no-answer.csv --answer-type number --teacher "
      "hf:tiny-gpt2 --out @OUT", "no-answer.csv:1: the header has no column 'answer'"),
    c("task CSV empty (evaluate)", "evaluate --model tiny-gpt2 --task @W/files/no-header.csv --answer-type number "
      "--method ft --out @OUT", "no-header.csv:1: the header has no column 'question'"),
    c("task duplicate question, other answer (teach)", "teach --task @W/files/dup.jsonl --answer-type number --split "
      "all --teacher hf:tiny-gpt2 --out @OUT", "dup.jsonl:2: the question of", "('2' there, '3' here)"),
    c("task CSV duplicate question, other answer (evaluate)", "evaluate --model tiny-gpt2 --task @W/files/dup.csv "
      "--answer-type number --method ft --out @OUT", "dup.csv:3: the question of", "dup.csv:2 again"),
    c("task answer NaN", "data export @W/files/nan.jsonl --answer-type number", "nan.jsonl:1: field 'answer' is nan"),
    c("task answer -Infinity", "data export @W/files/inf.jsonl --answer-type number", "inf.jsonl:1: field 'answer'"),
    c("task answer 'nan' as text", "data export @W/files/answer-nan-text.jsonl --answer-type number",
      "field 'answer' is 'nan', not a number"),
    c("task answer a list", "data export @W/files/answer-list.jsonl --answer-type number",
      "field 'answer' must be non-empty text, got [2]"),
    c("task answer given twice", "data export @W/files/answer-twice.jsonl --answer-type number", "answer-twice.jsonl:1",
      "answer"),
    c("task question a number", "data export @W/files/number-question.jsonl --answer-type number",
      "field 'question' must be non-empty text, got 5"),
    c("task question blank", "data export @W/files/blank-question.jsonl --answer-type number",
      "field 'question' must be non-empty text"),
    c("task split a number", "data export @W/files/split-number.jsonl --answer-type number", "field 'split'", "got 1"),
    c("task file one huge line (4 MB)", "data export @W/files/huge-line.jsonl --answer-type number", '"answer": "2"',
      ok=True),
    c("task file named a:x:b.jsonl", "data export @W/files/a:x:b.jsonl --answer-type number", "a:x:b.jsonl: no samples"),
    c("score FILE named nope:smile:.jsonl", "score @W/files/nope:smile:.jsonl --task coin_flip",
      "nope:smile:.jsonl: cannot read"),
    # teacher records to curate
    c("records empty", "curate @W/files/empty.jsonl --task coin_flip --out @OUT", "empty.jsonl", "no records"),
    c("records binary", "curate @W/files/rec-binary.jsonl --task coin_flip --out @OUT",
      "rec-binary.jsonl:1: not UTF-8 text"),
    c("records truncated JSON", "curate @W/files/rec-trunc.jsonl --task coin_flip --out @OUT",
      "rec-trunc.jsonl:2: not valid JSON"),
    c("records with a BOM", "curate @W/files/rec-bom.jsonl --task coin_flip --out @OUT", "wrote", ok=True),
    c("records: a rationale null", "curate @W/files/rec-null-rationale.jsonl --task coin_flip --out @OUT",
      "no rationale", ok=True),
    c("records: a 1 MB rationale", "curate @W/files/rec-huge-rationale.jsonl --task coin_flip --out @OUT", "wrote",
      ok=True),
    c("records: answer_completion a number", "curate @W/files/rec-int-completion.jsonl --task coin_flip --out @OUT",
      "rec-int-completion.jsonl:4", "answer_completion"),
    c("records: sample_index as text", "curate @W/files/rec-text-index.jsonl --task coin_flip --out @OUT",
      "rec-text-index.jsonl:4", "sample_index"),
    c("records: sample_index true", "curate @W/files/rec-bool-index.jsonl --task coin_flip --out @OUT",
      "rec-bool-index.jsonl:4", "sample_index"),
    c("records: a task file instead", "curate @W/mytask.jsonl --task coin_flip --out @OUT",
      "mytask.jsonl:1: missing field 'sample_index'"),
    # a DATA_DIR, damaged
    c("DATA_DIR train.jsonl empty", "train @W/dd-empty --student tiny-gpt2 --out @OUT",
      "dd-empty/train.jsonl: no examples"),
    c("DATA_DIR train.jsonl bad line", "train @W/dd-bad-line --student tiny-gpt2 --out @OUT",
      "dd-bad-line/train.jsonl:1: missing field 'question'"),
    c("DATA_DIR curation.json cut", "train @W/dd-cut-curation --student tiny-gpt2 --out @OUT",
      "dd-cut-curation/curation.json: truncated or unreadable", "rerun 'ftcot curate'"),
    c("DATA_DIR val.jsonl binary", "train @W/dd-binary-val --student tiny-gpt2 --out @OUT",
      "dd-binary-val/val.jsonl:1: not UTF-8 text"),
    c("DATA_DIR no curation.json", "train @W/dd-no-curation --student tiny-gpt2 --out @OUT",
      "dd-no-curation/curation.json: missing"),
    c("DATA_DIR row without completion", "train @W/dd-no-completion --student tiny-gpt2 --out @OUT",
      "dd-no-completion/train.jsonl:1: missing field 'completion'"),
    c("DATA_DIR train.jsonl BOM (export)", "export dataset @W/dd-bom --to @OUT", "4 train, 2 validation rows", ok=True),
    c("DATA_DIR empty (export)", "export dataset @W/dd-empty --to @OUT", "no training rows; nothing to export"),
    c("DATA_DIR curation.json cut (export)", "export dataset @W/dd-cut-curation --to @OUT", "truncated or unreadable"),
    # a price table, a decontamination set
    c("prices truncated JSON", f"{TO} prices=@W/files/prices-trunc.json", "prices-trunc.json: not valid JSON"),
    c("prices negative", f"{TO} prices=@W/files/prices-negative.json", "must be non-negative numbers"),
    c("prices NaN", f"{TO} prices=@W/files/prices-nan.json", "prices-nan.json: price of 'x'"),
    c("prices a list", f"{TO} prices=@W/files/prices-list.json", "expected a JSON object mapping model names"),
    c("prices text for a number", f"{TO} prices=@W/files/prices-text.json", "prices-text.json: price of 'x'"),
    c("prices empty", f"{TO} prices=@W/afile.txt", "afile.txt: not valid JSON"),
    c("prices infinite", "teach --task coin_flip --teacher openai:x --dry-run --out @OUT --teacher-args "
      "base_url=http://127.0.0.1:9/v1,prices=@W/files/prices-inf.json", "prices-inf.json: price of 'x'"),
    c("prices binary", "teach --task coin_flip --teacher openai:x --dry-run --out @OUT --teacher-args "
      "base_url=http://127.0.0.1:9/v1,prices=@W/files/binary.json", "binary.json"),
    c("decontaminate against= an empty .txt", f"{CUR} --decontaminate warn,against=@W/afile.txt",
      "against=@W/afile.txt", "'question' column"),
    c("decontaminate against= CSV without question", f"{CUR} --decontaminate warn,against=@W/files/no-question.csv",
      "no-question.csv: row 1 has no 'question' text"),
    c("decontaminate against= JSONL without question", f"{CUR} --decontaminate warn,against=@W/files/no-question.jsonl",
      "no-question.jsonl: row 1 has no 'question' text"),
    c("decontaminate against= a folder", f"{CUR} --decontaminate warn,against=@W/emptydir", "against=@W/emptydir"),
    c("decontaminate against= with a BOM", f"{CUR} --decontaminate warn,against=@W/files/bom.jsonl", "wrote", ok=True),
    # the experiment file itself
    c("config empty", "run @W/cfg/empty.yaml --plan --out @OUT", "empty.yaml: expected a mapping of settings"),
    c("config binary", "run @W/cfg/binary.yaml --plan --out @OUT", "binary.yaml: not UTF-8 text"),
    c("config UTF-16", "run @W/cfg/utf16.yaml --plan --out @OUT", "utf16.yaml: not UTF-8 text"),
    c("config with a BOM", "run @W/cfg/bom.yaml --plan --out @OUT", "Nothing was run", ok=True),
    c("config with tabs", "run @W/cfg/tabs.yaml --plan --out @OUT", "tabs.yaml line 2: not valid YAML"),
    c("config a list", "run @W/cfg/list.yaml --plan --out @OUT", "list.yaml: expected a mapping"),
    c("config two documents", "run @W/cfg/two-documents.yaml --plan --out @OUT", "two-documents.yaml line 5",
      "not valid YAML"),
    c("config an unknown alias", "run @W/cfg/unknown-alias.yaml --plan --out @OUT", "unknown-alias.yaml line 5",
      "undefined alias"),
    c("config seeds [.nan]", "run @W/cfg/seeds-nan.yaml --plan --out @OUT", "seeds[0]", "(got nan)"),
    c("config evaluate.limit .inf", "run @W/cfg/limit-inf.yaml --plan --out @OUT", "evaluate.limit", "(got inf)"),
    c("config evaluate.device gpu", "run @W/cfg/evaluate-device.yaml --out @OUT", "evaluate.device", "'gpu'"),
]

CLI_CASES = NUMBERS + CHOICES + PATHS + FILES


@dataclass(frozen=True)
class Where:
    case_dir: Path
    cwd: Path
    out: Path
    own: Path


def _prepare(case: Case, work: Path, data_root: Path, cases_root: Path) -> tuple[list[str], dict[str, str], Where]:
    case_dir = cases_root / hashlib.sha256(case.id.encode()).hexdigest()[:12]
    where = Where(case_dir, case_dir / "cwd", case_dir / "out", case_dir / "own")
    where.cwd.mkdir(parents=True)
    if case.own == "mini":
        shutil.copytree(work / "mini", where.own)
    elif case.own == "tasks":
        where.own.mkdir()
        shutil.copy(work / "mytask.jsonl", where.own)

    def fill(text: str) -> str:
        for name, value in (("@OUT", where.out), ("@OWN", where.own), ("@MINI", work / "mini"),
                            ("@DATA", data_root), ("@CFG", case_dir / "exp.yaml"), ("@W", work)):
            text = text.replace(name, str(value))
        return text

    if case.config is not None:
        (case_dir / "exp.yaml").write_text(fill(case.config))
    env = _env(**{"FTCOT_DATA": str(data_root), **{k: fill(v) for k, v in case.env}})
    return [fill(a) for a in shlex.split(case.args)], env, where


@pytest.fixture(scope="module")
def cli_results(request, work, data_root, tmp_path_factory) -> dict[str, tuple[subprocess.CompletedProcess, Where]]:
    """Every selected case of the command-line table, run four at a time (each is a Python start-up, ~1 s)."""
    selected = [item.callspec.params["case"] for item in request.session.items
                if getattr(item, "originalname", "") == "test_the_command_line_keeps_the_contract"
                and hasattr(item, "callspec")]
    cases_root = tmp_path_factory.mktemp("cases")

    def run(case: Case) -> tuple[str, tuple[subprocess.CompletedProcess, Where]]:
        args, env, where = _prepare(case, work, data_root, cases_root)
        result = subprocess.run(_ftcot(*args), capture_output=True, text=True, env=env, cwd=where.cwd, timeout=300)
        return case.id, (result, where)

    with ThreadPoolExecutor(4) as pool:
        return dict(pool.map(run, selected))


@pytest.mark.parametrize("case", CLI_CASES)
def test_the_command_line_keeps_the_contract(case, cli_results, work, data_root):
    result, where = cli_results[case.id]

    def fill(text: str) -> str:
        for name, value in (("@OUT", where.out), ("@OWN", where.own), ("@MINI", work / "mini"), ("@W", work)):
            text = text.replace(name, str(value))
        return text

    fragments = [fill(f) for f in case.fragments]
    if case.ok:
        assert result.returncode == 0, result.stderr[-3000:]
        assert "Traceback" not in result.stderr
        for fragment in fragments:
            assert fragment in result.stdout + result.stderr, result.stdout[-2000:]
    else:
        assert_one_line_error(result, *fragments)
        assert not where.out.exists(), f"{where.out} was created"
    assert sorted(p.name for p in where.cwd.iterdir()) == [], "written into the working directory"
    if case.own == "mini":
        assert _snapshot(where.own) == _snapshot(work / "mini"), "the data root was written to"
    elif case.own == "tasks":
        assert sorted(p.name for p in where.own.iterdir()) == ["mytask.jsonl"], "written beside the task file"


# ---- configs: real YAML files through ftcot.Experiment (the same load and checks as `ftcot run`) -----------------


BASE = "tasks: [coin_flip]\nmethods: [ft, ft_cot]\nstudents: [tiny-gpt2]\nteachers: [replay:text-davinci-002]\n"
LIVE = ("tasks: [coin_flip]\nmethods: [ft, ft_cot]\nstudents: [tiny-gpt2]\n"
        "teachers: [{spec: 'openai:x', base_url: 'http://127.0.0.1:9/v1'}]\n")
ZS = "tasks: [coin_flip]\nmethods: [zs]\nstudents: [tiny-gpt2]\nteacher_row: false\n"


def y(id: str, text: str, *fragments: str, xfail: str | None = None):
    marks = [pytest.mark.xfail(strict=True, reason=xfail)] if xfail else []
    return pytest.param(text, fragments, id=id, marks=marks)


def _with(base: str, line: str) -> str:
    """``base`` with one top-level key replaced by ``line`` (YAML would take a repeated key's last value)."""
    key = line.split(":", 1)[0]
    return "".join(l + "\n" for l in base.splitlines() if not l.startswith(key + ":")) + line + "\n"


CONFIGS = [
    # numbers
    y("train.epochs 2.5", BASE + "train: {epochs: 2.5}\n", "train.epochs", "fractional part"),
    y("train.batch_size 0", BASE + "train: {batch_size: 0}\n", "students[0] (tiny-gpt2)", "--batch-size"),
    y("train.weight_decay .inf", BASE + "train: {weight_decay: .inf}\n", "--weight-decay", "(got inf)"),
    y("train.dropout -0.5", BASE + "train: {dropout: -0.5}\n", "--dropout"),
    y("train.lr 'fast'", BASE + "train: {lr: fast}\n", "train.lr", "(got 'fast')"),
    y("train.epochs true", BASE + "train: {epochs: true}\n", "epochs", "(got True)"),
    y("train.seed -1", BASE + "train: {seed: -1}\n", "train.seed"),
    y("evaluate.batch_size .nan", BASE + "evaluate: {batch_size: .nan}\n", "evaluate.batch_size", "finite"),
    y("evaluate.max_new_tokens 2.5", BASE + "evaluate: {max_new_tokens: 2.5}\n", "evaluate.max_new_tokens"),
    y("evaluate.limit 'ten'", BASE + "evaluate: {limit: ten}\n", "evaluate.limit", "(got 'ten')"),
    y("evaluate.limit true", BASE + "evaluate: {limit: true}\n", "evaluate.limit"),
    y("diverse.temperature 0", LIVE + "diverse: {D: [2], temperature: 0}\n", "diverse.temperature", "greater than 0"),
    y("diverse.D [2.5]", LIVE + "diverse: {D: [2.5]}\n", "diverse.D[0]", "fractional part"),
    y("diverse.D [true]", LIVE + "diverse: {D: [true]}\n", "diverse.D[0]"),
    y("seeds [-1]", BASE + "seeds: [-1]\n", "--seed must be between 0 and 4294967295 (got -1)"),
    y("seeds [2.5]", BASE + "seeds: [2.5]\n", "seeds[0]", "fractional part"),
    y("seeds ['a']", BASE + "seeds: [a]\n", "seeds[0]", "(got 'a')"),
    y("seeds [2**40]", BASE + "seeds: [1099511627776]\n", "--seed must be between"),
    y("seeds [true]", BASE + "seeds: [true]\n", "seeds[0]"),
    y("train_sizes [0]", BASE + "train_sizes: [0]\n", "train_sizes[0]", "(got 0)"),
    y("train_sizes [2.5]", BASE + "train_sizes: [2.5]\n", "train_sizes[0]", "(got 2.5)"),
    y("train_sizes ['8']", BASE + "train_sizes: ['8']\n", "train_sizes[0]", "(got '8')"),
    y("train_sizes beyond the task", BASE + "train_sizes: [100000]\n", "'coin_flip' has 350"),
    y("teachers[0].max_tokens 1e20", "tasks: [coin_flip]\nmethods: [ft_cot]\nstudents: [tiny-gpt2]\n"
      "teachers: [{spec: 'openai:x', base_url: 'http://127.0.0.1:9/v1', max_tokens: 100000000000000000000}]\n",
      "teachers[0].max_tokens"),
    y("teachers[0].extra_body NaN", "tasks: [coin_flip]\nmethods: [ft_cot]\nstudents: [tiny-gpt2]\n"
      "teachers: [{spec: 'openai:x', base_url: 'http://127.0.0.1:9/v1', extra_body: {temperature: .nan}}]\n",
      "teachers[0].extra_body"),
    y("teachers[0].concurrency 0", "tasks: [coin_flip]\nmethods: [ft_cot]\nstudents: [tiny-gpt2]\n"
      "teachers: [{spec: 'openai:x', concurrency: 0}]\n", "teachers[0].concurrency"),
    y("teachers[0].rationalize -1", "tasks: [coin_flip]\nmethods: [ft_cot]\nstudents: [tiny-gpt2]\n"
      "teachers: [{spec: 'openai:x', rationalize: -1}]\n", "teachers[0].rationalize"),
    y("curate.val_fraction 1.0", BASE + "curate: {val_fraction: 1.0}\n", "curate.val_fraction", "less than 1"),
    y("curate.min_votes 0", BASE + "curate: {min_votes: 0}\n", "curate.min_votes"),
    y("curate.decontaminate_ngram 0", BASE + "curate: {decontaminate_ngram: 0}\n", "curate.decontaminate_ngram"),
    y("students[0].parameters -5", _with(BASE, "students: [{spec: tiny-gpt2, parameters: -5}]"),
      "students[0].parameters", "greater than 0"),
    y("executor.local_cpus 0", BASE + "executor: {kind: ray, local_cpus: 0}\n", "executor.local_cpus"),
    y("executor.retries -1", BASE + "executor: {kind: ray, retries: -1}\n", "executor.retries"),
    y("executor.retries 2.5", BASE + "executor: {kind: ray, retries: 2.5}\n", "executor.retries", "fractional"),
    y("executor.cpus.train 0", BASE + "executor: {kind: ray, cpus: {train: 0}}\n", "executor.cpus.train"),
    y("executor.cpus.train .nan", BASE + "executor: {kind: ray, cpus: {train: .nan}}\n", "executor.cpus.train",
      "finite"),
    y("executor.gpus.train -1", BASE + "executor: {kind: ray, gpus: {train: -1}}\n", "executor.gpus.train"),
    y("executor.gpus.train .inf", BASE + "executor: {kind: ray, gpus: {train: .inf}}\n", "executor.gpus.train"),
    # unknown keys and wrong types
    y("executor: ray (a string)", BASE + "executor: ray\n", "executor", "valid dictionary"),
    y("executor.kind slurm", BASE + "executor: {kind: slurm}\n", "executor.kind", "(got 'slurm')"),
    y("executor.cpus of an unknown stage", BASE + "executor: {kind: ray, cpus: {score: 1}}\n", "executor.cpus.score"),
    y("executor unknown key", BASE + "executor: {kind: ray, nodes: 2}\n", "executor.nodes: unknown key"),
    y("train unknown key", BASE + "train: {epoch: 3}\n", "train.epoch: unknown key", "Did you mean 'epochs'"),
    y("evaluate unknown key", BASE + "evaluate: {temperature: 0}\n", "evaluate.temperature: unknown key"),
    y("curate unknown key", BASE + "curate: {val_split: 0.1}\n", "curate.val_split: unknown key"),
    y("diverse unknown key", LIVE + "diverse: {D: [2], T: 0.7}\n", "diverse.T: unknown key"),
    y("tasks[0] unknown key", _with(BASE, "tasks: [{spec: coin_flip, split: test}]"), "tasks[0].split: unknown key"),
    y("teachers[0].samples (not a teacher key)", _with(LIVE, "teachers: [{spec: 'openai:x', samples: 2}]"),
      "teachers[0].samples: unknown key"),
    y("train a list", BASE + "train: []\n", "train", "valid dictionary"),
    y("evaluate null", BASE + "evaluate: null\n", "evaluate"),
    y("diverse a list", LIVE + "diverse: [2, 4]\n", "diverse", "valid dictionary"),
    y("tasks a string", _with(BASE, "tasks: coin_flip"), "tasks", "valid list"),
    y("students a mapping", _with(BASE, "students: {spec: tiny-gpt2}"), "students", "valid list"),
    y("methods a string", _with(BASE, "methods: ft"), "methods", "valid list"),
    y("seeds a number", BASE + "seeds: 0\n", "seeds", "valid list"),
    y("tasks[0] a number", _with(BASE, "tasks: [5]"), "tasks[0]"),
    y("tasks[0] null", _with(BASE, "tasks: [null]"), "tasks[0]"),
    y("methods in capitals", _with(BASE, "methods: [FT]"), "methods[0]", "(got 'FT')"),
    y("name a number", BASE + "name: 5\n", "name", "valid string"),
    y("teacher_row null", BASE + "teacher_row: null\n", "teacher_row"),
    y("split_scheme unknown", BASE + "split_scheme: paper\n", "split_scheme", "(got 'paper')"),
    y("launcher empty", BASE + "launcher: ''\n", "launcher: empty"),
    y("launcher unbalanced quote", BASE + "launcher: \"accelerate 'launch\"\n", "launcher: not a command line"),
    y("students[0] without spec", _with(BASE, "students: [{name: tiny}]"), "students[0].spec", "Field required"),
    y("students[0].spec empty", _with(BASE, "students: [{spec: '', name: e}]"), "--student must be a non-empty name"),
    y("train.device gpu", BASE + "train: {device: gpu}\n", "Unknown device 'gpu'"),
    y("a key twice", BASE + "methods: [zs]\n", "methods"),
    # repeated and empty axis values
    y("students[0].methods twice", _with(BASE, "students: [{spec: tiny-gpt2, methods: [ft, ft]}]"),
      "students[0].methods", "'ft' is listed twice"),
    y("students[0].seeds twice", _with(BASE, "students: [{spec: tiny-gpt2, seeds: [0, 0]}]"), "'0' is listed twice"),
    y("tasks[0].teachers twice", _with(BASE, "tasks: [{spec: coin_flip, teachers: [replay:text-davinci-002, "
                                             "replay:text-davinci-002]}]"), "tasks[0].teachers", "listed twice"),
    y("train_sizes all twice", BASE + "train_sizes: [all, all]\n", "'all' is listed twice"),
    y("curate.label gold twice", BASE + "curate: {label: [gold, gold]}\n", "curate.label", "listed twice"),
    y("tasks []", _with(BASE, "tasks: []"), "tasks", "at least 1 item"),
    y("methods []", _with(BASE, "methods: []"), "methods", "at least 1 item"),
    y("students []", _with(BASE, "students: []"), "students", "at least 1 item"),
    y("students[0].methods []", _with(BASE, "students: [{spec: tiny-gpt2, methods: []}]"), "students[0].methods"),
    y("tasks[0].teachers []", _with(BASE, "tasks: [{spec: coin_flip, teachers: []}]"), "tasks[0].teachers"),
    y("train_sizes []", BASE + "train_sizes: []\n", "train_sizes", "at least 1 item"),
    y("diverse.D []", LIVE + "diverse: {D: []}\n", "diverse.D"),
    y("curate.label []", BASE + "curate: {label: []}\n", "curate.label"),
    y("tasks[0].seeds_by_size all: []", _with(BASE, "tasks: [{spec: coin_flip, seeds_by_size: {all: []}}]"),
      "seeds_by_size"),
    y("diverse.per_task names no task", LIVE + "diverse: {D: [2], per_task: {coinflip: [4]}}\n",
      "diverse.per_task", "coinflip"),
    # tasks, teachers, students
    y("tasks: a file with a question twice, other answers", "tasks: [{spec: '@W/files/dup.jsonl', answer_type: "
      "number}]\nmethods: [zs]\nstudents: [tiny-gpt2]\nteacher_row: false\n", "dup.jsonl:2: the question of"),
    y("tasks: a truncated task file", "tasks: [{spec: '@W/files/trunc.jsonl', answer_type: number}]\nmethods: [zs]\n"
      "students: [tiny-gpt2]\nteacher_row: false\n", "trunc.jsonl:2: not valid JSON"),
    y("tasks: a folder named .jsonl", "tasks: [{spec: '@W/dir.jsonl', answer_type: number}]\n" + ZS.split("\n", 1)[1],
      "tasks[0]", "dir.jsonl"),
    y("tasks[0].answer_type unknown", "tasks: [{spec: '@W/mytask.jsonl', answer_type: integer}]\n"
      + ZS.split("\n", 1)[1], "tasks[0]", "answer_type"),
    y("tasks in capitals", _with(BASE, "tasks: [COIN_FLIP]"), "tasks[0]", "Unknown task 'COIN_FLIP'"),
    y("teachers: an unknown spec", _with(BASE, "teachers: ['gpt4:turbo']"), "Unknown teacher 'gpt4:turbo'"),
    y("teachers: openai: without a model", _with(BASE, "teachers: ['openai:']"), "Unknown teacher 'openai:'"),
    y("teachers: hf: without a path", _with(BASE, "teachers: ['hf:']"), "Unknown teacher 'hf:'"),
    y("teachers: an empty spec", _with(BASE, "teachers: ['']"), "Unknown teacher ''"),
    y("teachers: replay of nothing", _with(BASE, "teachers: ['replay:nobody']"), "replay:nobody: no such recorded"),
    y("teachers: a spec that is a number", _with(BASE, "teachers: [{spec: 5}]"), "teachers[0].spec"),
    y("teachers: a replay that cannot sample", _with(BASE, "teachers: [{spec: 'replay:text-davinci-002', "
                                                            "until_correct: 1, max_samples: 4}]"), "cannot sample"),
    y("teachers: the same server twice", _with(LIVE, "teachers: [{spec: 'openai:x', base_url: "
                                                     "['http://127.0.0.1:9/v1', 'http://127.0.0.1:9/v1/']}]"),
      "a base URL is given twice"),
    y("teachers: base_url []", _with(LIVE, "teachers: [{spec: 'openai:x', base_url: []}]"), "base_url"),
    y("teachers: workers with batch", _with(LIVE, "teachers: [{spec: 'openai:x', base_url: 'http://127.0.0.1:9/v1', "
                                                  "workers: 2, batch: true}]"), "batch does not combine with workers"),
]


@pytest.mark.parametrize(("text", "fragments"), CONFIGS)
def test_a_config_is_refused_in_one_line_naming_the_key(text, fragments, work, data_root, tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(text.replace("@W", str(work)), encoding="utf-8")
    with pytest.raises(FtcotError) as caught:
        ftcot.Experiment(path, out=tmp_path / "out", data_dir=data_root).plan()
    message = str(caught.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    assert not (tmp_path / "out").exists()


# ---- the Python API ---------------------------------------------------------------------------------------------


def a(id: str, call, *fragments: str, xfail: str | None = None):
    marks = [pytest.mark.xfail(strict=True, reason=xfail)] if xfail else []
    return pytest.param(call, fragments, id=id, marks=marks)


EXPERIMENT = {"tasks": ["coin_flip"], "methods": ["zs"], "students": ["tiny-gpt2"], "teacher_row": False}

API = [
    a("train lr as text", lambda w, d, o: ftcot.train(w / "data", o, student="tiny-gpt2", lr="0.001"),
      "--lr must be a number (got '0.001')"),
    a("train batch_size 2.5", lambda w, d, o: ftcot.train(w / "data", o, student="tiny-gpt2", batch_size=2.5),
      "--batch-size must be a whole number"),
    a("train seed -1", lambda w, d, o: ftcot.train(w / "data", o, student="tiny-gpt2", seed=-1), "--seed"),
    a("train out inside DATA_DIR", lambda w, d, o: ftcot.train(w / "data", w / "data" / "ckpt", student="tiny-gpt2"),
      "lies inside the input"),
    a("train DATA_DIR ''", lambda w, d, o: ftcot.train("", o, student="tiny-gpt2"), "data_dir must be a path"),
    a("curate val_fraction inf", lambda w, d, o: ftcot.curate(w / "run", o, val_fraction=math.inf, data_dir=d),
      "val_fraction", "(got inf)"),
    a("curate train_size 2.5", lambda w, d, o: ftcot.curate(w / "run", o, train_size=2.5, data_dir=d), "train_size"),
    a("curate decontaminate_against a string", lambda w, d, o: ftcot.curate(
        w / "run", o, decontaminate_against="x.jsonl", data_dir=d), "decontaminate_against", "valid list"),
    a("curate source ''", lambda w, d, o: ftcot.curate("", o, data_dir=d), "source must be a path"),
    a("curate out the data root", lambda w, d, o: ftcot.curate(w / "run", w / "mini", data_dir=w / "mini"),
      "is the input"),
    a("curate val_seed true", lambda w, d, o: ftcot.curate(w / "run", o, val_seed=True, data_dir=d), "val_seed"),
    a("teach out ''", lambda w, d, o: ftcot.teach("coin_flip", "replay:text-davinci-002", "", data_dir=d),
      "out must be a path"),
    a("teach questions of text", lambda w, d, o: ftcot.teach("coin_flip", "replay:text-davinci-002", o,
                                                             questions=["a"], data_dir=d), "questions"),
    a("teach questions [-1]", lambda w, d, o: ftcot.teach("coin_flip", "replay:text-davinci-002", o, questions=[-1],
                                                          data_dir=d), "questions -1: not in coin_flip's train split"),
    a("teach questions []", lambda w, d, o: ftcot.teach("coin_flip", "replay:text-davinci-002", o, questions=[],
                                                        data_dir=d), "questions"),
    a("teach samples 1e30", lambda w, d, o: ftcot.teach("coin_flip", "openai:x", o, samples=10**30, temperature=0.7,
                                                        base_url="http://127.0.0.1:9/v1", dry_run=True, data_dir=d),
      "samples", "(got 1000000000000000000000000000000)"),
    a("evaluate batch_size nan", lambda w, d, o: ftcot.evaluate("tiny-gpt2", "coin_flip", o, method="ft",
                                                                batch_size=math.nan, data_dir=d), "batch_size"),
    a("evaluate out the data root", lambda w, d, o: ftcot.evaluate("tiny-gpt2", "coin_flip", w / "mini", method="ft",
                                                                   data_dir=w / "mini"), "is the input"),
    a("evaluate limit true", lambda w, d, o: ftcot.evaluate("tiny-gpt2", "coin_flip", o, method="ft", limit=True,
                                                            max_new_tokens=1, data_dir=d), "limit"),
    a("evaluate device mps", lambda w, d, o: ftcot.evaluate("tiny-gpt2", "coin_flip", o, method="ft", device="mps",
                                                            limit=1, max_new_tokens=1, data_dir=d), "mps"),
    a("Experiment data_dir a number", lambda w, d, o: ftcot.Experiment(EXPERIMENT, out=o, data_dir=5),
      "data_dir must be a path"),
    a("Experiment config bytes", lambda w, d, o: ftcot.Experiment(b"tasks: [coin_flip]"), "got bytes"),
    a("Experiment name ''", lambda w, d, o: ftcot.Experiment({**EXPERIMENT, "name": ""}, data_dir=d), "name"),
    a("Experiment name ../../x", lambda w, d, o: ftcot.Experiment({**EXPERIMENT, "name": "../../x"}, data_dir=d),
      "name"),
    a("Experiment name /abs", lambda w, d, o: ftcot.Experiment({**EXPERIMENT, "name": str(o)}, data_dir=d), "name"),
]


@pytest.mark.parametrize(("call", "fragments"), API)
def test_the_api_raises_one_line_and_writes_nothing(call, fragments, work, data_root, tmp_path):
    out = tmp_path / "out"
    before = _snapshot(work / "mini")
    with pytest.raises(FtcotError) as caught:
        call(work, data_root, out)
    message = str(caught.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    assert not out.exists()
    assert _snapshot(work / "mini") == before


# ---- reading a run back, and the fix an error line gives -----------------------------------------------------------


def test_a_teach_report_against_another_task_is_refused(work, data_root):
    result = subprocess.run(_ftcot("teach", "report", work / "run", "--task", "multiarith"), capture_output=True,
                            text=True, env=_env(FTCOT_DATA=str(data_root)), timeout=120)
    assert_one_line_error(result, "another task")


def test_a_huge_max_new_tokens_is_one_line_and_its_fix_then_runs(data_root, tmp_path):
    out = tmp_path / "eval"
    with pytest.raises(FtcotError) as caught:
        ftcot.evaluate("tiny-gpt2", "coin_flip", out, method="ft", max_new_tokens=10**11, limit=1, data_dir=data_root)
    assert "100000000000 new tokens exceed tiny-gpt2's 2048 positions" in str(caught.value)
    assert "lower max_new_tokens" in str(caught.value) and "\n" not in str(caught.value)
    fixed = ftcot.evaluate("tiny-gpt2", "coin_flip", out, method="ft", max_new_tokens=4, limit=1, data_dir=data_root)
    assert fixed.n == 1


# ---- servers: `ftcot teach` against a real OpenAI-compatible stub that fails, and against nothing -----------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _teach_args(work: Path, base_url: str, out: Path) -> list[str]:
    return _ftcot("teach", "--task", work / "coins2.jsonl", "--answer-type", "yes/no", "--split", "test", "--teacher",
                  "openai:stub", "--teacher-args", f"base_url={base_url}", "--teacher-args",
                  "api_key_env=FTCOT_HOSTILE_KEY", "--out", out)


OUTAGES = {  # the stub's outage, and what the one line says
    401: ("HTTP 401", "check the API key"),
    "garbage": ("answered 200 with something that is not JSON",),
    500: ("gave up after 7 attempts", "HTTP 500"),
    "nothing listens": ("gave up after 7 attempts", "connection failed"),
}
SLOW = (500, "nothing listens")  # retried 7 times with back-off: ~10-30 s each, so started together, early


@pytest.fixture(scope="module")
def server_runs(request, work, tmp_path_factory):
    """Start every selected outage's teach run at once (in the background); a test collects its own."""
    wanted = [item.callspec.params["outage"] for item in request.session.items
              if getattr(item, "originalname", "") == "test_a_teach_run_against_a_failing_server_exits_2"
              and hasattr(item, "callspec")]
    root = tmp_path_factory.mktemp("servers")
    started = {}
    for outage in sorted(set(wanted), key=lambda o: o not in SLOW):
        stub = None if outage == "nothing listens" else StubOpenAI(outage=outage, echo=True)
        base = stub.base_url if stub else f"http://127.0.0.1:{_free_port()}/v1"
        base += f"?token={TOKEN}"  # a credential in the URL: sent, never shown
        out = root / str(outage)
        process = subprocess.Popen(_teach_args(work, base, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True, env=_env(FTCOT_HOSTILE_KEY=KEY))
        started[outage] = (process, stub, out)
    yield started
    for process, stub, _ in started.values():
        if process.poll() is None:
            process.kill()
        process.communicate()
        if stub:
            stub.close()


@pytest.fixture(scope="module", autouse=True)
def _start_slow_runs_first(request):
    """The slow outages retry in the background while the other tests run."""
    if any(getattr(item, "originalname", "") == "test_a_teach_run_against_a_failing_server_exits_2"
           for item in request.session.items):
        request.getfixturevalue("server_runs")


@pytest.mark.parametrize("outage", list(OUTAGES))
def test_a_teach_run_against_a_failing_server_exits_2(outage, server_runs):
    process, stub, out = server_runs[outage]
    stdout, stderr = process.communicate(timeout=240)
    result = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    line = assert_error_line(result, "0/2 chains complete", *OUTAGES[outage])
    assert "fix the cause and rerun" in line or "check the API key" in line
    if outage == 401:
        assert stub.count() == 2  # refused credentials are not retried
    for secret in (KEY, TOKEN):  # the stub echoes the URL and the Authorization header into its errors
        assert secret not in stdout + stderr
        for path in out.rglob("*"):
            assert not path.is_file() or secret.encode() not in path.read_bytes(), f"{secret} in {path.name}"


# ---- the file system: read-only and full disks (a real tmpfs) -------------------------------------------------------


@pytest.mark.parametrize(("args", "fragment"), [
    (["teach", "--task", "coin_flip", "--teacher", "replay:text-davinci-002", "--out", "{ro}/run"],
     "{ro}/run: cannot create the run directory (Read-only file system)"),
    (["run", "{w}/cfg/zs1.yaml", "--out", "{ro}/exp"], "--out {ro}/exp: not writable"),
    (["run", "{w}/cfg/zs1.yaml", "--out", "{tmp}/exp", "--archive", "{ro}/archive"],
     "--archive {ro}/archive: not writable"),
    (["export", "dataset", "{w}/data", "--to", "{ro}/hub"], "--to {ro}/hub: not writable"),
    (["teach", "export", "{w}/run", "--out", "{ro}/x.jsonl"], "--out {ro}/x.jsonl: not writable"),
    (["data", "synth", "coin_flip", "--n", "3", "--out", "{ro}/s.jsonl"], "--out {ro}/s.jsonl: not writable"),
    (["score", str(TEACHER_DIR / "zs_cot" / "coin_flip.jsonl"), "--task", "coin_flip", "--details", "{ro}/d.jsonl"],
     "{ro}/d.jsonl"),
], ids=["teach", "run --out", "run --archive", "export dataset", "teach export", "data synth", "score --details"])
def test_a_read_only_output_is_one_line(args, fragment, read_only_dir, work, data_root, tmp_path):
    spots = {"ro": read_only_dir, "w": work, "tmp": tmp_path}
    result = subprocess.run(_ftcot(*[x.format(**spots) for x in args]), capture_output=True, text=True,
                            env=_env(FTCOT_DATA=str(data_root)), timeout=300)
    assert_one_line_error(result, fragment.format(**spots))
    assert not (tmp_path / "exp").exists()  # --archive is checked before the run starts


@pytest.mark.parametrize("command", ["teach export", "data synth"])
def test_a_full_disk_keeps_the_older_file(command, small_disk, work, data_root):
    disk = small_disk(64)
    target = disk / "out.jsonl"
    target.write_text("the older file\n")
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    (disk / "filler").write_bytes(b"\0" * (free - 8 * 1024))
    args = ["teach", "export", work / "run"] if command == "teach export" else ["data", "synth", "coin_flip", "--n",
                                                                                  "2000"]
    result = subprocess.run(_ftcot(*args, "--out", target), capture_output=True, text=True,
                            env=_env(FTCOT_DATA=str(data_root)), timeout=300)
    assert_one_line_error(result, f"--out {target}: the disk is full", "free some space")
    assert target.read_text() == "the older file\n"
    assert sorted(p.name for p in disk.iterdir()) == ["filler", "out.jsonl"]  # no temporary left


def test_a_full_disk_under_an_export_leaves_no_half_dataset(small_disk, work):
    disk = small_disk(16)
    result = subprocess.run(_ftcot("export", "dataset", work / "data", "--to", disk / "hub"), capture_output=True,
                            text=True, env=_env(), timeout=300)
    assert_one_line_error(result, f"--to {disk / 'hub'}: the disk is full")
    assert list(disk.iterdir()) == []


def test_a_run_on_a_full_disk_exits_2_in_one_error_line(small_disk, work, data_root):
    disk = small_disk(24)
    result = subprocess.run(_ftcot("run", work / "cfg" / "zs1.yaml", "--out", disk / "exp"), capture_output=True,
                            text=True, env=_env(FTCOT_DATA=str(data_root)), timeout=300)
    assert_error_line(result, "the disk is full", "free some space")


# ---- the environment ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("env", [{"PYTHONIOENCODING": "ascii"}, {"COLUMNS": "5"}, {"COLUMNS": "abc"},
                                 {"TERM": "dumb", "NO_COLOR": "1"}],
                         ids=["ascii stderr", "5 columns", "COLUMNS=abc", "dumb terminal"])
def test_an_odd_terminal_still_gets_one_line(env, tmp_path, data_root):
    # The message holds a non-ASCII '…' and is longer than any of these terminals is wide.
    result = subprocess.run(_ftcot("teach", "--task", "coin_flip", "--teacher", "openai:x", "--teacher-args",
                                   "base_url=ftp://x", "--out", tmp_path / "run"), capture_output=True, text=True,
                            env={**_env(FTCOT_DATA=str(data_root)), **env}, timeout=120)
    assert_one_line_error(result, "the base URL must be http(s)://host/", "not 'ftp://x'")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("command", [["data", "export", "coin_flip", "--split", "test"],
                                     ["data", "synth", "coin_flip", "--n", "3"]], ids=["data export", "data synth"])
def test_a_closed_stdout_is_one_line(command, data_root):
    result = subprocess.run(_ftcot(*command), stderr=subprocess.PIPE, text=True, env=_env(FTCOT_DATA=str(data_root)),
                            preexec_fn=lambda: os.close(1), timeout=120)
    assert result.returncode == 2 and result.stderr.count("\n") == 1  # stdout is not captured: it is closed
    assert result.stderr.startswith("error: standard output is closed") and "Traceback" not in result.stderr


def test_a_yaml_alias_bomb_is_refused_quickly(tmp_path, data_root):
    anchors = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"] + [
        f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 7)]
    config = tmp_path / "bomb.yaml"
    config.write_text("tasks: [coin_flip]\nmethods: [ft_cot]\nstudents: [tiny-gpt2]\n"
                      "teachers: [{spec: 'openai:x', base_url: 'http://127.0.0.1:9/v1', extra_body: {"
                      + ", ".join(anchors) + "}}]\n")
    started = time.monotonic()
    try:
        result = subprocess.run(_ftcot("run", config, "--plan", "--out", tmp_path / "out"), capture_output=True,
                                text=True, env=_env(FTCOT_DATA=str(data_root)), timeout=8)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still planning after {time.monotonic() - started:.0f} s")
    assert_one_line_error(result, "extra_body")


# ---- what the earlier cases must not have changed -----------------------------------------------------------------


def test_zz_no_case_changed_an_input(work, untouched):
    assert _snapshot(work) == untouched
