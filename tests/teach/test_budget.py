"""One budget per run directory: --max-cost caps adaptive rounds, rationalization and later invocations together.

The dollars are counted at the server: every request the stub OpenAI server
(a real HTTP server on 127.0.0.1, tests/teach/stub_openai.py) answered, priced
from the usage it reported at the built-in price of the model it impersonates.
"""

from __future__ import annotations

import pytest

import ftcot
from ftcot.errors import FtcotError
from ftcot.teach.budget import spent_in
from ftcot.teach.pricing import PriceTable
from tests.teach.test_adaptive import coin_train_file

MODEL = "gpt-4o-mini"


def billed(server) -> float:
    """What the server's answers cost at the model's price: its own usage figures, request by request."""
    price = PriceTable().price_for(MODEL)
    return sum(price.cost(len(body["prompt"]) // 4, 5 * body.get("n", 1)) for body in server.requests())


def _teach(task_file, out, server, **options):
    return ftcot.teach(str(task_file), f"openai:{MODEL}", out, answer_type="yes/no", base_url=server.base_url,
                       temperature=0.7, until_correct=2, max_samples=6, rationalize=True, max_tokens=6, **options)


def test_max_cost_is_the_run_directorys_across_rounds_rationalization_and_invocations(tmp_path, stub):
    # The stub answers "yes" to every stage 2: the "no" questions are sampled to max_samples, then rationalized.
    task_file = coin_train_file(tmp_path, 8)
    free = stub(honour_n=True)
    _teach(task_file, tmp_path / "uncapped", free)
    whole = billed(free)
    assert whole > 0 and spent_in(tmp_path / "uncapped") == pytest.approx(whole)

    cap = whole * 0.4
    capped = stub(honour_n=True)
    out = tmp_path / "capped"
    try:
        _teach(task_file, out, capped, max_cost=cap)
    except FtcotError:
        pass  # a round that got nothing (the cap held everything back) says so; what was spent is the point
    first = billed(capped)
    assert 0 < first <= cap
    try:  # the same command again: the cap is the run directory's, not this invocation's
        _teach(task_file, out, capped, max_cost=cap)
    except FtcotError:
        pass
    assert billed(capped) <= cap
    assert spent_in(out) == pytest.approx(billed(capped))

    # A higher cap lets the run finish, paying only for what is missing.
    _teach(task_file, out, capped, max_cost=whole * 2)
    assert billed(capped) <= whole * 1.05


def test_the_dry_run_shows_what_the_run_directory_spent(tmp_path, stub):
    task_file = coin_train_file(tmp_path, 4)
    server = stub(honour_n=True)
    ftcot.teach(str(task_file), f"openai:{MODEL}", tmp_path / "run", answer_type="yes/no", base_url=server.base_url)
    spent = billed(server)
    from ftcot.tasks import load_task
    from ftcot.teach.backends import make_teacher
    from ftcot.teach.engine import teach
    from ftcot.teach.store import TeachStore

    with TeachStore.open_readonly(tmp_path / "run") as store:
        summary = teach(load_task(str(task_file), None, "yes/no"), "train",
                        make_teacher(f"openai:{MODEL}", base_url=server.base_url), samples=3, temperature=0.7,
                        store=store, dry_run=True, max_cost=1.0)
    assert summary.spent_before_usd == pytest.approx(spent) and summary.estimated_requests == 4 * 2 * 2
