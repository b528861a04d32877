"""The teach engine against a replay teacher and a real OpenAI-compatible HTTP server on 127.0.0.1."""

from __future__ import annotations

import collections
import json

import pytest

from ftcot.errors import FtcotError
from ftcot.jsonl import read_jsonl
from ftcot.scoring import score
from ftcot.tasks import Task, get_spec, load_task
from ftcot.teach.backends import make_teacher
from ftcot.teach.backends.openai_compat import OpenAICompatTeacher
from ftcot.teach.engine import teach
from ftcot.teach.export import export
from ftcot.teach.pricing import Price, PriceTable
from ftcot.teach.records import Completion, CompletionRequest, TeacherError
from ftcot.teach.report import report_from_export, report_from_store
from ftcot.teach.store import TeachStore
from tests.conftest import TEACHER_DIR
from tests.teach.stub_openai import StubOpenAI


def small_task(data_root, n: int = 4, key: str = "coin_flip") -> Task:
    """The first ``n`` test questions of a task, as a task of their own."""
    full = load_task(key, data_root)
    indices = full.split_indices("test")[:n]
    return Task(full.spec, {i: full.samples[i] for i in indices}, {"default": {"train": [], "test": indices}},
                data_root)


def stub_teacher(server: StubOpenAI, supports_n: bool | None = False) -> OpenAICompatTeacher:
    return OpenAICompatTeacher("stub", base_url=server.base_url, supports_n=supports_n, max_retries=0)


def recorded_accuracy(key: str, method: str, split: str, data_root) -> float:
    indices = set(load_task(key, data_root).split_indices(split))
    results = [score(r["answer_completion"], r["answer"], get_spec(key), method, "paper").correct
               for _, r in read_jsonl(TEACHER_DIR / method / f"{key}.jsonl") if r["sample_index"] in indices]
    return sum(results) / len(results)


# -- replay -----------------------------------------------------------------------------------


def test_replay_reproduces_the_recorded_accuracy_and_a_rerun_sends_nothing(tmp_path, data_root):
    task = load_task("coin_flip", data_root)
    with TeachStore.open(tmp_path) as store:
        summary = teach(task, "test", make_teacher("replay:text-davinci-002", data_root=data_root), "zs_cot",
                        store=store)
        assert (summary.requests, summary.new, summary.failed, summary.complete_chains) == (300, 300, 0, 150)
        report = report_from_store(store)
        assert report.accuracy == pytest.approx(recorded_accuracy("coin_flip", "zs_cot", "test", data_root))
        assert report.scored == report.questions == 150
        assert report.truncation_rate is None  # recorded outputs carry no finish reason
        again = teach(task, "test", make_teacher("replay:text-davinci-002", data_root=data_root), "zs_cot",
                      store=store)
        assert (again.requests, again.cached, again.complete_chains) == (0, 300, 150)


def test_replay_export_is_the_shared_format_record_for_record(tmp_path, data_root):
    task = load_task("coin_flip", data_root)
    with TeachStore.open(tmp_path) as store:
        teach(task, "test", make_teacher("replay:text-davinci-002", data_root=data_root), "zs_cot", store=store)
        result = export(store, tmp_path / "out.jsonl")
    assert (result.written, result.incomplete) == (150, 0)
    recorded = {r["sample_index"]: r for _, r in read_jsonl(TEACHER_DIR / "zs_cot" / "coin_flip.jsonl")}
    exported = [r for _, r in read_jsonl(tmp_path / "out.jsonl")]
    assert [r["sample_index"] for r in exported] == sorted(task.split_indices("test"))
    for record in exported:
        assert {k: record[k] for k in recorded[record["sample_index"]]} == recorded[record["sample_index"]]
        assert (record["sample_number"], record["teacher"], record["method"], record["split"]) == (
            0, "replay:text-davinci-002", "zs_cot", "test")
    from_export = report_from_export(tmp_path / "out.jsonl", get_spec("coin_flip"))
    assert from_export.accuracy == pytest.approx(recorded_accuracy("coin_flip", "zs_cot", "test", data_root))


