"""``ftcot teach``: run a teacher on a task, resumably, and export or report what it produced.

``ftcot teach --task KEY --teacher SPEC --out RUN_DIR`` runs the teacher;
``ftcot teach export|report RUN_DIR`` read the run back;
``ftcot teach import-zero-shot-cot-logs`` turns Kojima et al.'s public logs
into the shared teacher format. RUN_DIR holds ``teach.sqlite`` (the store),
``run.json`` (the settings and summary of the last run; never an API key) and
``report.json``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console

from ftcot.api_replies import public_url, redact
from ftcot.cli.options import DataDir
from ftcot.data_root import resolve_data_root
from ftcot.errors import FtcotError

app = typer.Typer(
    help="Run a teacher on a task (Zero-shot-CoT, zero-shot or Few-shot-CoT), resumably, within a budget.",
    invoke_without_command=True,
    no_args_is_help=True,
)

_stderr = Console(stderr=True, highlight=False, soft_wrap=True)
_stdout = Console(highlight=False, soft_wrap=True)


@app.callback(invoke_without_command=True)
def teach_command(
    ctx: typer.Context,
    task: Annotated[Optional[str], typer.Option(help="Task key (e.g. multiarith), or your own .jsonl/.csv task")] = None,
    teacher: Annotated[Optional[str], typer.Option(help="openai:MODEL, hf:MODEL_OR_PATH, gemma-270m, replay:NAME_OR_PATH")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Run directory: the store lives here; rerun to resume or top up")] = None,
    split: Annotated[str, typer.Option(help="train, test or all (only train becomes training data)")] = "train",
    method: Annotated[str, typer.Option(help="zs_cot (two-stage Zero-shot-CoT), zs, fs_cot, or ft_cot (a Fine-tune-CoT student as the teacher: its own prompt)")] = "zs_cot",
    samples: Annotated[int, typer.Option(help="Rationales per question, D (zs_cot; needs --temperature > 0 when > 1)")] = 1,
    temperature: Annotated[float, typer.Option(help="Stage-1 sampling temperature (paper: 0.7 for diverse reasoning)")] = 0.0,
    max_tokens: Annotated[Optional[int], typer.Option(help="Max tokens of the rationale / completion (default 128; zs 32)")] = None,
    concurrency: Annotated[int, typer.Option(help="Requests in flight at most")] = 16,
    max_cost: Annotated[Optional[float], typer.Option(help="Stop sending before this many USD would be spent (this run)")] = None,
    prices: Annotated[Optional[Path], typer.Option(help="JSON price table overriding the built-in one (USD per 1M tokens)")] = None,
    base_url: Annotated[Optional[list[str]], typer.Option(
        help="OpenAI-compatible endpoint (openai: teachers), e.g. http://127.0.0.1:8080/v1; once per server to "
             "spread the requests over several (least loaded first; a server that dies hands its requests on)")] = None,
    server_concurrency: Annotated[Optional[int], typer.Option(
        help="Requests in flight at most per server (several --base-url; llama.cpp serves one at a time)")] = None,
    system_prompt: Annotated[Optional[str], typer.Option(help="System message first in every request (--chat)")] = None,
    rationale: Annotated[str, typer.Option(
        help="Reasoning models: the exported rationale is the visible answer, the reasoning, or both "
             "(answer|reasoning|both); changing it sends no request")] = "answer",
    api_key_env: Annotated[Optional[str], typer.Option(help="Environment variable holding the API key (default OPENAI_API_KEY)")] = None,
    chat: Annotated[bool, typer.Option(help="Use /chat/completions instead of /completions")] = False,
    extra_body: Annotated[Optional[str], typer.Option(
        help='JSON merged into every request (openai: teachers), e.g. \'{"repeat_penalty": 1.0}\' for greedy llama.cpp')] = None,
    dry_run: Annotated[bool, typer.Option(help="Count requests, tokens and cost; send nothing")] = False,
    batch: Annotated[bool, typer.Option(
        help="Send the requests through the provider's Batch API (openai: teachers): half price, results within "
             "24 h; a killed run resumes polling its batches")] = False,
    poll_interval: Annotated[float, typer.Option(help="Seconds between batch status checks (--batch)")] = 30.0,
    answer_type: Annotated[Optional[str], typer.Option(help="For your own task: number, letter, yes/no, text")] = None,
    until_correct: Annotated[Optional[int], typer.Option(
        help="Adaptive sampling: sample each question in rounds until it has K correct rationales (or "
             "--max-samples); instead of --samples")] = None,
    max_samples: Annotated[Optional[int], typer.Option(help="Adaptive sampling: at most M rationales a question")
    ] = None,
    rationalize: Annotated[bool, typer.Option(
        help="Then ask again, with the gold answer as a hint, about training questions left without a correct "
             "rationale (STaR); stored in RUN_DIR/rationalize/")] = False,
    rationalize_samples: Annotated[int, typer.Option(help="Hinted rationales per question (--rationalize)")] = 1,
    data_dir: DataDir = None,
) -> None:
    """Ask the teacher for every missing completion of TASK's split and store each one as it arrives."""
    if ctx.invoked_subcommand is not None:
        return
    for name, value in (("--task", task), ("--teacher", teacher), ("--out", out)):
        if value is None:
            raise FtcotError(f"ftcot teach needs {name} (see 'ftcot teach --help').")
    assert task is not None and teacher is not None and out is not None

    from ftcot.tasks import load_task
    from ftcot.teach.backends import make_teacher, require_credentials, teacher_secrets
    from ftcot.teach.engine import resolve_settings, teach
    from ftcot.teach.pricing import PriceTable
    from ftcot.teach.report import report_from_store
    from ftcot.teach.store import STORE_FILE, TeachStore

    data_root = resolve_data_root(data_dir)
    loaded = load_task(task, data_root, answer_type)
    price_table = PriceTable.load(prices)
    options = {"extra_body": _json_object(extra_body, "--extra-body")} if extra_body else {}
    options.update({k: v for k, v in (("server_concurrency", server_concurrency), ("system", system_prompt))
                    if v is not None})
    base_url = _one_or_many(base_url)
    backend = make_teacher(teacher, base_url=base_url, api_key_env=api_key_env, chat=chat, data_root=data_root,
                           **options)
    secrets = teacher_secrets(teacher, api_key_env, base_url)
    if not dry_run:  # a dry run sends nothing and needs no key
        require_credentials(backend)
    # Validate before touching RUN_DIR: a bad flag must not leave an empty run behind.
    settings, _ = resolve_settings(loaded, split, backend, method, samples, temperature, max_tokens,
                                   concurrency=concurrency, max_cost=max_cost, prices=price_table,
                                   rationale=rationale)
    if batch:
        from ftcot.errors import check_float
        from ftcot.teach.batch import batch_teacher

        batch_teacher(backend)  # an hf: or replay: teacher has no Batch API: one line, before RUN_DIR exists
        check_float("--poll-interval", poll_interval, 0, low_open=True)
    elif not dry_run:
        from ftcot.teach.batch import refuse_open_batches

        refuse_open_batches(out)  # their requests are paid for: collect them, do not send them again

    adaptive = until_correct is not None or max_samples is not None
    if adaptive and batch:
        flag = "--until-correct" if until_correct is not None else "--max-samples"
        raise FtcotError(f"--batch does not combine with {flag}: a batch sends everything at once, adaptive "
                         f"sampling needs each round's answers first; drop one of them.")
    if adaptive:
        samples = _adaptive_options(until_correct, max_samples, samples, temperature)
    if adaptive and not dry_run:
        return _adaptive_run(loaded, split, teacher, out, settings, lambda: make_teacher(
            teacher, base_url=base_url, api_key_env=api_key_env, chat=chat, data_root=data_root, **options),
            until_correct, max_samples, temperature, max_tokens, concurrency, max_cost, price_table, secrets,
            rationalize, rationalize_samples, rationale, {"teacher_spec": teacher,
                                               "base_url": _public_base_url(base_url),
                                               "chat": chat, "concurrency": concurrency, "max_cost": max_cost})
    if dry_run:
        store = TeachStore.open_readonly(out) if (out / STORE_FILE).is_file() else None
    else:
        store = TeachStore.open(out)
        store.lock_for_writing()
    try:
        if batch:
            from ftcot.teach.batch import teach_batch

            summary = teach_batch(loaded, split, backend, method, samples, temperature, max_tokens, max_cost, store,
                                  progress=True, prices=price_table, dry_run=dry_run, secrets=secrets,
                                  console=_stderr, api_key_env=api_key_env, poll_interval_s=poll_interval,
                                  rationale=rationale)
        else:
            summary = teach(loaded, split, backend, method, samples, temperature, max_tokens, concurrency,
                            max_cost, store, progress=True, prices=price_table, dry_run=dry_run, secrets=secrets,
                            console=_stderr, rationale=rationale)
        if not dry_run:
            assert store is not None
            record = {
                "settings": {k: v for k, v in settings.to_json().items() if k != "exemplars"},
                "teacher_spec": teacher,
                "base_url": _public_base_url(base_url),
                "api_key_env": api_key_env if teacher.startswith("openai:") else None,
                "chat": chat,
                "concurrency": concurrency,
                "server_concurrency": server_concurrency,
                "system_prompt": system_prompt,
                "batch": batch,
                "max_cost": max_cost,
                "prices_file": str(prices) if prices else None,
                "finished": time.time(),
                "summary": summary.to_json(),
            }
            _write_json(out / "run.json", record, secrets)
            report = report_from_store(store, loaded.spec, price_table)
            _write_json(out / "report.json", report.to_json(), secrets)
    finally:
        if store is not None:
            store.close()
    for line in summary.lines():
        _stdout.print(line, markup=False)
    if not dry_run:
        _stdout.print(report.table())
    if summary.interrupted:
        # Exit as Ctrl-C does (130), now that everything that was in flight is stored. SystemExit,
        # not KeyboardInterrupt: click (8.5) turns the latter into a return value of 130 that is lost.
        raise SystemExit(130)
    if summary.failed and (summary.new == 0 or summary.credentials_refused):
        # Nothing this run asked for came back (a server down, a wrong key, a wrong URL): a script
        # must not go on to curate as if it had. A partly failed run exits 0; its rerun fills the gaps.
        raise FtcotError(summary.failure_line())
    if adaptive:
        _stdout.print(f"(a dry run prices the most adaptive sampling could send: {max_samples} samples a question)",
                      markup=False)
    if rationalize and not dry_run:
        _rationalize_run(loaded, out, lambda: make_teacher(
            teacher, base_url=base_url, api_key_env=api_key_env, chat=chat, data_root=data_root, **options),
            rationalize_samples, max_tokens, concurrency, max_cost, price_table, secrets)


