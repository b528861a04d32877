"""The experiment report: one self-contained HTML file.

Everything lives in the file: images are ``data:`` URIs, the CSS is inline,
and there is no script, so the report opens offline, can be mailed or archived,
and shows the same in every browser. A Content-Security-Policy meta tag makes
that a promise the browser enforces: no request leaves the page and no script
runs, even if a model's output slipped a tag past the escaping.

All text that came from a user, a dataset or a model goes through
:func:`html.escape`; a rationale containing ``<script>`` shows as text.
Sections with no input are left out, so every field of :class:`ReportInputs`
is optional.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftcot.report.results import (INTERVALS_NOTE, PAIRED_NOTE, PairedRow, ResultRow, intervals_markdown,
                                  paired_markdown, precision_note, results_markdown, task_order, task_title)

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
PERCENT_KEYS = {"accuracy", "share_with_correct", "truncation_rate", "val_fraction"}
LONG_LIST = 8  # longer lists in a curation or teacher report are summarised, then listed behind <details>

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1200px;
       padding: 0 1rem; color: #1d1d1f; line-height: 1.45; }
h1 { margin-bottom: 0.2rem; } h2 { border-bottom: 2px solid #ddd; padding-bottom: 0.2rem; margin-top: 2.5rem; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 0.8rem; margin: 0.5rem 0 1rem; }
th, td { border: 1px solid #d0d0d0; padding: 0.2rem 0.4rem; vertical-align: top; }
th { background: #f3f3f3; text-align: left; }
table.results tbody th { white-space: nowrap; }  /* a row label on one line: it names the row */
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
figure { margin: 1rem 0 2rem; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.9rem; color: #555; }
.pair { display: grid; grid-template-columns: 1fr 1fr; gap: 1rem; }
.example { border: 1px solid #ccc; border-radius: 6px; padding: 0.6rem 0.8rem; margin-bottom: 0.8rem;
           font-size: 0.88rem; }
.right { border-left: 6px solid #2e9d4a; } .wrong { border-left: 6px solid #c8322d; }
.example h4 { margin: 0.6rem 0 0.2rem; font-size: 0.85rem; color: #444; }
.text { white-space: pre-wrap; margin: 0; font-family: ui-monospace, monospace; font-size: 0.82rem;
        background: #fafafa; padding: 0.3rem 0.4rem; }
.ok { color: #1f7a37; font-weight: 600; } .bad { color: #b02a25; font-weight: 600; }
.muted { color: #777; } h4.side { margin: 0.3rem 0 0.5rem; }
"""


@dataclass(frozen=True)
class ReportImage:
    """A PNG on disk and its caption; the PNG is inlined when the report is rendered."""

    caption: str
    path: Path


@dataclass
class ReportInputs:
    """What a report shows; each field left empty leaves its section out.

    - ``rows`` / ``teacher_rows``: tidy results (the table of :func:`results_markdown`).
    - ``images``: plots (from :mod:`ftcot.report.plots`), in order.
    - ``curation``: ``curation.json`` dicts, one per task × template.
    - ``teacher_reports``: teacher report JSON dicts (:meth:`TeacherReport.to_json`).
    - ``examples``: task key -> dicts with ``question``, ``answer``,
      ``teacher_rationale``, ``teacher_correct``, ``student_output``,
      ``student_prediction``, ``student_correct``; ``examples_per_side`` of
      the correct and of the wrong ones are shown side by side.
    - ``pairs``: paired tests of two methods on the same questions (:class:`PairedRow`).
    - ``lineage``: one dict per accuracy (``ftcot.experiment.results.lineage``):
      the cell's fields and the paths, relative to the experiment directory, of
      the files it came from (text, not links: the page is mailed and moved
      without them).
    - ``notes``, ``paper``, ``stage_times``, ``environment``: the notes under
      the table, the paper's reference rows, the time each kind of stage took,
      and where the report was written.
    """

    title: str = "Fine-tune-CoT report"
    subtitle: str = ""
    rows: Sequence[ResultRow] = ()
    teacher_rows: Sequence[ResultRow] = ()
    images: Sequence[ReportImage] = ()
    curation: Sequence[Mapping[str, Any]] = ()
    teacher_reports: Sequence[Mapping[str, Any]] = ()
    examples: Mapping[str, Sequence[Mapping[str, Any]]] = field(default_factory=dict)
    examples_per_side: int = 2
    lineage: Sequence[Mapping[str, Any]] = ()
    pairs: Sequence[PairedRow] = ()
    notes: Sequence[str] = ()  # what a reader must know to trust a row (results.md's list under the table)
    paper: str = ""  # the paper's numbers on these tasks, a markdown table (ftcot.report.paper)
    paper_heading: str = "The paper's numbers"
    stage_times: Sequence[tuple[str, int, float, float]] = ()  # kind, stages, seconds in all, the longest
    environment: Sequence[tuple[str, str]] = ()  # where the report was written: machine, versions, date


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def png_data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


_UNESCAPED_PIPE = re.compile(r"(?<!\\)\|")


