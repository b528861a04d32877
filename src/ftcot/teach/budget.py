"""One spending cap for a run directory: ``--max-cost`` is the total, whoever spends it.

What a run directory has spent is in its stores (the ``spending`` ledger of
:class:`ftcot.teach.store.TeachStore`, one row per paid request, committed with
its completions): every earlier invocation, adaptive round, rationalization,
batch and request loop. A :class:`Budget` starts from that total, so a cap of
$1.20 is $1.20 across all of them, and is never reset by running again.

Before a request is sent its cost is reserved at an upper bound (the prompt at
2 characters a token, every completion at its full ``max_tokens``); a request
whose reservation would take spent + reserved past the cap is not sent, and
no request after it (a cap is a promise about the whole run: skipping to
cheaper requests would make a run hard to reason about). What comes back is
charged at its real usage and the reservation released.
"""

from __future__ import annotations

import math
from pathlib import Path

from ftcot.teach.pricing import Price
from ftcot.teach.records import CompletionRequest

# Upper-bound prompt tokens for the reservation: real tokenizers rarely go below 2 characters per token.
RESERVE_CHARS_PER_TOKEN = 2


def reservation(request: CompletionRequest, price: Price | None) -> float:
    """An upper bound of what ``request`` can cost at ``price`` (0 for an unpriced teacher)."""
    if price is None:
        return 0.0
    return price.cost(math.ceil(len(request.prompt) / RESERVE_CHARS_PER_TOKEN), request.max_tokens * request.n)


class Budget:
    """The cap, what was spent before this invocation, and what this one has reserved and spent."""

    def __init__(self, cap: float | None, price: Price | None, spent_before: float = 0.0) -> None:
        self.cap, self.price = cap, price
        self.spent_before = spent_before
        self.spent = 0.0  # by this invocation
        self.reserved = 0.0  # for requests in flight
        self.exhausted = False  # a request was held back: nothing more is sent

    @property
    def total(self) -> float:
        """What the run directory has spent, this invocation included."""
        return self.spent_before + self.spent

    def reserve(self, request: CompletionRequest) -> float | None:
        """Reserve ``request``'s upper-bound cost; None (and exhausted from then on) when the cap forbids it."""
        if self.exhausted:
            return None
        amount = reservation(request, self.price)
        if self.cap is not None and self.total + self.reserved + amount > self.cap:
            self.exhausted = True
            return None
        self.reserved += amount
        return amount

    def release(self, amount: float) -> None:
        self.reserved -= amount

    def charge(self, prompt_tokens: int, completion_tokens: int) -> float:
        """Count a reply's real cost; returns it (what the ledger records)."""
        cost = self.price.cost(prompt_tokens, completion_tokens) if self.price is not None else 0.0
        self.spent += cost
        return cost

    def text(self) -> str:
        cap = f" of ${self.cap:g}" if self.cap is not None else ""
        before = f" (${self.spent_before:.4f} before this run)" if self.spent_before else ""
        return f"${self.total:.4f}{cap}{before}"


def run_root(store_dir: Path) -> Path:
    """The run directory a store belongs to: its own, or for rationalization's store its parent's."""
    from ftcot.teach.store import RATIONALIZE_DIR

    store_dir = Path(store_dir)
    return store_dir.parent if store_dir.name == RATIONALIZE_DIR else store_dir


def spent_in(run_dir: Path) -> float:
    """What every store of ``run_dir`` has recorded as spent (the run's, its rationalization's)."""
    from ftcot.teach.store import RATIONALIZE_DIR, STORE_FILE, TeachStore

    total = 0.0
    for path in (Path(run_dir) / STORE_FILE, Path(run_dir) / RATIONALIZE_DIR / STORE_FILE):
        if path.is_file():
            with TeachStore.open_readonly(path.parent) as store:
                total += store.spent_usd()
    return total
