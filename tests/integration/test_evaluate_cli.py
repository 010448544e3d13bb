"""`recsys evaluate` against the real PostgreSQL: every candidate measured, nothing published."""

from __future__ import annotations

from typing import Any

import orjson
import psycopg
import pytest
from typer.testing import CliRunner, Result

from cli.main import app
from tests.shop import SMALL_SHOP, load_shop

pytestmark = pytest.mark.timeout(240)
METRICS = {"k", "users", "precision", "recall", "ndcg", "map", "coverage"}


def recsys(database_url: str, *args: str, **extra: str) -> Result:
    env = {"RECSYS_DATABASE_URL": database_url, "RECSYS_ALGORITHM": "auto", **extra}
    return CliRunner().invoke(app, list(args), env=env)


@pytest.fixture
def shop(clean_database: str) -> str:
    load_shop(clean_database, SMALL_SHOP)
    return clean_database


def counts(database_url: str) -> tuple[int, int, int]:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM model_versions), (SELECT count(*) FROM training_runs),"
            " (SELECT count(*) FROM model_pointer)"
        ).fetchone()
    assert row is not None
    return row


def test_evaluate_lists_every_candidate_and_publishes_nothing(shop: str) -> None:
    result = recsys(shop, "evaluate", "--json")
    assert result.exit_code == 0, result.output
    report: dict[str, Any] = orjson.loads(result.stdout)

    assert report["k"] == 10
    assert report["users"] > 0
    assert report["metric"] == "ndcg"
    candidates = {c["label"]: c for c in report["candidates"]}
    algorithms = [c["algorithm"] for c in report["candidates"]]
    assert "popularity (window)" in candidates
    assert algorithms.count("popularity") == 3  # the window and two recency half-lives
    assert {"item_knn", "als", "ease"} <= set(algorithms)
    for candidate in report["candidates"]:
        assert candidate["note"] is None, candidate
        assert set(candidate["metrics"]) == METRICS
        assert candidate["metrics"]["users"] == report["users"]
        assert 0.0 <= candidate["metrics"]["ndcg"] <= 1.0
        assert candidate["fit_cpu_seconds"] >= 0.0
    chosen = candidates[report["chosen"]]
    best = max(c["metrics"]["ndcg"] for c in report["candidates"])
    assert chosen["metrics"]["ndcg"] == best
    assert counts(shop) == (0, 0, 0)


def test_evaluate_table_marks_the_chosen_and_pins_an_algorithm(shop: str) -> None:
    result = recsys(shop, "evaluate", "--algorithm", "item_knn", "--k", "5")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "ndcg@5" in lines[1]
    rows = lines[2:-1]
    assert len(rows) == 4  # three popularity baselines and the pinned algorithm
    assert sum(row.startswith("*") for row in rows) == 1
    assert any("item_knn" in row for row in rows)
    assert not any(" als " in row or " ease " in row for row in rows)
    assert lines[-1].startswith("* would be chosen: ")
    assert counts(shop) == (0, 0, 0)


def test_evaluate_on_an_empty_database_is_a_one_line_error(clean_database: str) -> None:
    result = recsys(clean_database, "evaluate", "--json")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.strip().count("\n") == 0
    assert result.stderr.startswith("recsys: error: nothing to evaluate: there are no events")
    assert "Traceback" not in result.output


def test_a_money_budget_bounds_the_selection_and_the_skipped_are_listed(shop: str) -> None:
    budget = {"RECSYS_SELECTION_BUDGET_COST": "1e-12"}  # spent by the first fit
    result = recsys(shop, "evaluate", "--json", **budget)
    assert result.exit_code == 0, result.output
    report: dict[str, Any] = orjson.loads(result.stdout)
    first, *rest = report["candidates"]
    assert first["metrics"] is not None
    assert rest
    for candidate in rest:
        assert candidate["metrics"] is None
        assert candidate["note"].startswith("skipped: the selection budget (1e-12) was spent")
    assert report["chosen"] == first["label"]