def test_replay_zero_shot_reproduces_the_recorded_accuracy(tmp_path, data_root):
    task = load_task("strategy_qa", data_root)
    with TeachStore.open(tmp_path) as store:
        summary = teach(task, "test", make_teacher("replay:text-davinci-002", data_root=data_root), "zs",
                        store=store)
        assert summary.complete_chains == len(task.split_indices("test"))
        report = report_from_store(store)
    assert report.accuracy == pytest.approx(recorded_accuracy("strategy_qa", "zs", "test", data_root))
    assert report.distinct_per_question is None


@pytest.mark.parametrize("key,first,second", [("multiarith", 340, 350), ("strategy_qa", 42, 1987)])
def test_replay_answers_questions_with_the_same_text_from_their_own_records(tmp_path, data_root, key, first,
                                                                            second):
    full = load_task(key, data_root)
    assert full.samples[first].question == full.samples[second].question
    task = Task(full.spec, {i: full.samples[i] for i in (first, second)},
                {"default": {"train": [], "test": [first, second]}}, data_root)
    with TeachStore.open(tmp_path) as store:
        summary = teach(task, "test", make_teacher("replay:text-davinci-002", data_root=data_root), "zs_cot",
                        store=store)
        assert (summary.requests, summary.complete_chains) == (4, 2)
        export(store, tmp_path / "out.jsonl")
    recorded = {r["sample_index"]: r for _, r in read_jsonl(TEACHER_DIR / "zs_cot" / f"{key}.jsonl")}
    assert recorded[first]["reasoning_completion"] != recorded[second]["reasoning_completion"]
    for _, record in read_jsonl(tmp_path / "out.jsonl"):
        expected = recorded[record["sample_index"]]
        assert (record["reasoning_completion"], record["answer_completion"]) == (
            expected["reasoning_completion"], expected["answer_completion"])


def test_replay_refuses_sampling_before_anything_is_stored(tmp_path, data_root):
    with TeachStore.open(tmp_path) as store:
        with pytest.raises(FtcotError, match="cannot sample") as info:
            teach(small_task(data_root), "test", make_teacher("replay:text-davinci-002", data_root=data_root),
                  "zs_cot", samples=2, temperature=0.7, store=store)
        assert "\n" not in str(info.value)
        assert store.count() == 0 and store.last_run() is None


def test_an_unrecorded_prompt_fails_that_item_and_the_run_goes_on(tmp_path, data_root):
    task = small_task(data_root)
    first = min(task.samples)
    task.samples[first] = type(task.samples[first])(first, "A question nobody recorded?", "yes")
    with TeachStore.open(tmp_path) as store:
        summary = teach(task, "test", make_teacher("replay:text-davinci-002", data_root=data_root), "zs_cot",
                        store=store)
        assert (summary.failed, summary.complete_chains, summary.new) == (1, 3, 6)
        (failure,) = store.failures()
        assert failure.sample_index == first and "no recorded completion" in failure.message
        assert report_from_store(store).failures == 1


# -- a live OpenAI-compatible server ------------------------------------------------------------


def stage_requests(server: StubOpenAI) -> tuple[list[dict], list[dict]]:
    bodies = server.requests()
    stage1 = [b for b in bodies if b["prompt"].endswith("Let's think step by step.")]
    return stage1, [b for b in bodies if b not in stage1]


def test_diverse_reasoning_top_up_sends_only_the_missing_samples(tmp_path, data_root, stub):
    server = stub()
    task = small_task(data_root)
    with TeachStore.open(tmp_path) as store:
        summary = teach(task, "test", stub_teacher(server), "zs_cot", samples=2, temperature=0.7, store=store)
        assert (summary.requests, summary.complete_chains) == (16, 8)
        stage1, stage2 = stage_requests(server)
        assert sorted(b["seed"] for b in stage1) == [0, 0, 0, 0, 1, 1, 1, 1]
        assert all("n" not in b for b in stage1)  # one request per sample: each its own seed
        assert all(b["temperature"] == 0 and "seed" not in b and b["max_tokens"] == 32 for b in stage2)

        top_up = teach(task, "test", stub_teacher(server), "zs_cot", samples=3, temperature=0.7, store=store)
        assert (top_up.requests, top_up.cached, top_up.complete_chains) == (8, 16, 12)
        stage1, _ = stage_requests(server)
        assert sorted(b["seed"] for b in stage1[8:]) == [2, 2, 2, 2]
        assert server.count() == 24 and len(set(server.body_hashes())) == 24  # nothing sent twice

        report = report_from_store(store)
        assert report.distinct_per_question == 3 and report.scored == 12
        export(store, tmp_path / "out.jsonl")
        rationales = collections.defaultdict(set)
        for _, record in read_jsonl(tmp_path / "out.jsonl"):
            rationales[record["sample_index"]].add(record["reasoning_completion"])
        assert [len(v) for v in rationales.values()] == [3, 3, 3, 3]