def _adaptive_options(until_correct: int | None, max_samples: int | None, samples: int, temperature: float) -> int:
    """The checked --until-correct/--max-samples; the samples a dry run prices (the most it could send)."""
    from ftcot.teach.adaptive import check_options

    check_options(until_correct, max_samples, samples, temperature)
    assert max_samples is not None
    return max_samples


def _adaptive_run(loaded, split, teacher, out, settings, new_teacher, until_correct, max_samples, temperature,
                  max_tokens, concurrency, max_cost, price_table, secrets, rationalize, rationalize_samples,
                  rationale, logged) -> None:
    """``ftcot teach --until-correct K --max-samples M``: rounds of the engine (ftcot.teach.adaptive)."""
    from ftcot.teach.adaptive import adaptive_teach
    from ftcot.teach.report import report_from_store
    from ftcot.teach.store import TeachStore

    with TeachStore.open(out) as store:
        store.lock_for_writing()
        summary = adaptive_teach(loaded, split, new_teacher, store, until_correct=until_correct,
                                 max_samples=max_samples, temperature=temperature, max_tokens=max_tokens,
                                 concurrency=concurrency, max_cost=max_cost, prices=price_table, secrets=secrets,
                                 console=_stderr, progress=True, rationale=rationale)
        record = {"settings": {k: v for k, v in settings.to_json().items() if k != "exemplars"}, **logged,
                  "finished": time.time(), "adaptive": summary.to_json()}
        _write_json(out / "run.json", record, secrets)
        report = report_from_store(store, loaded.spec, price_table)
        _write_json(out / "report.json", report.to_json(), secrets)
    _stdout.print(summary.line(), markup=False)
    _stdout.print(report.table())
    if summary.interrupted:
        raise SystemExit(130)
    if summary.stopped and summary.samples_spent == 0:
        raise FtcotError(f"{out}: adaptive sampling got no rationale: {summary.stopped}")
    if rationalize:
        _rationalize_run(loaded, out, new_teacher, rationalize_samples, max_tokens, concurrency, max_cost,
                         price_table, secrets)


