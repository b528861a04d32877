"""The HTML report: self-contained, escaped, and rendered for real in headless Chromium."""

from __future__ import annotations

import base64
import html.parser
import json
import os
import re
import select
import subprocess
import time
from pathlib import Path

import pytest
from PIL import Image

from ftcot.report import plots
from ftcot.report.html import ReportImage, ReportInputs, markdown_table_html, render_report, write_report
from ftcot.report.results import ResultRow, results_markdown

CHROMIUM = Path("/usr/bin/chromium")
# Flags from the machine notes: without the background-networking ones Chromium keeps dialling out.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WINDOW = (1280, 2000)
MAGENTA = (255, 0, 255)
SWATCH = (240, 120)  # a colour no plot or style uses, so its pixels in a screenshot can only be this image
SCRIPT = "<script>document.title='pwned'</script>"


class _Elements(html.parser.HTMLParser):
    """Every start tag with its attributes, and the text outside tags."""

    def __init__(self, markup: str):
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.feed(markup)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)

    def all(self, tag: str) -> list[dict[str, str | None]]:
        return [attrs for name, attrs in self.tags if name == tag]


def _rows():
    rows = [ResultRow("ft_cot", "gpt2-124m", "text-davinci-002", "multiarith", None, s, 90, a)
            for s, a in enumerate([10.0, 12.0])]
    rows += [ResultRow("ft", "gpt2-124m", "text-davinci-002", t, None, 0, 90, a)
             for t, a in (("multiarith", 7.0), ("coin_flip", 60.0))]
    return rows


def _teacher_rows():
    return [ResultRow("zs_cot", "text-davinci-002", "text-davinci-002", "multiarith", None, 0, 600, 78.79)]


def _example(correct: bool, rationale: str = "3 + 2 = 5.") -> dict:
    return {"question": "Tom has 3 apples & buys 2. How many?", "answer": "5", "teacher_rationale": rationale,
            "teacher_correct": True, "student_output": "3 + 2 = 5 --> 5" if correct else "3 - 2 = 1 --> 1",
            "student_prediction": "5" if correct else "1", "student_correct": correct}


def _curation():
    return {"task": "multiarith", "template": "ft_cot", "train_questions": 420, "questions_with_examples": 330,
            "kept": 330, "dropped": {"wrong_answer": 90}, "val_fraction": 0.1, "val_questions": list(range(42))}


def _teacher_report():
    return {"task": "multiarith", "teacher": "text-davinci-002", "method": "zs_cot", "questions": 600,
            "accuracy": 0.7879, "truncation_rate": None, "cost_usd": None}


@pytest.fixture
def swatch(tmp_path) -> Path:
    path = tmp_path / "swatch.png"
    Image.new("RGB", SWATCH, MAGENTA).save(path)
    return path


@pytest.fixture
def inputs(tmp_path, swatch) -> ReportInputs:
    plot = plots.plot_accuracy_by_task(_rows(), tmp_path / "bars.png", _teacher_rows())
    return ReportInputs(
        title="ftcot <report> & co", rows=_rows(), teacher_rows=_teacher_rows(),
        images=[ReportImage("Solid swatch", swatch), ReportImage("Accuracy \"per\" task <b>", plot)],
        curation=[_curation()], teacher_reports=[_teacher_report()],
        examples={"multiarith": [_example(True, f"Start with 3. {SCRIPT} Then 5."), _example(False),
                                 _example(True), _example(True), _example(False)]},
    )


def test_model_and_user_text_is_escaped(inputs):
    markup = render_report(inputs)
    assert "<script" not in markup.lower()
    assert "&lt;script&gt;document.title=&#x27;pwned&#x27;&lt;/script&gt;" in markup
    assert "<title>ftcot &lt;report&gt; &amp; co</title>" in markup
    parsed = _Elements(markup)
    assert "b" not in {tag for tag, _ in parsed.tags}  # the caption's <b> stayed text, in alt and figcaption
    assert [img["alt"] for img in parsed.all("img")] == ["Solid swatch", "Accuracy \"per\" task <b>"]