def test_a_teacher_that_supports_n_gets_one_request_per_question(tmp_path, data_root, stub):
    server = stub(honour_n=True)
    task = small_task(data_root)
    with TeachStore.open(tmp_path) as store:
        teach(task, "test", stub_teacher(server, supports_n=True), "zs_cot", samples=2, temperature=0.7,
              store=store)
        stage1, _ = stage_requests(server)
        assert [(b["n"], b["seed"]) for b in stage1] == [(2, 0)] * 4
        summary = teach(task, "test", stub_teacher(server, supports_n=True), "zs_cot", samples=4,
                        temperature=0.7, store=store)
        stage1, _ = stage_requests(server)
        assert [(b["n"], b["seed"]) for b in stage1[4:]] == [(2, 2)] * 4  # n = the missing count
        assert summary.complete_chains == 16
        # The prompt is billed once per request, not once per choice.
        prompt_tokens = sum(len(b["prompt"]) // 4 for b in server.requests())
        assert store.totals()[0] == prompt_tokens


def test_identical_rationales_share_one_paid_answer(tmp_path, data_root, stub):
    server = stub(same_rationale=True)
    with TeachStore.open(tmp_path) as store:
        summary = teach(small_task(data_root), "test", stub_teacher(server), "zs_cot", samples=3, temperature=0.7,
                        store=store)
    stage1, stage2 = stage_requests(server)
    assert (len(stage1), len(stage2)) == (12, 4)
    assert summary.complete_chains == 12


def test_a_teacher_error_stops_the_item_not_the_run_and_is_retried_later(tmp_path, data_root, stub):
    task = small_task(data_root)
    refused = task.samples[min(task.samples)].question
    server = stub(fail_marker=refused)
    with TeachStore.open(tmp_path) as store:
        summary = teach(task, "test", stub_teacher(server), "zs_cot", store=store)
        assert (summary.failed, summary.complete_chains, summary.requests) == (1, 3, 7)
        (failure,) = store.failures()
        assert failure.status == 400 and not failure.retryable and "refused" in failure.message
        again = teach(task, "test", stub_teacher(server), "zs_cot", store=store)
        assert (again.requests, again.failed) == (1, 1)  # only the failed item is asked again


def test_max_cost_stops_before_the_cap_and_keeps_everything(tmp_path, data_root, stub):
    server = stub(completion_tokens=5)
    prices = PriceTable({"stub": Price(prompt=0.0, completion=1_000_000.0)})  # $1 per completion token
    task = small_task(data_root, n=6)
    with TeachStore.open(tmp_path) as store:
        summary = teach(task, "test", stub_teacher(server), "zs", max_tokens=10, concurrency=3, max_cost=32.0,
                        store=store, prices=prices)
        # Each request is reserved at $10 (max_tokens) and costs $5: five fit under $32 with three in flight.
        assert summary.stopped_by_cost_cap and summary.cost_usd <= 32.0
        assert summary.requests == server.count() == store.count() < 6
        assert summary.cost_usd == pytest.approx(5.0 * summary.requests)
        assert summary.not_sent >= 1
        finished = teach(task, "test", stub_teacher(server), "zs", max_tokens=10, max_cost=100.0, store=store,
                         prices=prices)
        assert finished.complete_chains == 6 and not finished.stopped_by_cost_cap
    assert server.count() == 6 and len(set(server.body_hashes())) == 6


def test_max_cost_needs_a_price(tmp_path, data_root, stub):
    server = stub()
    with TeachStore.open(tmp_path) as store, pytest.raises(FtcotError, match="--prices"):
        teach(small_task(data_root), "test", stub_teacher(server), "zs", max_cost=1.0, store=store)
    assert server.count() == 0


def test_dry_run_sends_and_writes_nothing_and_counts_what_a_run_sends(tmp_path, data_root, stub):
    server = stub()
    task = small_task(data_root)
    prices = PriceTable({"stub": Price(1.0, 2.0)})
    dry = teach(task, "test", stub_teacher(server), "zs_cot", samples=2, temperature=0.7, store=None,
                dry_run=True, prices=prices)
    assert server.count() == 0 and not (tmp_path / "run").exists()
    assert dry.estimated_requests == 16 and dry.estimated_completion_tokens == 8 * 128 + 8 * 32
    assert dry.estimated_cost_usd == pytest.approx((dry.estimated_prompt_tokens * 1 + dry.estimated_completion_tokens * 2) / 1e6)
    with TeachStore.open(tmp_path / "run") as store:
        real = teach(task, "test", stub_teacher(server), "zs_cot", samples=2, temperature=0.7, store=store)
        assert real.requests == dry.estimated_requests
        topped = teach(task, "test", stub_teacher(server), "zs_cot", samples=3, temperature=0.7, store=store,
                       dry_run=True)
    assert topped.estimated_requests == 8 and topped.complete_chains == 8 and server.count() == 16


def test_few_shot_cot_sends_exemplars_and_stops_at_the_next_question(tmp_path, data_root, stub):
    server = stub()
    task = small_task(data_root)
    with TeachStore.open(tmp_path) as store:
        summary = teach(task, "test", stub_teacher(server), "fs_cot", store=store)
        assert summary.complete_chains == 4
        (body, *_) = server.requests()
        assert body["prompt"].startswith("Q: ") and body["prompt"].endswith("\nA:")
        assert "The answer is" in body["prompt"] and body["stop"] == ["\nQ:"] and body["max_tokens"] == 128
        assert report_from_store(store).method == "fs_cot"


def test_few_shot_cot_for_shuffled_objects_is_a_clear_error(tmp_path, data_root, stub):
    server = stub()
    with pytest.raises(FtcotError, match="No Few-shot-CoT exemplars"):
        teach(small_task(data_root, key="tracking_shuffled_objects"), "test", stub_teacher(server), "fs_cot",
              store=None, dry_run=True)


@pytest.mark.parametrize(("options", "message"), [
    ({"samples": 2}, "same greedy rationale"),
    ({"method": "zs", "temperature": 0.7}, "apply to zs_cot and ft_cot only"),
    ({"method": "nope"}, "Unknown method 'nope'"),
    ({"samples": 0}, "at least 1"),
    ({"concurrency": 0}, "at least 1"),
])
def test_settings_that_would_waste_money_are_refused(tmp_path, data_root, stub, options, message):
    server = stub()
    options = {"method": "zs_cot", **options}
    with pytest.raises(FtcotError, match=message):
        teach(small_task(data_root), "test", stub_teacher(server), store=None, dry_run=True, **options)


def test_a_run_directory_keeps_one_task_teacher_and_method(tmp_path, data_root, stub):
    server = stub()
    with TeachStore.open(tmp_path) as store:
        teach(small_task(data_root), "test", stub_teacher(server), "zs", store=store)
        with pytest.raises(FtcotError, match="method 'zs'"):
            teach(small_task(data_root), "test", stub_teacher(server), "zs_cot", store=store)


class LeakyTeacher:
    """A backend whose error quotes the key, as some servers do; the engine must scrub it."""

    name = "openai:leaky"
    supports_n = False

    async def complete(self, request: CompletionRequest) -> list[Completion]:
        raise TeacherError("Incorrect API key provided: sk-test-SECRET123", status=401)

    async def aclose(self) -> None:
        return None


def test_secrets_are_scrubbed_from_stored_failures(tmp_path, data_root):
    with TeachStore.open(tmp_path) as store:
        summary = teach(small_task(data_root, n=1), "test", LeakyTeacher(), "zs", store=store,
                        secrets=["sk-test-SECRET123"])
        assert summary.failed == 1
        assert "SECRET" not in store.failures()[0].message
        assert "SECRET" not in json.dumps(summary.to_json())


def test_an_export_replays_as_a_teacher(tmp_path, data_root):
    task = small_task(data_root)
    with TeachStore.open(tmp_path / "a") as store:
        teach(task, "test", make_teacher("replay:text-davinci-002", data_root=data_root), "zs_cot", store=store)
        export(store, tmp_path / "a.jsonl")
    with TeachStore.open(tmp_path / "b") as store:
        summary = teach(task, "test", make_teacher(f"replay:{tmp_path / 'a.jsonl'}"), "zs_cot", store=store)
        export(store, tmp_path / "b.jsonl")
    assert summary.complete_chains == 4 and summary.teacher == "replay:a"
    strip = lambda path: [{k: v for k, v in r.items() if k != "teacher"} for _, r in read_jsonl(path)]  # noqa: E731
    assert strip(tmp_path / "a.jsonl") == strip(tmp_path / "b.jsonl")


# -- teacher specs and prices ----------------------------------------------------------------------


def test_unknown_teacher_scheme_lists_the_valid_ones():
    with pytest.raises(FtcotError, match="Valid: openai:MODEL, hf:MODEL_OR_PATH, replay:NAME_OR_PATH"):
        make_teacher("anthropic:claude")
    with pytest.raises(FtcotError, match="apply to openai: teachers"):
        make_teacher("replay:text-davinci-002", base_url="http://127.0.0.1:1/v1")


def test_prices_come_from_the_table_the_user_file_and_free_schemes(tmp_path):
    table = PriceTable()
    assert table.price_for("openai:gpt-4o-mini") == Price(0.15, 0.60)
    assert table.price_for("openai:gpt-4o-mini-2024-07-18") == Price(0.15, 0.60)  # a dated snapshot
    assert table.price_for("hf:gemma-270m") == table.price_for("replay:text-davinci-002") == Price(0, 0)
    assert table.price_for("openai:my-local-model") is None
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"my-local-model": [0, 0], "gpt-4o-mini": {"prompt": 1, "completion": 2}}))
    table = PriceTable.load(prices)
    assert table.price_for("openai:my-local-model") == Price(0, 0)
    assert table.price_for("openai:gpt-4o-mini").cost(1_000_000, 500_000) == pytest.approx(2.0)
    prices.write_text(json.dumps({"m": {"prompt": -1, "completion": 2}}))
    with pytest.raises(FtcotError, match="non-negative"):
        PriceTable.load(prices)
    prices.write_text("{not json")
    with pytest.raises(FtcotError, match="not valid JSON"):
        PriceTable.load(prices)


