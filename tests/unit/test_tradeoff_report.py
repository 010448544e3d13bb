"""The sweep's HTML page: self-contained, frontier drawn, chosen and failures shown."""

from __future__ import annotations

import uuid
from dataclasses import fields
from datetime import UTC, datetime
from typing import Any

from offline.tradeoff.costing import Workload
from offline.tradeoff.report import frontier_chart, render
from offline.tradeoff.store import CandidateRow, TradeoffRun

RUN_ID = uuid.uuid4()


def _row(candidate_id: int, **values: Any) -> CandidateRow:
    blank: dict[str, Any] = {f.name: None for f in fields(CandidateRow)}
    blank.update(
        run_id=RUN_ID, candidate_id=candidate_id, label=f"cand {candidate_id}", model={},
        serving={}, is_baseline=False, status="done", on_frontier=False,
    )  # fmt: skip
    blank.update(values)
    return CandidateRow(**blank)


def _run(**values: Any) -> TradeoffRun:
    base: dict[str, Any] = {f.name: None for f in fields(TradeoffRun)}
    base.update(
        run_id=RUN_ID, created_at=datetime(2026, 11, 26, tzinfo=UTC), status="done",
        mode="inline", workload=Workload(1e7).to_dict(), floor=0.97, price_id=1,
        currency="USD", config={}, applied=False, baseline_candidate=0, chosen_candidate=1,
        best_ndcg=0.2, saving=0.5,
    )  # fmt: skip
    base.update(values)
    return TradeoffRun(**base)


ROWS = [
    _row(0, is_baseline=True, ndcg=0.2, daily_cost=2.0, on_frontier=True),
    _row(1, ndcg=0.195, daily_cost=1.5, on_frontier=True),
    _row(2, ndcg=0.1, daily_cost=1.8),
    _row(3, status="failed", error="ValueError: <bad> factors"),
]


def test_the_page_is_self_contained_and_shows_everything() -> None:
    page = render(_run(), ROWS)
    assert page.startswith("<!DOCTYPE html>")
    assert "<script" not in page
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    assert 'class="frontier"' in page
    assert 'class="chosen"' in page
    assert "failed: ValueError: &lt;bad&gt; factors" in page
    assert "saving 0.5/day" in page


def test_no_measured_candidate_gives_a_sentence_not_a_chart() -> None:
    assert "<svg" not in frontier_chart(_run(chosen_candidate=None), [ROWS[3]])
