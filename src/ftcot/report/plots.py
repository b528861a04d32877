"""Plots of results and training runs: tidy rows in, one PNG out.

Every function writes one PNG and returns its path; a comparison plot returns
None when the axis it compares (D, student size, training-set size, teacher)
takes fewer than two values along every line of every task, since such a plot
shows no trend.
Accuracies are percent, as in :class:`ResultRow`; several seeds of the same
cell become their mean with a 95% t-interval (:func:`mean_interval`).

Figures are built with :class:`matplotlib.figure.Figure` (the Agg canvas, no
pyplot) under matplotlib's default style, at a fixed size per panel and DPI and
without the version stamp in the PNG metadata, so the same inputs give the same
bytes on every machine whatever its matplotlibrc says.
"""

from __future__ import annotations

import math
import textwrap
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import matplotlib.style
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.legend import Legend
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from ftcot.errors import FtcotError
from ftcot.report.results import (METHOD_NAMES, Cell, ResultRow, mean_interval, method_label, row_label,
                                  several_teachers, task_order, task_title)
from ftcot.tasks import BUILTIN_TASKS

DPI = 100
PANEL_SIZE = (4.4, 3.4)  # inches per subplot
PANEL_COLUMNS = 3
# The PNG "Software" key carries the matplotlib version; dropping it keeps files byte-stable.
PNG_METADATA = {"Software": None}
_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
            "#bcbd22", "#17becf"]
_RC = {"axes.grid": True, "grid.alpha": 0.3, "axes.titlesize": "medium", "legend.fontsize": "small"}
ACCURACY_LABEL = "Accuracy (%)"


def _cells(points: Iterable[tuple[tuple, float]]) -> dict[tuple, Cell]:
    """Key -> the mean and 95% interval of its accuracies (one per seed)."""
    groups: dict[tuple, list[float]] = defaultdict(list)
    for key, accuracy in points:
        groups[key].append(accuracy)
    return {key: mean_interval(values) for key, values in groups.items()}


def _colour_map(labels: Iterable[str]) -> dict[str, str]:
    # One colour per series across all panels of a figure, so a legend entry means the same everywhere; by the
    # sorted labels, so a series keeps its colour whatever order the result rows came in.
    return {label: _COLOURS[i % len(_COLOURS)] for i, label in enumerate(sorted(set(labels)))}


def _figure(panels: int, width: float | None = None, height: float | None = None) -> tuple[Figure, list[Axes]]:
    columns = min(PANEL_COLUMNS, panels)
    rows = math.ceil(panels / columns)
    figure = Figure(figsize=(width or PANEL_SIZE[0] * columns, height or PANEL_SIZE[1] * rows + 0.8),
                    dpi=DPI, layout="constrained")
    grid = figure.subplots(rows, columns, squeeze=False)
    axes = [ax for row in grid for ax in row]
    for ax in axes[panels:]:
        ax.set_visible(False)
    return figure, axes[:panels]


def _save(figure: Figure, path: Path, legend_columns: int = 3) -> Path:
    handles, labels = {}, []
    for ax in figure.axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if label not in handles:
                handles[label] = handle
                labels.append(label)
    # The Random baseline is a reference for everything else: last, wherever it was first drawn.
    labels.sort(key=lambda label: label == "Random")
    if labels:
        _fit_legend(figure, [handles[label] for label in labels], labels, legend_columns)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=DPI, metadata=PNG_METADATA)
    return path


def _fit_legend(figure: Figure, handles: list, labels: list[str], columns: int) -> Legend:
    """The figure's legend below the panels, in as many of ``columns`` as fit its width: a wider legend is cut
    at both edges (one panel, long student names)."""
    def legend(ncols: int) -> Legend:
        # "outside" puts the legend in its own band of the constrained layout, never over data.
        return figure.legend(handles, labels, loc="outside lower center", ncols=ncols, frameon=False)

    renderer = FigureCanvasAgg(figure).get_renderer()  # the canvas savefig draws PNGs with
    for ncols in range(min(columns, len(labels)), 1, -1):
        wide = legend(ncols)
        if wide.get_window_extent(renderer).width <= figure.bbox.width:
            return wide
        wide.remove()
    return legend(1)


def _style():
    # Start from matplotlib's defaults, not the user's matplotlibrc, so output is the same everywhere.
    return matplotlib.style.context(["default", _RC])


