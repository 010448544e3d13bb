"""`recsys costs ...` against the real PostgreSQL: prices, summary --json, the HTML report."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from psycopg.types.json import Jsonb
from typer.testing import CliRunner, Result

from cli.main import app
from shared import costs
from shared.hardware import HostInfo
from shared.metering import GIB, PhaseMeasurement
from shared.usage_rows import N_BUCKETS, UsageRow, write_rows

Run = Callable[..., Result]
DAY = datetime(2031, 3, 4, tzinfo=UTC)
REC = "/v1/users/{user_id}/recommendations"


@pytest.fixture
def recsys(clean_database: str) -> Iterator[Run]:
    """recsys(*args) -> the CLI's result on the test database; price versions added are removed."""
    with psycopg.connect(clean_database) as conn:
        before = conn.execute("SELECT coalesce(max(price_id), 0) FROM price_book").fetchone()

    def run(*args: str) -> Result:
        return CliRunner().invoke(app, list(args), env={"RECSYS_DATABASE_URL": clean_database})

    yield run
    with psycopg.connect(clean_database) as conn:
        conn.execute("DELETE FROM price_book WHERE price_id > %s", before)


def json_of(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return orjson.loads(result.stdout)


@pytest.fixture
def served_shop(clean_database: str, recsys: Run) -> str:
    """Two versions: v-cheap trained and served past its training cost; v-rich only trained."""
    added = json_of(
        recsys(
            "costs", "prices", "add", "--valid-from", "2031-01-01", "--currency", "USD",
            "--vcpu-hour", "3.6", "--ram-gb-hour", "0.36", "--gpu-hour", "0", "--kwh", "0.2",
            "--source", "test prices", "--note", "for the CLI test", "--json",
        )
    )  # fmt: skip
    assert added["vcpu_hour"] == 3.6
    with psycopg.connect(clean_database) as conn:
        _trained(conn, "v-cheap", cpu_seconds=600, ndcg=0.21, at=DAY)
        _trained(conn, "v-rich", cpu_seconds=3000, ndcg=0.24, at=DAY + timedelta(hours=1))
        conn.execute("INSERT INTO model_pointer (version, moved_by) VALUES ('v-cheap', 'test')")
        write_rows(conn, [_window(DAY + timedelta(hours=h, minutes=30)) for h in range(1, 30)])
    return clean_database


def _trained(
    conn: psycopg.Connection, version: str, *, cpu_seconds: float, ndcg: float, at: datetime
) -> None:
    run_id = uuid.uuid4()
    conn.execute(
        "INSERT INTO training_runs (run_id, status, trigger, model_version) "
        "VALUES (%s, 'promoted', 'test', %s)",
        (run_id, version),
    )
    conn.execute(
        "INSERT INTO model_versions (version, run_id, status, reason, algorithm, params, "
        "metrics, data, artifact_path, artifact_bytes, created_at) "
        "VALUES (%s, %s, 'kept', 'test', 'als', '{}', %s, '{}', '/nowhere', 0, %s)",
        (version, run_id, Jsonb({"candidate": {"ndcg": ndcg}}), at),
    )
    fit = PhaseMeasurement(
        "fit", at, at + timedelta(seconds=cpu_seconds), cpu_seconds, cpu_seconds, GIB, 1.0,
        "estimate", 0.0,
    )  # fmt: skip
    costs.record_training_phases(
        conn,
        run_id=run_id,
        model_version=version,
        measurements=[fit],
        host=HostInfo("trainer", "cpu", 4, None),
    )


def _window(start: datetime) -> UsageRow:
    buckets = [0] * N_BUCKETS
    buckets[4] = 990
    return UsageRow(
        start, start + timedelta(minutes=1), 60.0, uuid.uuid4(), "api", 1, REC, "v-cheap",
        990, 2, 10, 9900, 6.0, 0.0, 10.0, 240.0, buckets,
    )  # fmt: skip


def test_prices_add_and_list(recsys: Run) -> None:
    added = json_of(
        recsys(
            "costs", "prices", "add", "--valid-from", "2031-06-01T12:00:00+02:00",
            "--vcpu-hour", "0.05", "--ram-gb-hour", "0.006", "--source", "our invoice",
            "--energy-billed", "--kwh", "0.3", "--json",
        )
    )  # fmt: skip
    assert added["currency"] == "USD"  # cost_currency by default
    assert added["energy_billed"] is True
    listed = json_of(recsys("costs", "prices", "list", "--json"))
    assert listed[0]["price_id"] == 1  # the seeded version stays first
    assert listed[-1]["price_id"] == added["price_id"]
    assert listed[-1]["valid_from"].startswith("2031-06-01T10:00:00")
    assert recsys("costs", "prices", "list").exit_code == 0
    refused = recsys(
        "costs", "prices", "add", "--valid-from", "soon", "--vcpu-hour", "1",
        "--ram-gb-hour", "1", "--source", "x",
    )  # fmt: skip
    assert refused.exit_code == 2


def test_summary_json_gives_costs_per_version(served_shop: str, recsys: Run) -> None:
    answer = json_of(
        recsys("costs", "summary", "--since", "2031-03-04", "--until", "2031-03-05", "--json")
    )
    versions = {v["model_version"]: v for v in answer["versions"]}
    cheap, rich = versions["v-cheap"], versions["v-rich"]
    assert cheap["training_cost"] == pytest.approx(0.6 + 600 * 1e-4)  # CPU + 1 GiB held
    assert rich["training_cost"] == pytest.approx(3.0 + 3000 * 1e-4)
    assert cheap["requests"] == 29 * 990
    assert cheap["throttled"] == 290
    assert cheap["inference_allocated_cost"] == pytest.approx(29 * 0.24)
    assert cheap["cost_per_1000"] == pytest.approx(0.24 / 990 * 1000)
    assert rich["requests"] == 0
    assert answer["totals"]["requests"] == 29 * 990
    one_day = json_of(
        recsys("costs", "summary", "--since", "2031-03-04", "--until", "2031-03-04", "--json")
    )
    assert {v["model_version"]: v for v in one_day["versions"]}["v-cheap"]["requests"] == 23 * 990
    assert recsys("costs", "summary").exit_code == 0
    assert recsys("costs", "summary", "--price-id", "999999").exit_code == 2


def test_report_is_one_html_file_with_charts_and_the_crossover(
    served_shop: str, recsys: Run, tmp_path: Path
) -> None:
    out = tmp_path / "report" / "costs.html"
    result = recsys(
        "costs", "report", "--html", str(out), "--since", "2031-03-04", "--until", "2031-03-05"
    )
    assert result.exit_code == 0, result.output
    html = out.read_text()
    assert html.count("<svg") == 4
    assert 'class="crossover"' in html
    assert "serving passed training 2031-03-04" in html
    assert "v-rich" in html  # the cost-against-NDCG scatter labels its points
    assert "<script" not in html
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in html


def test_budget_reports_a_day(served_shop: str, recsys: Run) -> None:
    answer = json_of(recsys("costs", "budget", "--day", "2031-03-04", "--json"))
    assert [s["path"] for s in answer] == ["training", "inference"]
    assert answer[0]["cost"] == pytest.approx(0.66 + 3.3)
    assert answer[0]["exceeded"] is False  # no budget set