def _rationalize_run(loaded, out, new_teacher, samples, max_tokens, concurrency, max_cost, price_table,
                     secrets) -> None:
    """``--rationalize``: ask again, with the hint, about the training questions still without a correct rationale."""
    from ftcot.teach.rationalize import rationalize

    summary = rationalize(loaded, out, new_teacher, samples=samples, max_tokens=max_tokens, concurrency=concurrency,
                          max_cost=max_cost, prices=price_table, secrets=secrets, console=_stderr, progress=True)
    _stdout.print(summary.line(), markup=False)


@app.command("export")
def export_command(
    run_dir: Annotated[Path, typer.Argument(help="A run directory made by 'ftcot teach'")],
    out: Annotated[Optional[Path], typer.Option(help="JSONL file to write (default RUN_DIR/export.jsonl)")] = None,
    rationale: Annotated[Optional[str], typer.Option(
        help="Reasoning models: export the visible answer, the reasoning or both as the rationale "
             "(default: the run's --rationale)")] = None,
) -> None:
    """Write the run's complete chains as JSONL in the shared teacher format."""
    from ftcot.paths import check_output
    from ftcot.teach.export import export
    from ftcot.teach.store import TeachStore

    with TeachStore.open_readonly(run_dir) as store:
        # Every file of the run (the paid completion store above all) is an input; only an earlier export
        # may be replaced.
        target = out or run_dir / "export.jsonl"
        check_output(target, [p for p in run_dir.glob("*") if p.name != "export.jsonl"], kind="file")
        result = export(store, target, rationale=rationale)
    _stdout.print(f"wrote {result.written} records to {result.path}"
                  + (f" ({result.incomplete} incomplete chains left out; rerun the teach command to finish them)"
                     if result.incomplete else ""), markup=False)


