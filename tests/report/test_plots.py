"""Plots: each writes a PNG that decodes, None when its axis does not vary, the same bytes every time."""

from __future__ import annotations

import dataclasses

import matplotlib
import matplotlib.image
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from PIL import Image

from ftcot.errors import FtcotError
from ftcot.report import plots
from ftcot.report.results import Cell, ResultRow

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _row(method="ft_cot", task="multiarith", accuracy=50.0, *, D=None, seed=0, student="gpt2-124m",
         teacher="text-davinci-002"):
    return ResultRow(method, student, teacher, task, D, seed, 150, accuracy)


def _diverse_rows():
    rows = []
    for task in ("multiarith", "date_understanding"):
        for student, offset in (("gpt2-124m", 0.0), ("flan-t5-220m", 5.0)):
            for D in (1, 2, 4, 8):
                rows += [_row(task=task, D=D, seed=s, student=student, accuracy=10 + offset + 3 * D + s)
                         for s in range(3)]
            rows += [_row("ft", task, 8.0, student=student), _row("ft_cot", task, 12.0, student=student)]
    return rows


def _epochs():
    return [{"epoch": e, "train_loss": 2.0 / e, "val_loss": 1.0 / e + 0.05 * e, "val_accuracy": min(0.6, 0.1 * e)}
            for e in range(1, 9)]


def _decode(path) -> tuple[int, int]:
    """The PNG's size, after checking it decodes completely with both PIL and matplotlib."""
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    with Image.open(path) as image:
        image.load()  # decodes every pixel; a truncated file raises here
        assert "Software" not in image.info  # the version stamp is dropped for stable bytes
        size = image.size
    pixels = matplotlib.image.imread(path)
    assert pixels.shape[:2] == (size[1], size[0])
    assert pixels.std() > 0.01  # not a blank canvas
    return size


def _panel_width(columns: int) -> int:
    return round(plots.PANEL_SIZE[0] * columns * plots.DPI)


def test_accuracy_vs_d_has_one_panel_per_task_where_d_varies(tmp_path):
    rows = _diverse_rows() + [_row(task="coin_flip", D=8, accuracy=90.0)]  # coin_flip: one D only, no panel
    path = plots.plot_accuracy_vs_d(rows, tmp_path / "d.png")
    assert path == tmp_path / "d.png"
    assert _decode(path)[0] == _panel_width(2)


def test_accuracy_vs_d_keeps_training_set_sizes_apart_and_pairs_each_baseline_with_its_size(tmp_path):
    """The diverse grid trains at 32 and 128 questions: one line per size (averaging them would hide the paper's
    claim, made at equal questions), each greedy baseline beside its own size's line, in its colour."""
    def at(size, **kw):
        return dataclasses.replace(_row(task="coin_flip", student="gemma", **kw), train_size=size)

    rows = [at(size, D=D, accuracy=a + size / 10) for size in (32, 128) for D, a in ((1, 60.0), (4, 80.0))]
    rows += [at(32, accuracy=45.0), at(128, accuracy=96.0), at(None, accuracy=99.0),  # greedy teacher (no D)
             at(32, D=1, accuracy=70.0, method="ft_cot_kd"), at(32, D=4, accuracy=85.0, method="ft_cot_kd"),
             at(64, accuracy=50.0)]  # a size with no D line: no baseline
    series, references, colours = plots.accuracy_vs_d_lines(rows)
    lines = series["coin_flip"]
    ft_cot, kd = plots.METHOD_NAMES["ft_cot"], plots.METHOD_NAMES["ft_cot_kd"]
    assert set(lines) == {f"gemma, {ft_cot}, 32 questions", f"gemma, {ft_cot}, 128 questions",
                          f"gemma, {kd}, 32 questions"}
    assert lines[f"gemma, {ft_cot}, 128 questions"][4.0].mean == pytest.approx(92.8)
    assert {label: cell.mean for label, cell in references["coin_flip"].items()} == {
        f"gemma, {ft_cot} (greedy), 32 questions": 45.0, f"gemma, {ft_cot} (greedy), 128 questions": 96.0}
    line_colours = plots._colour_map(lines)
    assert colours[f"gemma, {ft_cot} (greedy), 128 questions"] == line_colours[f"gemma, {ft_cot}, 128 questions"]
    assert plots.plot_accuracy_vs_d(rows, tmp_path / "d.png") == tmp_path / "d.png"


def test_accuracy_vs_d_is_none_without_two_values_of_d(tmp_path):
    rows = [_row(D=8), _row("ft"), _row(task="coin_flip", D=4)]
    assert plots.plot_accuracy_vs_d(rows, tmp_path / "d.png") is None
    assert not (tmp_path / "d.png").exists()


