"""``ftcot run`` against a live teacher that goes down: a real stub OpenAI-compatible server on 127.0.0.1.

The teacher row needs a teach stage; the student is only prompted (zero-shot), so nothing trains.
What an outage must not do: leave the stage written as done (a rerun would send nothing and the
teacher row would quietly cover fewer questions), exit 0, or print the URL's credentials.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from ftcot.errors import FtcotError
from ftcot.experiment.config import load_config
from ftcot.experiment.runner import DONE_FILE, Experiment
from ftcot.tasks import load_task
from tests.cli import assert_one_line_error, run_ftcot
from tests.teach.stub_openai import StubOpenAI

PASSWORD, TOKEN = "pw-secret-7777", "tok-secret-8888"


@pytest.fixture
def server():
    stub = StubOpenAI(outage=401, echo=True)  # down: every request refused, the refusal echoes URL and auth
    yield stub
    stub.close()


def _task_file(tmp_path: Path, data_root: Path, n: int) -> tuple[Path, list[str]]:
    questions = load_task("coin_flip", data_root).split("test")[:n]
    path = tmp_path / "coins.jsonl"
    path.write_text("".join(json.dumps({"question": s.question, "answer": s.answer, "split": "test"}) + "\n"
                            for s in questions))
    return path, [s.question for s in questions]


def _table_lines(markdown: str) -> list[str]:
    return [line for line in markdown.splitlines() if line.startswith("|")]


def test_a_teacher_outage_never_sticks_and_a_partial_teacher_row_says_so(tmp_path, data_root, server):
    task_file, questions = _task_file(tmp_path, data_root, 4)
    base_url = server.base_url.replace("http://", f"http://alice:{PASSWORD}@") + f"?token={TOKEN}"
    config = {"name": "outage", "tasks": [{"spec": str(task_file), "answer_type": "yes/no"}],
              "teachers": [{"spec": "openai:stub", "name": "stub|teacher[/]", "base_url": base_url,
                            "api_key_env": "FTCOT_TEST_UNSET_KEY", "concurrency": 1}],
              "methods": ["zs"], "students": [{"spec": "tiny-gpt2", "name": "tiny|gpt2"}],
              "evaluate": {"limit": 2, "max_new_tokens": 4, "device": "cpu"}}
    path, out = tmp_path / "exp.yaml", tmp_path / "out"
    path.write_text(yaml.safe_dump(config))
    [teach] = Experiment(load_config(path), out, data_root).plan.of_kind("teach")
    teach_dir = out / teach.path
    outputs = []

    def run() -> tuple[int, str, str]:
        result = run_ftcot("run", path, "--out", out, "--data-dir", data_root)
        outputs.append(result.stdout + result.stderr)
        assert "Traceback" not in result.stderr
        return result.returncode, result.stdout, (result.stderr.strip().splitlines() or [""])[-1]

    # 1. Down (a refused key): one request, then none; the stage fails, the student's row is still made.
    code, stdout, last = run()
    assert "coins, stub|teacher[/] T=0: " in stdout  # a name in the stage table is text, never rich markup
    assert code == 2 and "1 stage(s) failed, e.g. teach coins, stub|teacher[/] T=0" in last
    assert "HTTP 401" in last and "check the API key" in last and "0/4 chains complete" in last
    assert server.count() == 1 and not (teach_dir / DONE_FILE).exists()
    results = (out / "results.md").read_text()
    assert "teacher:" not in results and "| tiny\\|gpt2, Zero-shot | " in results
    assert "- teacher stub|teacher[/] on coins: 0 of 4 test questions answered; the rest are missing" in results

    # 2. Back, but one question is refused (HTTP 400): 3 of 4 answered, and the row says so.
    server.outage, server.fail_marker = None, questions[2]
    code, _, last = run()
    assert code == 2 and "3/4 chains complete; 1 items failed" in last
    assert server.count() == 1 + 4 + 3  # the four rationales asked again, three answers
    results = (out / "results.md").read_text()
    [row] = [line for line in _table_lines(results) if line.startswith("| teacher: stub\\|teacher[/], Zero-shot-CoT")]
    assert row.endswith(" (3 of 4 questions) |")
    assert "3 of 4 test questions answered (its row's accuracy is over those)" in results
    # A | in a name shifts no column: every line of the table has label + one task.
    assert {len(re.findall(r"(?<!\\)\|", line)) for line in _table_lines(results)} == {3}
    html = (out / "report.html").read_text()
    assert "(3 of 4 questions)" in html and "<th>teacher: stub|teacher[/], Zero-shot-CoT</th>" in html

    # An older ftcot wrote such a stage done.json; it still counts as not done.
    (teach_dir / DONE_FILE).write_text(json.dumps({"seconds": 1.0, "finished": 0, "note": "", "samples": 1,
                                                    "questions": None}))
    assert Experiment(load_config(path), out, data_root).done(teach) is None

    # 3. All back: only the missing item is asked for; the row covers every question; a rerun sends nothing.
    server.fail_marker = None
    code, stdout, _ = run()
    assert code == 0, outputs[-1][-2000:]
    assert server.count() == 8 + 2
    results = (out / "results.md").read_text()
    assert " of 4 questions" not in results and "| teacher: stub\\|teacher[/], Zero-shot-CoT | " in results
    assert json.loads((teach_dir / DONE_FILE).read_text())
    assert run()[0] == 0 and server.count() == 10

    # The URL's credentials were sent (the query after the path, the user as Basic auth) and shown nowhere.
    assert set(server.urls) == {f"/v1/completions?token={TOKEN}"}
    for secret in (PASSWORD, TOKEN):
        assert not any(secret in text for text in outputs), secret
        for file in out.rglob("*"):
            assert not file.is_file() or secret.encode() not in file.read_bytes(), f"{secret} in {file}"


@pytest.mark.parametrize("damaged", ["done.json", "report.json"])
def test_a_damaged_stage_record_is_a_one_line_error_naming_it(tmp_path, data_root, damaged):
    task_file, _ = _task_file(tmp_path, data_root, 2)
    config = {"name": "damaged", "tasks": [{"spec": str(task_file), "answer_type": "yes/no"}],
              "teachers": ["replay:text-davinci-002"], "methods": ["zs"], "students": ["tiny-gpt2"]}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(config))
    experiment = Experiment(load_config(path), tmp_path / "out", data_root)
    [teach] = experiment.plan.of_kind("teach")
    directory = experiment.stage_dir(teach)
    directory.mkdir(parents=True)
    (directory / DONE_FILE).write_text('{"seconds": 1.0, "samples": 1, "questions": null}')
    (directory / damaged).write_text('{"seconds": 1.0, "fail')  # cut off mid-write
    with pytest.raises(FtcotError) as error:
        experiment.done(teach)
    assert str(error.value).startswith(f"{directory / damaged}: truncated or unreadable")
    fix = "delete it and rerun" if damaged == DONE_FILE else f"delete {directory / DONE_FILE} and rerun"
    assert fix in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize(("base_url", "message"), [
    ("ftp://alice:pw-secret-7777@127.0.0.1:9/v1", "the base URL must be http(s)://host/…"),
    ("https://alice:pw-secret-7777@api.example.invalid/v1?token=tok-secret-8888",
     "Environment variable FTCOT_TEST_UNSET_KEY is not set"),
])
def test_a_teacher_that_cannot_be_reached_is_a_one_line_error_before_anything_runs(tmp_path, data_root, base_url,
                                                                                  message):
    task_file, _ = _task_file(tmp_path, data_root, 2)
    config = {"name": "unreachable", "tasks": [{"spec": str(task_file), "answer_type": "yes/no"}],
              "teachers": [{"spec": "openai:stub", "base_url": base_url, "api_key_env": "FTCOT_TEST_UNSET_KEY"}],
              "methods": ["zs"], "students": ["tiny-gpt2"]}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(config))
    result = run_ftcot("run", path, "--out", tmp_path / "out", "--data-dir", data_root)
    assert_one_line_error(result, "teach coins, openai:stub T=0: ", message)
    assert PASSWORD not in result.stderr and TOKEN not in result.stderr
    assert not (tmp_path / "out").exists()
