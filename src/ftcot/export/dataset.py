"""``ftcot export dataset DATA_DIR --to DIR``: a DATA_DIR's rows in the formats other trainers read.

DIR layout (one Hugging Face dataset repository, loadable with
``datasets.load_dataset(DIR[, CONFIG])`` or pushed as is)::

    README.md                        dataset card: YAML metadata (license, configs, ftcot provenance) and prose
    data/{train,validation}.parquet  config "default": every field of a training row (prompt, completion,
                                     question, rationale, answer, task, sample_index, sample_number, teacher_record)
    prompt_completion/{split}.jsonl  {"prompt", "completion"} (TRL's prompt-completion format), and
    prompt_completion/{split}.parquet  the same rows as config "prompt_completion"
    messages/{split}.jsonl           {"messages": [user, assistant]} (chat fine-tuning), and
    messages/{split}.parquet           the same rows as config "messages"
    curation.json                    the DATA_DIR's curation summary, as ftcot wrote it

Every config is Parquet because ``datasets`` reads all configs of a directory
with one file format (a JSONL config next to a Parquet one fails to load); the
JSONL files are for tools that take JSONL (``load_dataset("json", data_files=…)``).
Rows are exported as ``ftcot train`` reads them: the completion keeps its
leading space and has no end-of-sequence token (trainers add their own).
An empty validation file (``--val-fraction 0``) gives no validation split.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from ftcot.curate.dataset import TrainingExample, chat_record, read_examples
from ftcot.errors import FtcotError
from ftcot.export.common import CURATION_FILE, DataProvenance, check_output_dir, read_provenance, write_atomically
from ftcot.jsonl import write_jsonl
from ftcot.templates import TEMPLATES

SPLITS = {"train": "train.jsonl", "validation": "val.jsonl"}  # exported split -> DATA_DIR file
CONFIGS = ("default", "prompt_completion", "messages")


@dataclass(frozen=True)
class DatasetExport:
    to: Path
    rows: dict[str, int]  # split -> rows
    files: list[str]  # relative to ``to``


def export_dataset(data_dir: str | Path, to: str | Path, *, force: bool = False) -> DatasetExport:
    """Write DATA_DIR's training rows to ``to`` as Parquet, prompt/completion JSONL and chat JSONL, with a card."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FtcotError(f"{data_dir}: no such DATA_DIR; give a directory written by 'ftcot curate'.")
    provenance = read_provenance(data_dir)
    splits = {name: read_examples(data_dir / file) for name, file in SPLITS.items()}
    if not splits["train"]:
        raise FtcotError(f"{data_dir / SPLITS['train']}: no training rows; nothing to export (rerun 'ftcot curate').")
    splits = {name: rows for name, rows in splits.items() if rows}
    target = check_output_dir(Path(to), [data_dir], force)

    files: list[str] = []

    def fill(tmp: Path) -> None:
        for split, rows in splits.items():
            files.append(_write_parquet(tmp, f"data/{split}.parquet", [asdict(e) for e in rows], _row_schema()))
            for config, records in (("prompt_completion", [{"prompt": e.prompt, "completion": e.completion}
                                                           for e in rows]),
                                    ("messages", [chat_record(e) for e in rows])):
                files.append(_write_jsonl(tmp, f"{config}/{split}.jsonl", records))
                files.append(_write_parquet(tmp, f"{config}/{split}.parquet", records))
        shutil.copyfile(data_dir / CURATION_FILE, tmp / CURATION_FILE)
        (tmp / "README.md").write_text(dataset_card(provenance, {s: len(r) for s, r in splits.items()}),
                                       encoding="utf-8")
        files.extend([CURATION_FILE, "README.md"])

    write_atomically(target, fill)
    return DatasetExport(target, {split: len(rows) for split, rows in splits.items()}, sorted(files))


def _write_jsonl(root: Path, name: str, rows: list[dict[str, Any]]) -> str:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        write_jsonl(rows, handle)
    return name


def _row_schema() -> Any:
    import pyarrow as pa

    # Declared, not inferred: a column that is null in every row (teacher_record of answer-only data)
    # would otherwise get the null type, which some readers refuse.
    # (TrainingExample's annotations are strings: `from __future__ import annotations`.)
    return pa.schema([(f.name, pa.int64() if f.type in (int, "int") else pa.bool_() if f.type in (bool, "bool")
                       else pa.string()) for f in fields(TrainingExample)])