def test_accuracy_by_task_writes_grouped_bars_and_draws_intervals_for_seeds(tmp_path):
    single = [_row("ft", t, 50.0) for t in ("multiarith", "coin_flip")]
    seeded = [_row("ft", "multiarith", 50.0)] + [_row("ft", "coin_flip", a, seed=s) for s, a in
                                                 enumerate([40.0, 50.0, 60.0])]
    teacher = [_row("zs_cot", "coin_flip", 90.0, student="text-davinci-002")]
    a = plots.plot_accuracy_by_task(single, tmp_path / "a.png", teacher)
    b = plots.plot_accuracy_by_task(seeded, tmp_path / "b.png", teacher)
    assert _decode(a) == _decode(b)
    # Same means; only the error bar of the three-seed cell differs.
    assert a.read_bytes() != b.read_bytes()


def test_accuracy_by_task_continues_many_tasks_on_panels_below(tmp_path):
    tasks = list(plots.BUILTIN_TASKS)
    rows = [_row(m, t, 40.0) for t in tasks for m in ("ft", "ft_cot")]
    half = plots.plot_accuracy_by_task(rows[: len(rows) // 2], tmp_path / "six.png")
    full = plots.plot_accuracy_by_task(rows, tmp_path / "twelve.png")
    (width, six_high), (full_width, twelve_high) = _decode(half), _decode(full)
    # Same width (the report's column), one more panel of bars for the second six tasks.
    assert width == full_width == round(plots.BAR_FIGURE_WIDTH * plots.DPI)
    assert twelve_high - six_high == round(plots.BAR_PANEL_HEIGHT * plots.DPI)


def test_accuracy_by_task_needs_rows(tmp_path):
    with pytest.raises(FtcotError, match="No result rows"):
        plots.plot_accuracy_by_task([], tmp_path / "a.png")


def test_accuracy_vs_student_size(tmp_path):
    rows = [_row(m, t, a + s, student=student) for m in ("ft", "ft_cot") for t in ("multiarith", "coin_flip")
            for s, (student, a) in enumerate([("gpt2-124m", 10.0), ("gpt2-355m", 20.0), ("gpt2-774m", 30.0)])]
    sizes = {"gpt2-124m": 124e6, "gpt2-355m": 355e6, "gpt2-774m": 774e6}
    assert _decode(plots.plot_accuracy_vs_student_size(rows, sizes, tmp_path / "s.png"))[0] == _panel_width(2)
    one_size = [r for r in rows if r.student == "gpt2-124m"]
    assert plots.plot_accuracy_vs_student_size(one_size, sizes, tmp_path / "one.png") is None


def test_accuracy_vs_student_size_joins_sizes_within_a_family(tmp_path):
    rows = [_row("ft_cot", "multiarith", a, student=s) for s, a in (("gpt2-124m", 8.0), ("gpt2-355m", 12.0),
                                                                     ("flan-t5-220m", 12.0))]
    sizes = {"gpt2-124m": 124e6, "gpt2-355m": 355e6, "flan-t5-220m": 220e6}
    families = {"gpt2-124m": "GPT-2", "gpt2-355m": "GPT-2", "flan-t5-220m": "Flan-T5"}
    mixed = plots.plot_accuracy_vs_student_size(rows, sizes, tmp_path / "mixed.png")
    apart = plots.plot_accuracy_vs_student_size(rows, sizes, tmp_path / "apart.png", families)
    assert _decode(mixed) == _decode(apart)
    assert mixed.read_bytes() != apart.read_bytes()  # two lines (and legend entries) instead of one
    # Families of one size each: nothing varies along a line.
    one_each = [r for r in rows if r.student != "gpt2-355m"]
    assert plots.plot_accuracy_vs_student_size(one_each, sizes, tmp_path / "none.png", families) is None
    with pytest.raises(FtcotError, match="gpt2-355m"):
        plots.plot_accuracy_vs_student_size(rows, sizes, tmp_path / "x.png", {"gpt2-124m": "GPT-2"})


def test_accuracy_vs_student_size_names_a_student_without_a_size(tmp_path):
    with pytest.raises(FtcotError, match="flan-t5-220m"):
        plots.plot_accuracy_vs_student_size([_row(student="flan-t5-220m"), _row()], {"gpt2-124m": 124e6},
                                            tmp_path / "s.png")


def test_accuracy_vs_train_size(tmp_path):
    results = [(_row(t, accuracy=a), n) for t in ("ft", "ft_cot") for n, a in ((60, 10.0), (120, 15.0), (600, 30.0))]
    assert _decode(plots.plot_accuracy_vs_train_size(results, tmp_path / "n.png"))[0] == _panel_width(1)
    assert plots.plot_accuracy_vs_train_size([(_row(), 600)], tmp_path / "one.png") is None


def test_accuracy_by_teacher(tmp_path):
    rows = [_row(teacher="text-davinci-002", accuracy=20.0), _row(teacher="gpt-4o", accuracy=35.0),
            _row(task="coin_flip", accuracy=90.0)]
    assert _decode(plots.plot_accuracy_by_teacher(rows, tmp_path / "t.png"))
    # Two teachers, but never for the same student, method and task: nothing to compare.
    apart = [_row(teacher="text-davinci-002"), _row(teacher="gpt-4o", student="flan-t5-220m")]
    assert plots.plot_accuracy_by_teacher(apart, tmp_path / "apart.png") is None


def test_best_epoch_follows_the_trainer_rule():
    history = [{"epoch": 1, "val_accuracy": 0.5, "val_loss": 0.9}, {"epoch": 2, "val_accuracy": 0.6, "val_loss": 0.8},
               {"epoch": 3, "val_accuracy": 0.6, "val_loss": 0.7}, {"epoch": 4, "val_accuracy": 0.6, "val_loss": 0.7}]
    assert plots.best_epoch(history) == 3  # accuracy ties; lower loss wins; then the earlier epoch
    assert plots.best_epoch([{"epoch": 1, "train_loss": 1.0}]) is None


def test_training_curves(tmp_path):
    path = plots.plot_training_curves(_epochs(), tmp_path / "c.png", "gpt2-124m on MultiArith")
    assert _decode(path) == (round(2 * plots.PANEL_SIZE[0] * plots.DPI), round((plots.PANEL_SIZE[1] + 0.8) * plots.DPI))
    # The marked epoch is part of the picture: another best epoch, other pixels.
    other = plots.plot_training_curves(_epochs(), tmp_path / "other.png", "gpt2-124m on MultiArith", best=2)
    assert other.read_bytes() != path.read_bytes()
    # An API student reports train loss only: still a plot, without the missing curves.
    assert _decode(plots.plot_training_curves([{"epoch": 1, "train_loss": 1.0}, {"epoch": 2, "train_loss": 0.5}],
                                              tmp_path / "api.png"))
    with pytest.raises(FtcotError, match="no epochs"):
        plots.plot_training_curves([], tmp_path / "none.png")


def test_same_inputs_same_bytes_whatever_the_matplotlibrc(tmp_path):
    def draw(directory):
        directory.mkdir()
        return [plots.plot_accuracy_vs_d(_diverse_rows(), directory / "d.png"),
                plots.plot_accuracy_by_task(_diverse_rows(), directory / "bars.png"),
                plots.plot_training_curves(_epochs(), directory / "curves.png")]

    first = draw(tmp_path / "a")
    # A user's style settings must not leak into the report.
    with matplotlib.rc_context({"lines.linewidth": 6, "axes.facecolor": "yellow", "font.size": 20}):
        second = draw(tmp_path / "b")
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]


def test_a_legend_too_wide_for_its_figure_gets_fewer_columns():
    """One panel and the legend of results/gemma_offline's training-size plot: in three columns it was cut at
    both edges of the PNG."""
    names = ["gemma-270m, Fine-tune", "gemma-270m, Fine-tune-CoT", "Random"]
    for labels, columns in ((names, 2), (["a", "b", "Random"], 3)):
        with plots._style():
            figure, [ax] = plots._figure(1)
            handles = [ax.plot([0, 1], [0, 1], label=label)[0] for label in labels]
            legend = plots._fit_legend(figure, handles, labels, 3)
            assert legend.get_window_extent(figure.canvas.get_renderer()).width <= figure.bbox.width  # Agg's
            assert len(figure.legends) == 1 and legend._ncols == columns


def test_a_value_label_on_a_bar_near_100_stays_inside_its_panel():
    """results/gemma_offline: coin flip Fine-tune-CoT's "96.4" was drawn across the panel's top edge."""
    with plots._style():
        figure, [ax] = plots._figure(1)
        plots._grouped_bars(ax, ["coin_flip"], {"ft_cot": {"coin_flip": Cell(99.0, 0.0, 1)}},
                            {"ft_cot": "C0"}, 1)
        renderer = FigureCanvasAgg(figure).get_renderer()
        [label] = [t for t in ax.texts if t.get_text() == "99.0"]
        assert label.get_window_extent(renderer).y1 <= ax.get_window_extent(renderer).y1
        assert ax.get_yticks()[-1] == 100  # the scale still reads as a percentage


def test_a_value_label_sits_above_its_error_bar():
    with plots._style():
        figure, [ax] = plots._figure(1)
        plots._grouped_bars(ax, ["coin_flip"], {"ft": {"coin_flip": Cell(54.0, 21.7, 3)}}, {"ft": "C0"}, 1)
        renderer = FigureCanvasAgg(figure).get_renderer()
        [label] = [t for t in ax.texts if t.get_text() == "54.0"]
        whisker_top = ax.transData.transform((0, 54.0 + 21.7))[1]
        assert label.get_window_extent(renderer).y0 >= whisker_top


def test_a_series_keeps_its_colour_whatever_the_order_of_the_rows():
    labels = ["gemma-270m, Fine-tune-CoT", "gemma-270m, Fine-tune", "teacher: text-davinci-002"]
    assert plots._colour_map(labels) == plots._colour_map(reversed(labels))
