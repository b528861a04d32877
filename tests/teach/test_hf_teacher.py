"""The hf: teacher: concurrent requests become one batched generation (tiny GPT-2; Gemma, slow)."""

from __future__ import annotations

import asyncio

import pytest

from ftcot.errors import FtcotError
from ftcot.models import GenerationRequest, generate, load_model
from ftcot.teach.backends import make_teacher
from ftcot.teach.backends.hf import HFTeacher
from ftcot.teach.records import CompletionRequest, TeacherError

QUESTIONS = [f"Q: A coin is heads up. Person {i} flips the coin. Is it still heads up?\nA: Let's think step by step."
             for i in range(10)]


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny-gpt2", dtype="float32", device="cpu")


def _run(teacher: HFTeacher, requests: list[CompletionRequest]):
    async def main():
        try:
            return await asyncio.gather(*(teacher.complete(r) for r in requests), return_exceptions=True)
        finally:
            await teacher.aclose()

    return asyncio.run(main())


def test_concurrent_requests_run_as_one_batch_with_the_same_text_as_direct_generation(tiny):
    teacher = HFTeacher("tiny-gpt2", loaded=tiny, batch_size=8, max_wait_s=0.05)
    requests = [CompletionRequest(q, max_tokens=10) for q in QUESTIONS[:8]]

    results = _run(teacher, requests)

    assert teacher.batches == [8]
    direct = generate(tiny, [r.prompt for r in requests], max_new_tokens=10)
    for (completion,), expected in zip(results, direct):
        assert (completion.text, completion.finish_reason) == (expected.text, expected.finish_reason)
        assert (completion.prompt_tokens, completion.completion_tokens) == (expected.prompt_tokens, 10)
        assert completion.latency_s > 0


def test_batches_never_exceed_batch_size(tiny):
    teacher = HFTeacher("tiny-gpt2", loaded=tiny, batch_size=4, max_wait_s=0.05)
    results = _run(teacher, [CompletionRequest(q, max_tokens=4) for q in QUESTIONS])

    assert teacher.batches == [4, 4, 2]
    assert all(len(r) == 1 for r in results)


def test_n_choices_are_seeded_samples_matching_consecutive_seeds(tiny):
    teacher = HFTeacher("tiny-gpt2", loaded=tiny, batch_size=16)
    many, again, second, greedy = _run(teacher, [
        CompletionRequest(QUESTIONS[0], max_tokens=12, temperature=1.0, n=4, seed=100),
        CompletionRequest(QUESTIONS[0], max_tokens=12, temperature=1.0, n=4, seed=100),
        CompletionRequest(QUESTIONS[0], max_tokens=12, temperature=1.0, n=1, seed=101),
        CompletionRequest(QUESTIONS[0], max_tokens=12, n=2),
    ])

    assert len(many) == 4
    assert [c.text for c in many] == [c.text for c in again]  # reproducible per request seed
    assert len({c.text for c in many}) > 1  # n independent samples, not one text n times
    assert many[1].text == second[0].text  # choice k of seed s is choice 0 of seed s + k
    assert len(greedy) == 2 and greedy[0].text == greedy[1].text
    assert teacher.batches == [10]  # 4 + 4 + 1 sampled rows, and the greedy text generated once


def test_stop_strings_and_max_tokens_are_per_request(tiny):
    free = generate(tiny, [GenerationRequest(QUESTIONS[1], 16, 1.0, seed)
                           for seed in range(20)])
    seed, text = next((s, g.text) for s, g in enumerate(free) if len(g.text) >= 8 and len(set(g.text[:6])) >= 4)
    stop = text[4:6]
    teacher = HFTeacher("tiny-gpt2", loaded=tiny)
    cut, short = _run(teacher, [
        CompletionRequest(QUESTIONS[1], max_tokens=16, temperature=1.0, seed=seed, stop=(stop,)),
        CompletionRequest(QUESTIONS[2], max_tokens=3),
    ])

    assert (cut[0].text, cut[0].finish_reason) == (text[:text.index(stop)], "stop")
    assert (short[0].completion_tokens, short[0].finish_reason) == (3, "length")


def test_a_request_the_model_cannot_run_fails_alone(tiny):
    teacher = HFTeacher("tiny-gpt2", loaded=tiny)
    too_long, fine = _run(teacher, [
        CompletionRequest("x" * 2100, max_tokens=8),
        CompletionRequest(QUESTIONS[0], max_tokens=8),
    ])

    assert isinstance(too_long, TeacherError) and not too_long.retryable
    assert "exceed tiny-gpt2's 2048 positions" in str(too_long)
    assert fine[0].completion_tokens == 8


def test_the_model_loads_on_first_use_and_a_closed_teacher_refuses(tiny):
    teacher = make_teacher("hf:tiny-gpt2", dtype="float32", batch_size=2)
    assert isinstance(teacher, HFTeacher)
    assert (teacher.name, teacher.supports_n) == ("hf:tiny-gpt2", True)

    async def main():
        first = await teacher.complete(CompletionRequest(QUESTIONS[0], max_tokens=5))
        await teacher.aclose()
        with pytest.raises(TeacherError, match="closed"):
            await teacher.complete(CompletionRequest(QUESTIONS[0], max_tokens=5))
        return first

    first = asyncio.run(main())
    assert first[0].text == generate(tiny, [QUESTIONS[0]], max_new_tokens=5)[0].text


def test_closing_fails_the_requests_still_waiting_and_running(tiny):
    teacher = HFTeacher("tiny-gpt2", loaded=tiny, batch_size=1)

    async def main():
        running = asyncio.create_task(teacher.complete(CompletionRequest(QUESTIONS[0], max_tokens=40)))
        waiting = asyncio.create_task(teacher.complete(CompletionRequest(QUESTIONS[1], max_tokens=40)))
        while not teacher._running:
            await asyncio.sleep(0.001)
        await teacher.aclose()
        return await asyncio.gather(running, waiting, return_exceptions=True)

    results = asyncio.run(main())
    assert all(isinstance(r, TeacherError) and r.retryable and "closed" in str(r) for r in results)


def test_an_unknown_model_is_refused_when_the_teacher_is_built_with_the_fix():
    # Once, up front: not as a failed item on every request of the run.
    with pytest.raises(FtcotError, match="Did you mean 'tiny-gpt2'"):
        HFTeacher("tiny-gtp2")


@pytest.mark.slow
def test_gemma_270m_teacher_answers_greedily():
    teacher = HFTeacher("gemma-270m")
    prompt = "Q: Tom has 3 apples and buys 2 more. How many apples does he have?\nA: Let's think step by step."
    first, second = _run(teacher, [CompletionRequest(prompt, max_tokens=16), CompletionRequest(prompt, max_tokens=16)])

    assert teacher.batches == [2]
    assert first[0].text == second[0].text and first[0].text.strip()
    assert first[0].finish_reason in ("stop", "length") and 0 < first[0].completion_tokens <= 16
    print(repr(first[0].text))