@app.command("report")
def report_command(
    run_dir: Annotated[Path, typer.Argument(help="A run directory made by 'ftcot teach'")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object")] = False,
    split: Annotated[str, typer.Option(help="Report on train, test or all questions of the run")] = "all",
    prices: Annotated[Optional[Path], typer.Option(help="JSON price table (USD per 1M tokens)")] = None,
    task: Annotated[Optional[str], typer.Option(help="Your own task file, when the run was not on a built-in task")] = None,
    answer_type: Annotated[Optional[str], typer.Option(help="For your own task: number, letter, yes/no, text")] = None,
    data_dir: DataDir = None,
) -> None:
    """Teacher accuracy, yield, truncation and diversity of a run (readable while it runs)."""
    from ftcot.teach.pricing import PriceTable
    from ftcot.teach.report import report_from_store
    from ftcot.teach.store import TeachStore

    if split not in ("train", "test", "all"):
        raise FtcotError(f"Unknown split '{split}'. Valid: train, test, all.")
    spec = None
    if task:
        from ftcot.tasks import load_task

        spec = load_task(task, resolve_data_root(data_dir), answer_type).spec
    with TeachStore.open_readonly(run_dir) as store:
        report = report_from_store(store, spec, PriceTable.load(prices), split)
    if as_json:
        print(json.dumps(report.to_json()))
    else:
        _stdout.print(report.table())


@app.command("import-zero-shot-cot-logs")
def import_logs_command(
    logs: Annotated[list[Path], typer.Argument(help="Kojima et al.'s zero_shot_cot log files (one task and method)")],
    out: Annotated[Path, typer.Option(help="JSONL file to write in the shared teacher format")],
    task: Annotated[Optional[str], typer.Option(help="Task key (default: from the first file's name)")] = None,
    method: Annotated[Optional[str], typer.Option(help="zs_cot or zs (default: from the first file's name)")] = None,
    data_dir: DataDir = None,
) -> None:
    """Turn public Zero-shot-CoT logs into teacher records (replayable with replay:FILE)."""
    from ftcot.teach.import_logs import import_logs

    count = import_logs(logs, task, method, out, data_root=resolve_data_root(data_dir))
    _stdout.print(f"wrote {count} records to {out}", markup=False)


def _write_json(path: Path, value: Any, secrets: list[str]) -> None:
    text = redact(json.dumps(value, indent=2, ensure_ascii=False), secrets)
    temporary = path.with_name(path.name + ".tmp")
    try:
        temporary.write_text(text + "\n", encoding="utf-8")
        os.replace(temporary, path)  # a reader sees the old file or the new one, never half
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise FtcotError(f"{path}: cannot write ({exc.strerror}); the completions are stored: fix that and "
                         f"rerun the same command (it sends nothing already stored).") from None


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())


def _one_or_many(base_urls: list[str] | None) -> str | list[str] | None:
    """--base-url given once is one URL (as before); more than once, the servers of one teacher."""
    if not base_urls:
        return None
    return base_urls[0] if len(base_urls) == 1 else list(base_urls)


def _public_base_url(base_url: str | list[str] | None) -> str | list[str] | None:
    if base_url is None:
        return None
    return public_url(base_url) if isinstance(base_url, str) else [public_url(u) for u in base_url]


def _json_object(text: str, flag: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FtcotError(f"{flag}: not valid JSON ({exc.msg}); pass an object like '{{\"repeat_penalty\": 1.0}}'.") from None
    if not isinstance(value, dict):
        raise FtcotError(f"{flag}: expected a JSON object, got {type(value).__name__}.")
    return value
