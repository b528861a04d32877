"""A coin-flip teacher that is right with a known probability per question: a real HTTP server on 127.0.0.1.

Test double, and why: adaptive sampling and rationalization are about *which* questions a teacher gets
right and how often; a real small model (Gemma 3 270M on llama.cpp, used by the slow tests and the
measurements) takes minutes per run here and its accuracy is not known in advance. This server solves
coin flip for real (it counts the flips in the question) and then errs on purpose: a question's
difficulty (a hash of its text, 0–3) makes it right with probability 1, 1/2, 1/4 or 0, drawn from
(prompt, seed), so a test can compute what every sample says. Given a hint "(Hint: the answer is X.)",
it reasons to X, except on the hardest questions (difficulty 3), where it ignores the hint as a weak
teacher may. Stage 2 reads the answer out of the rationale in its prompt, as a real teacher would.
"""

from __future__ import annotations

import hashlib
import re

from aiohttp import web

from tests.teach.stub_openai import StubOpenAI

RIGHT_WITH = (1.0, 0.5, 0.25, 0.0)  # by difficulty
_HINT = re.compile(r"\(Hint: the answer is (yes|no)\.\)")
_SAID = re.compile(r"So the answer is (yes|no)")


def _unit(text: str) -> float:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) / 16 ** 8


def question_of(prompt: str) -> str:
    return prompt.split("Q: ", 1)[1].split("\nA:", 1)[0]


def difficulty(question: str) -> int:
    return int(hashlib.sha256(_HINT.sub("", question).strip().encode()).hexdigest()[:2], 16) % 4


def follows_hint(question: str) -> bool:
    """Whether a hint about ``question`` turns the teacher's answer (not on the hardest questions)."""
    return difficulty(question) < 3


def gold(question: str) -> str:
    return "yes" if question.count(" flips the coin") % 2 == 0 else "no"


def sampled_answer(question: str, seed: int | None) -> str:
    """What the teacher's rationale for ``question`` concludes with this seed (None: greedy)."""
    hint = _HINT.search(question)
    if hint and follows_hint(question):
        return hint.group(1)
    right = gold(question)
    p = RIGHT_WITH[difficulty(question)]
    draw = 0.5 if seed is None else _unit(f"{question}|{seed}")
    return right if draw < p else ("no" if right == "yes" else "yes")


def expected_samples(question: str, until_correct: int, max_samples: int) -> int:
    """How many samples adaptive sampling draws for ``question`` from this teacher."""
    correct = 0
    for m in range(max_samples):
        correct += sampled_answer(question, m) == gold(question)
        if correct >= until_correct:
            return m + 1
    return max_samples


def rationale(question: str, seed: int | None) -> str:
    flips = question.count(" flips the coin")
    return f" The coin is flipped {flips} times. So the answer is {sampled_answer(question, seed)}. ({seed})"


class CoinTeacher(StubOpenAI):
    async def _complete(self, request: web.Request) -> web.Response:
        body = await request.json()
        with self._lock:
            self.bodies.append(body)
        prompt = body["prompt"]
        if prompt.rstrip().endswith(" is"):  # stage 2: read the rationale's conclusion
            said = _SAID.findall(prompt)
            text = f" {said[-1]}." if said else " unknown."
        else:
            text = rationale(question_of(prompt), body.get("seed") if body.get("temperature") else None)
        usage = {"prompt_tokens": len(prompt) // 4, "completion_tokens": 8}
        return web.json_response({"object": "text_completion", "usage": usage,
                                  "choices": [{"index": 0, "text": text, "finish_reason": "stop"}]})