def _plot_series(ax: Axes, xs: Sequence[float], cells: Sequence[Cell], label: str, colour: str) -> None:
    means = [c.mean for c in cells]
    # The line and its error bars are separate artists so the legend lists lines in plotting order.
    ax.plot(xs, means, label=label, color=colour, marker="o", markersize=4, linewidth=1.5)
    errors = [c.half_width if c.seeds > 1 else 0.0 for c in cells]
    if any(errors):
        ax.errorbar(xs, means, yerr=errors, fmt="none", ecolor=colour, capsize=3, linewidth=1)


def _random_accuracy(task: str) -> float:
    """Percent; 0 for open answers and user tasks, where a rule along the x-axis would say nothing."""
    return 100 * BUILTIN_TASKS[task].random_accuracy if task in BUILTIN_TASKS else 0.0


def _random_line(ax: Axes, task: str) -> None:
    if _random_accuracy(task):
        ax.axhline(_random_accuracy(task), color="black", linestyle=":", linewidth=1,
                   label="Random")


def _line_panels(series: Mapping[str, Mapping[str, Mapping[float, Cell]]], path: Path, title: str, xlabel: str,
                 xscale: str, log_base: int = 10, tick_format=None,
                 references: Mapping[str, Mapping[str, Cell]] | None = None,
                 reference_colours: Mapping[str, str] | None = None) -> Path:
    """One panel per task; ``series[task][label][x]`` is a cell, ``references[task][label]`` a dashed line."""
    tasks = task_order(series)
    labels = [label for task in tasks for label in series[task]]
    colours = _colour_map(labels)
    with _style():
        figure, axes = _figure(len(tasks))
        for ax, task in zip(axes, tasks, strict=True):
            xs_all: set[float] = set()
            for label, points in series[task].items():
                xs = sorted(points)
                xs_all.update(xs)
                _plot_series(ax, xs, [points[x] for x in xs], label, colours[label])
            for label, cell in (references or {}).get(task, {}).items():
                colour = (reference_colours or {}).get(label, "grey")
                # Dash pattern by method, colour by student: two baselines of one student stay apart.
                style = "--" if "Fine-tune-CoT" in label else (0, (1.5, 1.5, 5, 1.5))
                ax.axhline(cell.mean, color=colour, linestyle=style, linewidth=1.2, label=label)
            _random_line(ax, task)
            ax.set_xscale(xscale, **({"base": log_base} if xscale == "log" else {}))
            if xscale == "log":
                # Ticks exactly at the measured values: log axes otherwise label only powers of the base.
                ax.xaxis.set_major_locator(FixedLocator(sorted(xs_all)))
                ax.xaxis.set_minor_locator(NullLocator())
            ax.xaxis.set_major_formatter(FuncFormatter(tick_format or (lambda x, _: f"{x:g}")))
            # An accuracy's interval ends at 0 and 100 (two seeds' t-intervals are wide enough to pass both).
            ax.set_ylim(0, min(ax.get_ylim()[1], 100))
            ax.set_title(task_title(task))
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ACCURACY_LABEL)
        figure.suptitle(title, wrap=True)  # one panel is narrower than a long title
        return _save(figure, path)


def _by_task_and_line(cells: Mapping[tuple[str, str, float], Cell]) -> dict[str, dict[str, dict[float, Cell]]]:
    """(task, line, x) -> cell, regrouped as task -> line -> x -> cell."""
    series: dict[str, dict[str, dict[float, Cell]]] = defaultdict(lambda: defaultdict(dict))
    for (task, label, x), cell in cells.items():
        series[task][label][x] = cell
    return series


def _trends(series: Mapping[str, Mapping[str, Mapping[float, Cell]]]) -> dict[str, dict[str, Mapping[float, Cell]]]:
    """Per task, only the lines of two points or more; tasks left without a line are dropped.

    A lone dot shows no trend, and dots of separate lines at different x (one
    student per family, one D per student) would read as one.
    """
    kept = {task: {label: points for label, points in lines.items() if len(points) >= 2}
            for task, lines in series.items()}
    return {task: lines for task, lines in kept.items() if lines}


def plot_accuracy_vs_d(rows: Sequence[ResultRow], path: Path) -> Path | None:
    """Diverse reasoning: accuracy against D (log2 axis), one line per student, CoT method and training-set size.

    Fine-tuning runs without D (vanilla Fine-tune, and Fine-tune-CoT on the
    teacher's greedy rationale) are dashed lines in the colour of their student's
    line at the same size; the Random baseline is dotted. None when no line has two
    values of D on any task.
    """
    series, references, reference_colours = accuracy_vs_d_lines(rows)
    if not series:
        return None
    return _line_panels(series, path, "Diverse reasoning: accuracy vs rationales per question",
                        "Rationales per training question, D (log2 scale)", "log", log_base=2,
                        references=references, reference_colours=reference_colours)


