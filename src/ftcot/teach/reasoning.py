"""Reasoning-model teachers: the reasoning apart from the visible answer, and which becomes the rationale.

A reasoning model returns its reasoning either apart from the answer
(``reasoning_content`` in a chat reply, as DeepSeek's API and vLLM's reasoning
parsers return it; stored raw in the ``reasoning`` column) or inside the text,
``<think>…</think>`` before the answer (or only ``…</think>`` when the chat
template opened the block in the prompt, as DeepSeek-R1's does). The store
keeps the reply raw; these pure functions split it when it is read:

- stage 2 of Zero-shot-CoT always reads the visible answer (what the model
  concluded), so its prompt, and its key, do not depend on the option below;
- the rationale a chain exports (and curation trains on) is, by the teacher's
  ``rationale`` option: ``answer`` (the visible answer, the default), ``reasoning``
  (the reasoning; the visible answer when there is none) or ``both`` (the
  reasoning, a blank line, the visible answer).

Changing the option therefore changes what is exported, never what is asked:
a rerun with another ``--rationale`` sends no request.
A reply without reasoning reads the same under every option, exactly as stored.
"""

from __future__ import annotations

from ftcot.errors import unknown_name

RATIONALE_SOURCES = ("answer", "reasoning", "both")
_OPEN, _CLOSE = "<think>", "</think>"


def check_rationale_source(value: str) -> str:
    if value not in RATIONALE_SOURCES:
        raise unknown_name("rationale", value, RATIONALE_SOURCES)
    return value


def split_reasoning(text: str, reasoning: str | None = None) -> tuple[str | None, str]:
    """``(reasoning, visible answer)`` of a reply; reasoning None when it has none.

    The visible answer keeps the text's own form when nothing was taken out; when
    a think block was, it is the rest, stripped and led by one space (how a
    completion continues "Let's think step by step.").
    """
    found: str | None = None
    rest = text
    start = text.find(_OPEN)
    end = text.find(_CLOSE)
    if start != -1 and (end == -1 or start < end) and not text[:start].strip():
        if end == -1:  # cut off while thinking: all of it is reasoning, nothing was concluded
            found, rest = text[start + len(_OPEN):], ""
        else:
            found, rest = text[start + len(_OPEN):end], text[end + len(_CLOSE):]
    elif end != -1 and (start == -1 or end < start):  # the block was opened by the prompt
        found, rest = text[:end], text[end + len(_CLOSE):]
    if reasoning is not None and reasoning.strip():
        found = reasoning if found is None else f"{reasoning.strip()}\n\n{found.strip()}"
    elif found is None:
        return None, text
    answer = rest.strip()
    return found.strip(), (" " + answer) if answer else ""


def visible_answer(text: str, reasoning: str | None = None) -> str:
    """The answer the model showed (the text itself when it carries no reasoning)."""
    return split_reasoning(text, reasoning)[1]


def rationale_text(text: str, reasoning: str | None, source: str) -> str:
    """The rationale a chain exports under the teacher's ``rationale`` option (see the module docstring)."""
    found, answer = split_reasoning(text, reasoning)
    if not found or source == "answer":
        return answer
    if source == "reasoning" or not answer.strip():
        return " " + found
    return f" {found}\n\n{answer.strip()}"