def markdown_table_html(markdown: str) -> str:
    """An HTML table of the cells of a pipe table as :func:`results_markdown` writes it.

    Parsing the Markdown keeps the two tables cell-for-cell identical. A cell's
    own ``|`` is escaped there (``\\|``, :func:`markdown_cell`): only the other
    pipes separate cells, and the escape is undone here.
    """
    lines = [line.strip() for line in markdown.strip().splitlines()]

    def cells(line: str) -> list[str]:
        # The line starts and ends with a separating pipe: the pieces outside them are empty.
        return [cell.strip().replace("\\|", "|") for cell in _UNESCAPED_PIPE.split(line)[1:-1]]

    header, body = cells(lines[0]), [cells(line) for line in lines[2:]]
    out = ["<div class='scroll'><table class='results'><thead><tr>"]
    out += [f"<th>{esc(h)}</th>" for h in header]
    out.append("</tr></thead><tbody>")
    for row in body:
        out.append("<tr>" + f"<th>{esc(row[0])}</th>" + "".join(f"<td class='num'>{esc(c)}</td>" for c in row[1:])
                   + "</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def _value_html(key: str, value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return esc("–" if value is None else str(value).lower())
    if isinstance(value, float):
        return esc(f"{100 * value:.2f}%" if key in PERCENT_KEYS else f"{value:.4g}")
    if isinstance(value, Mapping):
        return "<br>".join(f"{esc(k)}: {_value_html(str(k), v)}" for k, v in value.items()) or "–"
    if isinstance(value, (list, tuple)):
        if any(isinstance(v, Mapping) for v in value):
            # Records (e.g. contamination pairs): one line each, "field: value", not a Python repr.
            lines = "<br>".join(", ".join(f"{esc(k)}: {esc(v)}" for k, v in item.items())
                                if isinstance(item, Mapping) else esc(item) for item in value)
        else:
            lines = esc(", ".join(str(v) for v in value))
        if len(value) <= LONG_LIST:
            return lines or "–"
        return f"<details><summary>{len(value)} items</summary>{lines}</details>"
    return esc(value)


def reports_table_html(reports: Sequence[Mapping[str, Any]], heading_keys: Sequence[str]) -> str:
    """Reports side by side: one column per report, one row per field (the union, in first-seen order; a field
    that is empty in every report is left out)."""
    keys = [k for k in dict.fromkeys(k for report in reports for k in report if k not in heading_keys)
            if any(report.get(k) not in (None, "", [], {}) for report in reports)]
    out = ["<div class='scroll'><table><thead><tr><th></th>"]
    for report in reports:
        parts = [task_title(str(report.get(k))) if k == "task" else str(report.get(k, "–")) for k in heading_keys]
        out.append("<th>" + "<br>".join(esc(p) for p in parts) + "</th>")
    out.append("</tr></thead><tbody>")
    for key in keys:
        out.append(f"<tr><th>{esc(key)}</th>" + "".join(
            f"<td class='num'>{_value_html(key, report[key]) if key in report else '–'}</td>" for report in reports)
            + "</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def _mark(correct: Any) -> str:
    if correct is None:
        return "<span class='muted'>not scored</span>"
    return "<span class='ok'>✓ correct</span>" if correct else "<span class='bad'>✗ wrong</span>"


def example_html(example: Mapping[str, Any]) -> str:
    kind = "right" if example.get("student_correct") else "wrong"
    return (f"<div class='example {kind}'>"
            f"<h4>Question</h4><p class='text'>{esc(example.get('question'))}</p>"
            f"<h4>Gold answer</h4><p class='text'>{esc(example.get('answer'))}</p>"
            f"<h4>Teacher rationale {_mark(example.get('teacher_correct'))}</h4>"
            f"<p class='text'>{esc(example.get('teacher_rationale'))}</p>"
            f"<h4>Student output {_mark(example.get('student_correct'))}</h4>"
            f"<p class='text'>{esc(example.get('student_output'))}</p>"
            f"<h4>Student prediction</h4><p class='text'>{esc(example.get('student_prediction'))}</p>"
            "</div>")


def examples_html(task: str, examples: Sequence[Mapping[str, Any]], per_side: int) -> str:
    right = [e for e in examples if e.get("student_correct")][:per_side]
    wrong = [e for e in examples if not e.get("student_correct")][:per_side]

    def column(title: str, chosen: list) -> str:
        body = "".join(example_html(e) for e in chosen) or "<p class='muted'>none</p>"
        return f"<div><h4 class='side'>{esc(title)} ({len(chosen)})</h4>{body}</div>"

    return (f"<section class='task-examples'><h3>{esc(task_title(task))}</h3><div class='pair'>"
            + column("Student correct", right) + column("Student wrong", wrong) + "</div></section>")


LINEAGE_LINKS = {"predictions": "predictions", "checkpoint": "checkpoint", "training_rows": "training rows",
                 "teacher_completions": "teacher completions"}


def lineage_html(entries: Sequence[Mapping[str, Any]]) -> str:
    """Each accuracy with the files it came from, as paths relative to the experiment directory: text, not links,
    so that the self-contained page points nowhere wrong once it is mailed or moved."""
    columns = ("task", "method", "student", "teacher", "D", "seed", "train_size", "n", "accuracy")
    out = ["<div class='scroll'><table><thead><tr>"
           + "".join(f"<th>{esc(c)}</th>" for c in columns) + "<th>came from</th></tr></thead><tbody>"]
    for entry in entries:
        cells = "".join(f"<td>{esc('–' if entry.get(c) in (None, '') else entry[c])}</td>" for c in columns)
        paths = "<br>".join(f"{esc(text)}: <code>{esc(entry[key])}</code>" for key, text in LINEAGE_LINKS.items()
                            if entry.get(key))
        out.append(f"<tr>{cells}<td>{paths or esc(entry.get('model', '–'))}</td></tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def run_html(stage_times: Sequence[tuple[str, int, float, float]], environment: Sequence[tuple[str, str]]) -> str:
    """How long each kind of stage took (its done.json's seconds) and where the report was written."""
    out = []
    if stage_times:
        out.append("<table><thead><tr><th>stage</th><th>finished</th><th>time in all</th><th>longest</th></tr>"
                   "</thead><tbody>")
        out += [f"<tr><th>{esc(kind)}</th><td class='num'>{count}</td><td class='num'>{_duration(total)}</td>"
                f"<td class='num'>{_duration(longest)}</td></tr>" for kind, count, total, longest in stage_times]
        out.append("</tbody></table>")
    if environment:
        out.append("<p class='muted'>Report written " + "; ".join(f"{esc(k)} {esc(v)}" for k, v in environment)
                   + ". A stage's time is where it ran, which may be another machine (or several, on Ray).</p>")
    return "".join(out)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.1f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def render_report(inputs: ReportInputs) -> str:
    parts = [
        "<!DOCTYPE html>",
        "<html lang='en'><head><meta charset='utf-8'>",
        f"<meta http-equiv='Content-Security-Policy' content=\"{CSP}\">",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>{esc(inputs.title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{esc(inputs.title)}</h1>",
    ]
    if inputs.subtitle:
        parts.append(f"<p class='muted'>{esc(inputs.subtitle)}</p>")
    if inputs.rows or inputs.teacher_rows:
        notes = inputs.notes or [precision_note(inputs.rows)]
        parts.append("<section id='results'><h2>Results</h2>"
                     "<p class='muted'>Test accuracy (%); mean ± 95% interval over seeds where there are several; "
                     "n per accuracy under Lineage.</p>"
                     + markdown_table_html(results_markdown(inputs.rows, inputs.teacher_rows))
                     + "".join(f"<p class='muted'>{esc(note)}</p>" for note in notes if note))
        if inputs.paper:
            parts.append(f"<h3>{esc(inputs.paper_heading)}</h3>" + markdown_table_html(inputs.paper))
        parts.append("</section>")
    if inputs.rows:
        parts.append(f"<section id='how-sure'><h2>How sure</h2><p class='muted'>{esc(INTERVALS_NOTE)}</p>"
                     + markdown_table_html(intervals_markdown(inputs.rows)))
        if inputs.pairs:
            parts.append(f"<p class='muted'>{esc(PAIRED_NOTE)}</p>" + markdown_table_html(paired_markdown(inputs.pairs)))
        parts.append("</section>")
    if inputs.images:
        parts.append("<section id='plots'><h2>Plots</h2>")
        parts += [f"<figure><img src='{png_data_uri(image.path)}' alt='{esc(image.caption)}'>"
                  f"<figcaption>{esc(image.caption)}</figcaption></figure>" for image in inputs.images]
        parts.append("</section>")
    if inputs.curation:
        parts.append("<section id='curation'><h2>Curation</h2>"
                     + reports_table_html(inputs.curation, ("task", "template")) + "</section>")
    if inputs.teacher_reports:
        parts.append("<section id='teacher'><h2>Teacher</h2><p class='muted'>Each teach stage's report covers every "
                     "question it asked: the training questions and, for the table's teacher row, the test ones; "
                     "the teacher row above is the test questions alone, so the two accuracies differ.</p>"
                     + reports_table_html(inputs.teacher_reports, ("task", "teacher", "method")) + "</section>")
    if inputs.examples:
        parts.append("<section id='examples'><h2>Examples</h2>")
        parts += [examples_html(task, inputs.examples[task], inputs.examples_per_side)
                  for task in task_order(inputs.examples)]
        parts.append("</section>")
    if inputs.lineage:
        parts.append("<section id='lineage'><h2>Lineage</h2><p class='muted'>Where each accuracy came from "
                     "(also <code>ftcot run --explain TASK METHOD</code>).</p>" + lineage_html(inputs.lineage)
                     + "</section>")
    if inputs.stage_times or inputs.environment:
        parts.append("<section id='run'><h2>Run</h2>" + run_html(inputs.stage_times, inputs.environment)
                     + "</section>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_report(inputs: ReportInputs, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report(inputs), encoding="utf-8")
    return path