def accuracy_vs_d_lines(rows: Sequence[ResultRow]) -> tuple[dict[str, dict[str, Mapping[float, Cell]]],
                                                            dict[str, dict[str, Cell]], dict[str, str]]:
    """(task → line → D → cell, task → baseline → cell, baseline → colour) of :func:`plot_accuracy_vs_d`.

    A line is a student, a method and, where it trained on a subset, its size ("…, 32 questions"): the paper's
    claim is about D at equal questions, so sizes are never averaged together. A baseline (a row without D) is
    drawn where its student has a line of the same size in that panel, in that line's colour (the line of its
    own method where there is one).
    """
    def size(row: ResultRow) -> str:
        return f", {row.train_size} questions" if row.train_size is not None else ""

    def name(row: ResultRow, suffix: str = "") -> str:
        return f"{row.student}, {METHOD_NAMES.get(row.method, row.method)}{suffix}{size(row)}"

    diverse = _cells(((r.task, name(r), float(r.D)), r.accuracy) for r in rows if r.D is not None)
    series = _trends(_by_task_and_line(diverse))
    colours = _colour_map(line for task in task_order(series) for line in series[task])
    kin_of = {name(r): (r.student, r.train_size) for r in rows}  # a line's student and size
    line_of = {name(r, " (greedy)"): name(r) for r in rows}  # a baseline (the greedy teacher, no D): its method's line
    baselines: dict[str, dict[str, Cell]] = defaultdict(dict)
    reference_colours: dict[str, str] = {}
    for (task, label), cell in sorted(_cells(((r.task, name(r, " (greedy)")), r.accuracy)
                                             for r in rows if r.D is None and r.method.startswith("ft")).items()):
        lines, line = series.get(task, {}), line_of[label]
        same_student = [other for other in lines if kin_of[other] == kin_of[line]]
        if not same_student:  # a dashed line without its curve compares nothing
            continue
        baselines[task][label] = cell
        reference_colours[label] = colours[line if line in lines else same_student[0]]
    return series, dict(baselines), reference_colours


def _human_count(x: float, _=None) -> str:
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if x >= scale:
            return f"{x / scale:g}{suffix}"
    return f"{x:g}"


def plot_accuracy_vs_student_size(rows: Sequence[ResultRow], parameters: Mapping[str, float], path: Path,
                                  families: Mapping[str, str] | None = None) -> Path | None:
    """Accuracy against the student's parameter count (log axis), one line per method (and family).

    ``parameters`` maps each student name in ``rows`` to its parameter count;
    ``families`` optionally maps students to a model family ("GPT-2",
    "Flan-T5"), so that one line joins sizes of one family only, as in the
    paper — a line from GPT-2 124M to Flan-T5 220M would show the family, not
    the size. None when no task has students of two sizes.
    """
    missing = sorted({r.student for r in rows} - set(parameters))
    if missing:
        raise FtcotError(f"No parameter count for student(s) {', '.join(missing)}; "
                         f"add them to the parameters mapping.")
    unfamiliar = sorted({r.student for r in rows} - set(families)) if families is not None else []
    if unfamiliar:
        raise FtcotError(f"No family for student(s) {', '.join(unfamiliar)}; add them to the families mapping.")
    with_teacher = several_teachers(rows)

    def label(row: ResultRow) -> str:
        family = f"{families[row.student]}, " if families is not None else ""
        return family + method_label(row) + (f", teacher {row.teacher}" if with_teacher and row.teacher else "")

    cells = _cells(((r.task, label(r), float(parameters[r.student])), r.accuracy) for r in rows)
    series = _trends(_by_task_and_line(cells))
    if not series:
        return None
    return _line_panels(series, path, "Accuracy vs student size", "Student parameters (log scale)", "log",
                        tick_format=_human_count)


def plot_accuracy_vs_train_size(results: Sequence[tuple[ResultRow, int]], path: Path) -> Path | None:
    """Accuracy against the number of training questions, one line per student and method.

    ``results`` pairs each row with the number of training questions its
    student saw. The axis is logarithmic when sizes span 10× or more (data
    ablations halve or decimate), linear otherwise. None when no task has two sizes.
    """
    cells = _cells(((r.task, f"{r.student}, {method_label(r)}", float(size)), r.accuracy) for r, size in results)
    series = _trends(_by_task_and_line(cells))
    if not series:
        return None
    sizes = [x for s in series.values() for points in s.values() for x in points]
    scale = "log" if min(sizes) > 0 and max(sizes) / min(sizes) >= 10 else "linear"
    return _line_panels(series, path, "Accuracy vs training-set size", "Training questions"
                        + (" (log scale)" if scale == "log" else ""), scale, tick_format=_human_count)