def test_every_image_is_an_inline_data_uri_of_its_png(inputs):
    images = _Elements(render_report(inputs)).all("img")
    assert len(images) == len(inputs.images)
    for img, image in zip(images, inputs.images, strict=True):
        prefix = "data:image/png;base64,"
        assert img["src"].startswith(prefix)
        assert base64.b64decode(img["src"][len(prefix):]) == image.path.read_bytes()


def test_no_external_resources(inputs):
    markup = render_report(inputs)
    assert "http://" not in markup and "https://" not in markup
    for _, attrs in _Elements(markup).tags:
        for name in ("src", "href", "srcset", "action", "poster", "data"):
            assert not (attrs.get(name) or "data:").split(",")[0].lower().startswith(("http", "//", "file")), attrs
    assert "url(" not in markup and "@import" not in markup
    # The browser holds the page to it: no request but data: images, and no script.
    assert "default-src 'none'; img-src data:" in markup


def test_results_table_has_the_cells_of_the_markdown_table(inputs):
    markdown = results_markdown(inputs.rows, inputs.teacher_rows)
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in markdown.splitlines()]
    del cells[1]  # the |---| rule
    table = markdown_table_html(markdown)
    rendered = [re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row) for row in re.findall(r"<tr>(.*?)</tr>", table)]
    assert rendered == cells
    assert ["gpt2-124m, Fine-tune-CoT", "11.00 ± 12.71", "–"] in rendered


def test_examples_show_correct_and_wrong_side_by_side(inputs):
    inputs.examples_per_side = 2
    markup = render_report(inputs)
    left, right = markup.split("Student wrong", 1)
    assert left.count("class='example right'") == 2 and "class='example wrong'" not in left
    assert right.count("class='example wrong'") == 2 and "class='example right'" not in right
    assert "Tom has 3 apples &amp; buys 2. How many?" in markup


def test_curation_and_teacher_reports(inputs):
    markup = render_report(inputs)
    assert "<th>MultiArith<br>ft_cot</th>" in markup
    assert "<th>MultiArith<br>text-davinci-002<br>zs_cot</th>" in markup
    assert "78.79%" in markup and "10.00%" in markup  # fractions shown as percent
    assert "<summary>42 items</summary>" in markup  # the validation questions, folded
    assert "wrong_answer: 90" in markup


def test_lineage_names_each_accuracys_files_as_text_that_survives_a_move():
    entry = {"task": "coin_flip", "method": "ft_cot", "student": "s<b>", "teacher": "t", "D": None, "seed": 0,
             "train_size": None, "accuracy": 91.3, "predictions": "stages/evaluate/a/predictions.jsonl",
             "checkpoint": "stages/train/b/best", "training_rows": "stages/curate/c/train.jsonl",
             "teacher_completions": "stages/teach/d/teach.sqlite"}
    baseline = {**entry, "method": "zs", "model": "gemma-270m", "checkpoint": None, "training_rows": None,
                "teacher_completions": None}
    markup = render_report(ReportInputs(lineage=[entry, baseline]))
    assert not _Elements(markup).all("a")  # relative links would point nowhere once the page is mailed or moved
    paths = re.findall(r": <code>([^<]*)</code>", markup)
    assert paths == ["stages/evaluate/a/predictions.jsonl", "stages/train/b/best", "stages/curate/c/train.jsonl",
                     "stages/teach/d/teach.sqlite", "stages/evaluate/a/predictions.jsonl"]
    assert "s&lt;b&gt;" in markup and "<b>" not in markup


def test_every_section_is_optional():
    markup = render_report(ReportInputs())
    assert markup.startswith("<!DOCTYPE html>")
    assert "<section" not in markup and "<img" not in markup


