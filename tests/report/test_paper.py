"""The paper's reference rows equal the method document's table (fine-tune-cot.md §7), number for number."""

from __future__ import annotations

import pytest

from ftcot.report.paper import PAPER_ROWS, paper_markdown
from tests.conftest import SHARED_DATA

DOC = SHARED_DATA.parent / "docs" / "fine-tune-cot.md"
DOC_LABELS = {
    "teacher: text-davinci-002, Zero-shot-CoT (train + test)": "teacher text-davinci-002, Zero-shot-CoT (over train+test)",
    "GPT-3 curie 6.7B, Fine-tune": "curie 6.7B, Fine-tune", "GPT-3 curie 6.7B, Fine-tune-CoT": "curie 6.7B, Fine-tune-CoT",
    "GPT-2 124M, Fine-tune": "GPT-2 124M, Fine-tune", "GPT-2 124M, Fine-tune-CoT": "GPT-2 124M, Fine-tune-CoT",
    "Flan-T5 220M, Fine-tune-CoT": "Flan-T5 220M, Fine-tune-CoT",
}


def test_the_reference_rows_are_the_documents():
    if not DOC.is_file():
        pytest.skip(f"{DOC} is not here")
    table = {cells[0]: cells[1:] for line in DOC.read_text().splitlines() if line.startswith("| ")
             for cells in [[c.strip() for c in line.strip("|").split("|")]]}
    for label, values in PAPER_ROWS.items():
        expected = [None if v == "–" else float(v) for v in table[DOC_LABELS[label]]]
        assert list(values) == expected, label


def test_the_markdown_has_the_runs_tasks_in_the_papers_order():
    text = paper_markdown(["strategy_qa", "coin_flip", "my_task"])
    header, _, *rows = text.splitlines()
    assert header.endswith("| Coin Flip | StrategyQA |")
    assert "| GPT-2 124M, Fine-tune-CoT | 77.33 | 55.75 |" in rows
    assert paper_markdown(["my_task"]) == ""