BAR_FIGURE_WIDTH = 11.8  # inches: the report's column at 100 DPI, so bar charts show at their native size
BAR_PANEL_HEIGHT = 3.6


def _tasks_per_panel(tasks: int, bars: int) -> int:
    # About 36 bar widths (a gap per group included) and 8 task titles fit one panel of that width legibly;
    # the tasks are then spread evenly, 6 + 6 rather than 8 + 4.
    most = max(1, min(8, 36 // (bars + 1)))
    return math.ceil(tasks / math.ceil(tasks / most)) if tasks else most


def _grouped_bars(ax: Axes, tasks: Sequence[str], bars: Mapping[str, Mapping[str, Cell]],
                  colours: Mapping[str, str], slots: int) -> None:
    """One group per task, one bar per label; error bars where a cell has several seeds.

    ``slots`` groups wide, whatever ``len(tasks)``, so bars keep one width across panels.
    """
    width = 0.8 / max(1, len(bars))
    for i, (label, cells) in enumerate(bars.items()):
        xs = [t + (i - (len(bars) - 1) / 2) * width for t, task in enumerate(tasks) if task in cells]
        present = [cells[task] for task in tasks if task in cells]
        drawn = ax.bar(xs, [c.mean for c in present], width, label=label, color=colours[label])
        if len(bars) * len(tasks) <= 24:  # values on the bars while they stay legible
            labels = ax.bar_label(drawn, fmt="%.1f", fontsize=8, padding=2)
            for label, x, cell in zip(labels, xs, present, strict=True):
                # Above the error bar, not crossed by it; a t-interval can pass 100 (two seeds': 117).
                label.xy = (x, min(cell.mean + cell.half_width, 100))
        with_interval = [(x, c) for x, c in zip(xs, present, strict=True) if c.seeds > 1]
        if with_interval:
            ax.errorbar([x for x, _ in with_interval], [c.mean for _, c in with_interval],
                        yerr=[c.half_width for _, c in with_interval], fmt="none", ecolor="black", capsize=3,
                        linewidth=1)
    for t, task in enumerate(tasks):
        if _random_accuracy(task):
            # The Random baseline as a short black rule across its own group only.
            ax.hlines(_random_accuracy(task), t - 0.45, t + 0.45, colors="black",
                      linestyles=":", linewidth=1.2, label="Random")
    # Long titles wrap to their group's width ("Last Letter Concatenation" beside its neighbours).
    titles = [textwrap.fill(task_title(t), max(10, 120 // slots), break_long_words=False) for t in tasks]
    ax.set_xticks(range(len(tasks)), titles)
    ax.set_xlim(-0.6, slots - 0.4)
    # Headroom above 100 so a value label on a bar near 100 stays inside the panel (it overlapped the frame).
    ax.set_ylim(0, 108)
    ax.set_yticks(range(0, 101, 20))
    ax.set_ylabel(ACCURACY_LABEL)
    ax.grid(axis="x", visible=False)


def _bar_figure(panels: Sequence[tuple[str, Sequence[str], Mapping[str, Mapping[str, Cell]]]], title: str,
                path: Path, colours: Mapping[str, str]) -> Path:
    """Panels of grouped bars stacked vertically; a panel with more tasks than fit is continued below."""
    chunks = []
    for panel_title, tasks, bars in panels:
        per = _tasks_per_panel(len(tasks), len(bars))
        chunks += [(panel_title, tasks[i:i + per], bars, per) for i in range(0, len(tasks), per)]
    legend_rows = math.ceil((len(colours) + 1) / 2)
    with _style():
        figure = Figure(figsize=(BAR_FIGURE_WIDTH, BAR_PANEL_HEIGHT * len(chunks) + 0.6 + 0.2 * legend_rows),
                        dpi=DPI, layout="constrained")
        axes = figure.subplots(len(chunks), 1, squeeze=False)[:, 0]
        for ax, (panel_title, tasks, bars, per) in zip(axes, chunks, strict=True):
            _grouped_bars(ax, tasks, bars, colours, per)
            if panel_title:
                ax.set_title(panel_title)
        figure.suptitle(title)
        return _save(figure, path, legend_columns=2)


def plot_accuracy_by_task(rows: Sequence[ResultRow], path: Path, teacher_rows: Sequence[ResultRow] = ()) -> Path:
    """Grouped bars: one group per task, one bar per method × student (and per teacher row, if given)."""
    if not rows and not teacher_rows:
        raise FtcotError("No result rows to plot.")
    cells = _cells(((f"teacher: {row_label(r)}", r.task), r.accuracy) for r in teacher_rows)
    with_teacher = several_teachers(rows)
    cells.update(_cells(((row_label(r, with_teacher), r.task), r.accuracy) for r in rows))
    bars: dict[str, dict[str, Cell]] = defaultdict(dict)
    for (label, task), cell in cells.items():
        bars[label][task] = cell
    tasks = task_order({task for _, task in cells})
    return _bar_figure([("", tasks, bars)], "Test accuracy per task and method", path, _colour_map(bars))


def plot_accuracy_by_teacher(rows: Sequence[ResultRow], path: Path) -> Path | None:
    """Grouped bars per student × method: one group per task, one bar per teacher.

    None when no student × method × task was trained from two teachers.
    """
    cells = _cells(((f"{r.student}, {method_label(r)}", r.teacher, r.task), r.accuracy) for r in rows)
    runs: dict[str, dict[str, dict[str, Cell]]] = defaultdict(lambda: defaultdict(dict))
    for (run, teacher, task), cell in cells.items():
        runs[run][f"teacher: {teacher}"][task] = cell
    panels = []
    for run, teachers in runs.items():
        tasks = task_order({t for c in teachers.values() for t in c})
        if any(sum(task in c for c in teachers.values()) >= 2 for task in tasks):
            panels.append((run, tasks, teachers))
    if not panels:
        return None
    colours = _colour_map(teacher for _, _, teachers in panels for teacher in teachers)
    return _bar_figure(panels, "Accuracy per teacher", path, colours)


def best_epoch(epochs: Sequence[Mapping]) -> int | None:
    """The trainer's rule: highest validation accuracy, then lowest validation loss, then the earliest."""
    scored = [e for e in epochs if e.get("val_accuracy") is not None]
    if not scored:
        return None
    return min(scored, key=lambda e: (-e["val_accuracy"], e.get("val_loss") or 0.0, e["epoch"]))["epoch"]


def plot_training_curves(epochs: Sequence[Mapping], path: Path, title: str = "Training run",
                         best: int | None = None) -> Path:
    """Train and validation loss, and validation accuracy, per epoch; the best epoch marked.

    ``epochs`` are the trainer's per-epoch records (``epoch``, ``train_loss``,
    ``val_loss``, ``val_accuracy`` as a fraction); a missing or None metric is
    left out. ``best`` defaults to :func:`best_epoch`.
    """
    if not epochs:
        raise FtcotError(f"{title}: no epochs to plot.")
    epochs = sorted(epochs, key=lambda e: e["epoch"])
    best = best if best is not None else best_epoch(epochs)

    def curve(key: str, scale: float = 1.0) -> tuple[list[int], list[float]]:
        points = [(e["epoch"], scale * e[key]) for e in epochs if e.get(key) is not None]
        return [x for x, _ in points], [y for _, y in points]

    with _style():
        figure, (loss_ax, acc_ax) = _figure(2, width=2 * PANEL_SIZE[0], height=PANEL_SIZE[1] + 0.8)
        for key, label, colour in (("train_loss", "Train loss", _COLOURS[0]), ("val_loss", "Validation loss",
                                                                                _COLOURS[1])):
            xs, ys = curve(key)
            if xs:
                loss_ax.plot(xs, ys, marker="o", markersize=3, label=label, color=colour)
        xs, ys = curve("val_accuracy", 100.0)
        if xs:
            acc_ax.plot(xs, ys, marker="o", markersize=3, label="Validation accuracy", color=_COLOURS[2])
            acc_ax.set_ylim(0, 100)
            if best in xs:
                # Not clipped: at 100% the star sits on the axes' edge.
                acc_ax.plot([best], [ys[xs.index(best)]], marker="*", markersize=13, color="black",
                            linestyle="none", clip_on=False, zorder=5)
        for ax in (loss_ax, acc_ax):
            if best is not None:
                ax.axvline(best, color="black", linestyle="--", linewidth=1, label=f"Best epoch ({best})")
            ax.set_xlabel("Epoch")
            ax.xaxis.get_major_locator().set_params(integer=True)
        loss_ax.set_ylabel("Loss (nats per target token)")
        loss_ax.set_title("Loss")
        acc_ax.set_ylabel(ACCURACY_LABEL)
        acc_ax.set_title("Validation accuracy")
        figure.suptitle(title)
        return _save(figure, path)