# -- outages ------------------------------------------------------------------------------------


@pytest.mark.parametrize("outage", [500, 503, "garbage"])
def test_an_outage_fails_every_item_and_the_next_run_asks_for_them_again(tmp_path, data_root, stub, outage):
    server = stub(outage=outage)
    task = small_task(data_root)
    with TeachStore.open(tmp_path) as store:
        down = teach(task, "test", stub_teacher(server), "zs_cot", store=store)
        assert (down.requests, down.new, down.failed, down.complete_chains) == (4, 0, 4, 0)
        assert "0/4 chains complete; 4 items failed this run" in down.failure_line()
        assert {f.retryable for f in store.failures()} == {outage != "garbage"}  # a web page is not a blip
        server.outage = None  # the server is back
        back = teach(task, "test", stub_teacher(server), "zs_cot", store=store)
        assert (back.requests, back.new, back.failed, back.complete_chains) == (8, 8, 0, 4)
    assert server.count() == 4 + 8


@pytest.mark.parametrize("status", [401, 403])
def test_refused_credentials_stop_the_run_after_one_request(tmp_path, data_root, stub, status):
    server = stub(outage=status)
    with TeachStore.open(tmp_path) as store:
        summary = teach(small_task(data_root), "test", stub_teacher(server), "zs_cot", concurrency=1, store=store)
    assert (summary.requests, summary.failed, summary.not_sent) == (1, 1, 3)
    assert summary.credentials_refused and server.count() == 1
    assert "check the API key" in summary.failure_line() and f"HTTP {status}" in summary.failure_line()
    assert any("refused the credentials" in line for line in summary.lines())