def _write_parquet(root: Path, name: str, rows: list[dict[str, Any]], schema: Any = None) -> str:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(rows, schema=schema)
    pq.write_table(table, path)
    return name


# ---- the dataset card ---------------------------------------------------------------------------------------
def _size_category(n: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return label
    return "n>1M"


def card_metadata(provenance: DataProvenance, counts: dict[str, int]) -> dict[str, Any]:
    """The card's YAML header: what the Hub and ``datasets`` read (configs), plus ftcot's provenance."""
    license_ = provenance.license
    meta: dict[str, Any] = {"license": license_.card_id}
    if license_.card_id == "other":
        meta["license_name"] = license_.name
    meta.update(
        language=["en"],
        pretty_name=f"Fine-tune-CoT data: {provenance.task} ({provenance.template}"
                    + (f", teacher {provenance.teacher['teacher']}" if provenance.teacher else "") + ")",
        task_categories=["text-generation"],
        tags=["fine-tune-cot", "chain-of-thought", "reasoning", "distillation", "ftcot"],
        size_categories=[_size_category(sum(counts.values()))],
        configs=[
            {"config_name": "default", "default": True,
             "data_files": [{"split": s, "path": f"data/{s}.parquet"} for s in counts]},
            *({"config_name": config, "data_files": [{"split": s, "path": f"{config}/{s}.parquet"} for s in counts]}
              for config in ("prompt_completion", "messages")),
        ],
        ftcot=provenance_record(provenance, counts),
    )
    return meta


def provenance_record(provenance: DataProvenance, counts: dict[str, int]) -> dict[str, Any]:
    """Teacher, template, filters, counts and split provenance as one plain mapping (card YAML, model card)."""
    c = provenance.curation
    template = TEMPLATES.get(provenance.template)
    return {
        "task": provenance.task,
        "source_license": provenance.license.name,
        "source_files": list(provenance.license.sources),
        "teacher": provenance.teacher,
        "teacher_source": provenance.teacher_source,
        "template": provenance.template,
        "student_prompt": template.decoder.prompt if template and template.decoder else None,
        "student_completion": template.decoder.completion if template and template.decoder else None,
        "answer_prefix": template.answer_prefix if template else None,
        "filters": {"correct_answers_only": bool(template and template.uses_rationale),
                    "max_per_question": c.get("max_per_question"),
                    "max_rationale_tokens": c.get("max_rationale_tokens"),
                    "dropped": c.get("dropped", {})},
        "counts": {"train_questions": c.get("train_questions"),
                   "questions_with_examples": c.get("questions_with_examples"),
                   "kept": c.get("kept"), **{f"{split}_rows": n for split, n in counts.items()}},
        "splits": {"split_scheme": c.get("split_scheme"), "train_size": c.get("train_size"),
                   "subset_seed": c.get("subset_seed"), "val_fraction": c.get("val_fraction"),
                   "val_seed": c.get("seed"), "val_questions": len(c.get("val_questions", []))},
    }


def teacher_prompt(teacher: dict[str, Any] | None) -> str | None:
    """The teacher's first prompt with a ``{question}`` placeholder, as the teach engine builds it."""
    if not teacher or "task" not in teacher:
        return None
    from ftcot.teach.plan import Plan, TeachSettings

    try:
        return Plan(TeachSettings.from_json(teacher)).first_prompt("{question}")
    except (FtcotError, TypeError):
        return None


def dataset_card(provenance: DataProvenance, counts: dict[str, int]) -> str:
    import yaml

    meta = card_metadata(provenance, counts)
    record = meta["ftcot"]
    c = provenance.curation
    teacher = provenance.teacher
    lines = [
        "---", yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=1000).rstrip(), "---", "",
        f"# {meta['pretty_name']}", "",
        f"Training data for a student model, made with ftcot (Fine-tune-CoT, Ho et al., "
        f"ACL 2023): a teacher answered the training questions of **{provenance.task}** and its "
        + ("correct rationales were kept and laid out for the student." if record["filters"]["correct_answers_only"]
           else "gold answers were laid out for the student (no rationales)."), "",
        "## Loading", "",
        "```python",
        "from datasets import load_dataset",
        "rows = load_dataset(\"PATH_OR_REPO\")                       # every field (Parquet)",
        "pc = load_dataset(\"PATH_OR_REPO\", \"prompt_completion\")  # {prompt, completion}",
        "chat = load_dataset(\"PATH_OR_REPO\", \"messages\")         # {messages: [user, assistant]}",
        "```", "",
        "| config | files | fields |", "|---|---|---|",
        "| default | `data/{split}.parquet` | prompt, completion, question, rationale, answer, task, sample_index, "
        "sample_number, teacher_record |",
        "| prompt_completion | `prompt_completion/{split}.parquet`, and the same rows as `.jsonl` | "
        "prompt, completion |",
        "| messages | `messages/{split}.parquet`, and the same rows as `.jsonl` | messages (user: prompt; assistant: "
        "completion without its leading space) |", "",
        "The completion keeps its leading space and carries no end-of-sequence token: append your tokenizer's "
        "EOS when training, as ftcot does.", "",
        "## Provenance", "",
        "| | |", "|---|---|",
        f"| benchmark | {provenance.task} (license: {provenance.license.name}) |",
        f"| source files | {', '.join(provenance.license.sources) or 'a user task file'} |",
    ]
    if teacher:
        lines += [
            f"| teacher | `{teacher.get('teacher', 'unknown')}` |",
            f"| teacher method | {teacher.get('method', 'zs_cot')} (temperature {teacher.get('temperature', 0.0)}, "
            f"{teacher.get('samples', 1)} rationale(s) per question, up to {teacher.get('max_tokens', '?')} tokens) |",
        ]
        prompt = teacher_prompt(teacher)
        if prompt:
            lines.append(f"| teacher prompt | `{_inline(prompt)}` then the answer trigger "
                         f"`{_inline(teacher.get('trigger', ''))}` |")
    elif provenance.teacher_source or record["filters"]["correct_answers_only"]:
        why = "; ".join(provenance.notes) or "curation.json names no teacher run"
        lines.append(f"| teacher | unknown ({why}) |")
    else:
        lines.append("| teacher | none: gold answers only |")
    lines += [
        f"| student template | {provenance.template}: prompt `{_inline(record['student_prompt'] or '')}`, "
        f"completion `{_inline(record['student_completion'] or '')}`"
        + (f", answer after `{record['answer_prefix']}`" if record["answer_prefix"] else "") + " |",
        "", "## Filters and counts", "",
        "| | |", "|---|---|",
        f"| training questions | {c.get('train_questions')} |",
        f"| questions with an example | {c.get('questions_with_examples')} |",
        f"| rows kept | {c.get('kept')} |",
    ]
    lines += [f"| dropped: {reason} | {n} |" for reason, n in (c.get("dropped") or {}).items()]
    if c.get("max_per_question") is not None:
        lines.append(f"| at most per question | {c['max_per_question']} |")
    if c.get("max_rationale_tokens") is not None:
        lines.append(f"| longest rationale kept | {c['max_rationale_tokens']} tokens |")
    lines += [f"| {split} rows | {n} |" for split, n in counts.items()]
    lines += [
        "", "## Splits", "",
        f"Only questions of the benchmark's *training* split (`{c.get('split_scheme', 'default')}` scheme) are here; "
        "test questions never are."
        + (f" A seeded subset of {c['train_size']} training questions (seed {c.get('subset_seed')})."
           if c.get("train_size") else "")
        + f" The validation split is a seeded slice ({c.get('val_fraction')} of the questions with examples, seed "
          f"{c.get('seed')}): {len(c.get('val_questions', []))} questions, all of whose rows are in it, none in train.",
        "", "## License", "",
        f"The questions and gold answers are under the benchmark's terms: **{provenance.license.name}**."
        + (" The rationales were written by the teacher model; their use may also be subject to the terms of the "
           "teacher's provider." if teacher else ""),
        "",
    ]
    return "\n".join(lines)


def _inline(text: str) -> str:
    """Text shown inside a table cell's code span: newlines as \\n, no backticks or pipes to break it."""
    return json.dumps(text)[1:-1].replace("`", "'").replace("|", "\\|")