def test_write_report(inputs, tmp_path):
    path = write_report(inputs, tmp_path / "out" / "report.html")
    assert path.read_text(encoding="utf-8") == render_report(inputs)


# --- real headless Chromium -------------------------------------------------------------------------------

needs_chromium = pytest.mark.skipif(not CHROMIUM.exists(),
                                    reason="/usr/bin/chromium is absent (Debian: apt-get install -y chromium)")


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    return subprocess.run([str(CHROMIUM), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=60, check=True)


@needs_chromium
def test_chromium_renders_the_report_with_its_images(inputs, tmp_path):
    page = write_report(inputs, tmp_path / "report.html")

    # The DOM Chromium built: every image present, the rationale's script tag only text.
    dom = _chromium(tmp_path, "--dump-dom", page.as_uri()).stdout
    parsed = _Elements(dom)
    assert len(parsed.all("img")) == len(inputs.images)
    assert not parsed.all("script")
    assert SCRIPT in "".join(parsed.text)
    assert "<title>ftcot &lt;report&gt; &amp; co</title>" in dom  # the script never ran to change it

    shot = tmp_path / "shot.png"
    _chromium(tmp_path, f"--screenshot={shot}", f"--window-size={WINDOW[0]},{WINDOW[1]}", page.as_uri())
    with Image.open(shot) as image:
        assert image.size == WINDOW
        pixels = image.convert("RGB")
        colours = pixels.getcolors(maxcolors=WINDOW[0] * WINDOW[1])
    assert len(colours) > 50  # text, table rules and a plot: far from one colour
    # The swatch's pixels can only come from the decoded data: URI, painted at its natural size.
    magenta = dict((colour, count) for count, colour in colours).get(MAGENTA, 0)
    assert magenta >= 0.95 * SWATCH[0] * SWATCH[1]


def _loaded_image_sizes(url: str, profile: Path, timeout: float = 30.0) -> list[list]:
    """``[complete, naturalWidth, naturalHeight]`` of each ``<img>`` after the load event, or its decode error.

    Asked over the DevTools protocol on ``--remote-debugging-pipe`` (Chromium
    reads commands on fd 3 and answers on fd 4, NUL-separated JSON), because a
    page without scripts cannot report whether its images decoded, and the
    protocol's evaluation is not bound by the page's Content-Security-Policy.
    """
    to_chrome_r, to_chrome_w = os.pipe()
    from_chrome_r, from_chrome_w = os.pipe()

    def onto_fds_3_and_4():
        # dup first: a pipe end may itself be fd 3 or 4, and dup2 onto itself would keep close-on-exec.
        read_end, write_end = os.dup(to_chrome_r), os.dup(from_chrome_w)
        os.dup2(read_end, 3)
        os.dup2(write_end, 4)

    proc = subprocess.Popen([str(CHROMIUM), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-pipe",
                             "about:blank"], preexec_fn=onto_fds_3_and_4, close_fds=False,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(to_chrome_r)
    os.close(from_chrome_w)
    deadline, buffer, sent = time.monotonic() + timeout, b"", 0

    def send(method: str, params: dict | None = None, session: str | None = None) -> int:
        nonlocal sent
        sent += 1
        message = {"id": sent, "method": method, "params": params or {}, **({"sessionId": session} if session else {})}
        os.write(to_chrome_w, json.dumps(message).encode() + b"\0")
        return sent

    def receive(wanted) -> dict:
        nonlocal buffer
        while True:
            while b"\0" in buffer:
                raw, buffer = buffer.split(b"\0", 1)
                message = json.loads(raw)
                if wanted(message):
                    assert "error" not in message, message
                    return message
            if not select.select([from_chrome_r], [], [], max(0.0, deadline - time.monotonic()))[0]:
                raise TimeoutError(f"Chromium did not answer within {timeout} s")
            chunk = os.read(from_chrome_r, 1 << 16)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe")
            buffer += chunk

    def call(method: str, params: dict | None = None, session: str | None = None) -> dict:
        number = send(method, params, session)
        return receive(lambda m: m.get("id") == number)["result"]

    try:
        target = call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        call("Page.enable", session=session)
        call("Page.navigate", {"url": url}, session)
        receive(lambda m: m.get("method") == "Page.loadEventFired" and m.get("sessionId") == session)
        # decode() rejects an image the browser cannot decode; the error's text then stands in its place.
        result = call("Runtime.evaluate", {"expression": "Promise.all([...document.images].map(i => i.decode()"
                                           ".then(() => [i.complete, i.naturalWidth, i.naturalHeight], String)))",
                                           "returnByValue": True, "awaitPromise": True}, session)
        return result["result"]["value"]
    finally:
        try:
            send("Browser.close")
            proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait()
        for fd in (to_chrome_w, from_chrome_r):
            os.close(fd)


@needs_chromium
def test_chromium_decodes_every_image(inputs, tmp_path):
    page = write_report(inputs, tmp_path / "report.html")
    expected = []
    for image in inputs.images:
        with Image.open(image.path) as png:
            expected.append([True, *png.size])
    assert _loaded_image_sizes(page.as_uri(), tmp_path / "profile-cdp") == expected


def test_a_real_curation_report_shows_filters_yield_and_contamination_pairs_readably(data_root, tmp_path):
    """report.html's curation section from a real curation.json (AddSub, recorded teacher): the counts of every
    filter, the yield per question and each flagged training/test pair, as fields, not Python reprs."""
    import ftcot

    run = ftcot.teach("addsub", "replay:text-davinci-002", tmp_path / "teach", data_dir=data_root)
    summary = ftcot.curate(run.out, tmp_path / "data", drop_truncated=True, data_dir=data_root).summary
    assert summary["contamination"]["per_test_task"]["single_eq"] > 0  # AddSub's training set holds SingleEq's test
    section = render_report(ReportInputs(curation=[summary]))
    section = section[section.index("<section id='curation'>"):]
    section = section[:section.index("</section>")]
    for row in ("filters", "yield_histogram", "contamination", "pseudo_labels", "rationalized"):
        assert f"<th>{row}</th>" in section
    assert f"truncated: {summary['filters']['flagged']['truncated']}" in section
    assert "test_task: single_eq" in section and "rule: exact" in section
    assert "{&#x27;" not in section  # no dict repr


def test_notes_paper_rows_stage_times_and_environment_are_in_the_report():
    row = ResultRow("ft_cot", "tiny-gpt2", "t", "coin_flip", None, 0, 50, 40.0)
    markup = render_report(ReportInputs(
        rows=[row], notes=["Test questions per accuracy differ — Coin Flip: teacher on 150, students on 50"],
        paper="| | Coin Flip |\n|---|---|\n| GPT-3 175B Fine-tune-CoT | 100.00 |\n", paper_heading="The paper",
        stage_times=[("train", 2, 250.0, 200.0)], environment=[("torch", "2.13.0"), ("machine", "x, 2 cores")]))
    assert "teacher on 150, students on 50" in markup
    assert "<h3>The paper</h3>" in markup and "GPT-3 175B Fine-tune-CoT" in markup
    assert "<th>train</th><td class='num'>2</td><td class='num'>4.2 min</td>" in markup
    assert "torch 2.13.0" in markup and "x, 2 cores" in markup


def test_a_curation_field_empty_in_every_report_is_left_out():
    from ftcot.report.html import reports_table_html

    table = reports_table_html([{"task": "coin_flip", "template": "ft_cot", "kept": 3, "pseudo_labels": None},
                                {"task": "date", "template": "ft_cot", "kept": 5, "pseudo_labels": {}}],
                               ("task", "template"))
    assert "kept" in table and "pseudo_labels" not in table
