"""What teacher calls cost, and a rough token count for estimates before any call.

Prices are USD per 1M tokens (prompt, completion). The built-in table holds
OpenAI's list prices for common models as published in 2025; they change, so
``--prices FILE`` overrides or extends it with a JSON object::

    {"gpt-4o-mini": {"prompt": 0.15, "completion": 0.60},
     "my-model": [1.0, 2.0]}

Local and replayed teachers (``hf:``, ``replay:``) cost 0. A model found in
neither table has no price: its cost shows as unknown, and ``--max-cost``
refuses to run rather than guess.

Token estimates (``--dry-run``, and the in-flight reservation behind
``--max-cost``) use 4 characters per token, the usual rule of thumb for
English with GPT-style tokenizers; real counts come from the backend's usage
numbers once a reply arrives.

Batch runs (``ftcot teach --batch``) are priced by :meth:`PriceTable.batch_prices`:
half of each price, OpenAI's batch discount (a ``--prices`` file gives list prices).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from ftcot.errors import FtcotError

CHARS_PER_TOKEN = 4


@dataclass(frozen=True)
class Price:
    prompt: float  # USD per 1M prompt tokens
    completion: float  # USD per 1M completion tokens

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.prompt + completion_tokens * self.completion) / 1_000_000


FREE = Price(0.0, 0.0)

BUILTIN_PRICES: dict[str, Price] = {
    "gpt-4o": Price(2.50, 10.00),
    "gpt-4o-mini": Price(0.15, 0.60),
    "gpt-4.1": Price(2.00, 8.00),
    "gpt-4.1-mini": Price(0.40, 1.60),
    "gpt-4.1-nano": Price(0.10, 0.40),
    "gpt-4-turbo": Price(10.00, 30.00),
    "gpt-4": Price(30.00, 60.00),
    "gpt-3.5-turbo": Price(0.50, 1.50),
    "gpt-3.5-turbo-instruct": Price(1.50, 2.00),
    "davinci-002": Price(2.00, 2.00),
    "babbage-002": Price(0.40, 0.40),
    "o3-mini": Price(1.10, 4.40),
    "o4-mini": Price(1.10, 4.40),
    # The paper's teacher, retired in 2024; its last price was $0.02 per 1K tokens.
    "text-davinci-002": Price(20.00, 20.00),
}

# Teacher name prefixes that never bill anyone.
_FREE_SCHEMES = ("hf:", "replay:")


# Batch APIs (OpenAI's /v1/batches, results within 24 h) bill half the list price.
BATCH_DISCOUNT = 0.5


def estimate_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


class PriceTable:
    def __init__(self, prices: dict[str, Price] | None = None) -> None:
        self.prices = dict(BUILTIN_PRICES)
        self.prices.update(prices or {})

    @classmethod
    def load(cls, path: Path | None) -> PriceTable:
        return cls(read_price_file(path) if path else None)

    def batch_prices(self) -> PriceTable:
        """The same table at batch prices (``BATCH_DISCOUNT`` of every price; free stays free)."""
        return PriceTable({name: Price(p.prompt * BATCH_DISCOUNT, p.completion * BATCH_DISCOUNT)
                           for name, p in self.prices.items()})

    def price_for(self, teacher_name: str) -> Price | None:
        """The price of a teacher by its name (``openai:gpt-4o-mini`` or ``gpt-4o-mini``), or None."""
        if teacher_name.startswith(_FREE_SCHEMES):
            return FREE
        model = teacher_name.split(":", 1)[1] if teacher_name.startswith("openai:") else teacher_name
        if model in self.prices:
            return self.prices[model]
        # Dated snapshots ("gpt-4o-mini-2024-07-18") cost what their family costs:
        # the longest table entry the name starts with.
        families = [name for name in self.prices if model.startswith(name + "-")]
        return self.prices[max(families, key=len)] if families else None


def read_price_file(path: Path) -> dict[str, Price]:
    try:
        table = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise FtcotError(f"{path}: cannot read the price file ({exc.strerror}).") from None
    except json.JSONDecodeError as exc:
        raise FtcotError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}).") from None
    except UnicodeDecodeError:
        raise FtcotError(f"{path}: not UTF-8 text; the price file is JSON, saved as UTF-8.") from None
    if not isinstance(table, dict):
        raise FtcotError(f"{path}: expected a JSON object mapping model names to prices.")
    prices = {}
    for model, value in table.items():
        if isinstance(value, dict) and set(value) == {"prompt", "completion"}:
            pair = (value["prompt"], value["completion"])
        elif isinstance(value, list) and len(value) == 2:
            pair = tuple(value)
        else:
            raise FtcotError(f"{path}: price of '{model}' must be {{\"prompt\": USD, \"completion\": USD}} "
                             f"per 1M tokens, or [prompt, completion].")
        # JSON's 1e400 reads as infinity: a price of inf would make every budget check pass or fail at once.
        if not all(isinstance(p, (int, float)) and not isinstance(p, bool) and 0 <= p < math.inf for p in pair):
            raise FtcotError(f"{path}: price of '{model}' must be non-negative numbers (USD per 1M tokens), finite.")
        prices[model] = Price(float(pair[0]), float(pair[1]))
    return prices
