"""`recsys costs ...`: price versions, a period's summary, daily budgets and the HTML report."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import psycopg
import typer

from cli.context import cli_context, fail, print_json
from cli.tables import print_table
from shared import cost_queries, cost_report, costs

app = typer.Typer(help="What training and serving cost.", no_args_is_help=True)
prices_app = typer.Typer(help="Dated price versions (the price book).", no_args_is_help=True)
app.add_typer(prices_app, name="prices")
JSON = typer.Option(False, "--json", help="Print JSON for scripts.")
DAY_FORMATS = ["%Y-%m-%d"]
SINCE = typer.Option(None, "--since", formats=DAY_FORMATS, help="First UTC day (inclusive).")
UNTIL = typer.Option(None, "--until", formats=DAY_FORMATS, help="Last UTC day (inclusive).")
PRICE_ID = typer.Option(
    None, "--price-id", help="Re-price everything with this price version (default: each "
    "row with the version in force at its time).",
)  # fmt: skip


@prices_app.command("add")
def prices_add(
    ctx: typer.Context,
    valid_from: str = typer.Option(
        ..., "--valid-from", help="ISO date or time it applies from (no zone: UTC)."
    ),
    vcpu_hour: float = typer.Option(..., "--vcpu-hour", min=0, help="Per vCPU-hour."),
    ram_gb_hour: float = typer.Option(..., "--ram-gb-hour", min=0, help="Per GiB-hour."),
    source: str = typer.Option(..., "--source", help="Where the prices come from, and when."),
    gpu_hour: float = typer.Option(0.0, "--gpu-hour", min=0, help="Per GPU-hour."),
    kwh: float = typer.Option(0.0, "--kwh", min=0, help="Per kWh of energy."),
    currency: str | None = typer.Option(None, "--currency", help="Default: cost_currency."),
    note: str = typer.Option("", "--note"),
    energy_billed: bool = typer.Option(
        False,
        "--energy-billed",
        help="Add energy x kWh price (on-premises; a cloud VM price already includes power).",
    ),
    as_json: bool = JSON,
) -> None:
    """Add a price version: usage from --valid-from on is priced with it."""
    context = cli_context(ctx)
    code = (currency or context.settings.cost_currency).upper()
    if len(code) != 3 or not code.isalpha():
        raise fail(f"not an ISO 4217 currency code: {code!r}", 2)
    with psycopg.connect(context.database_url(), autocommit=True) as conn:
        price = costs.add_price(
            conn,
            valid_from=_moment(valid_from),
            currency=code,
            vcpu_hour=vcpu_hour,
            ram_gb_hour=ram_gb_hour,
            gpu_hour=gpu_hour,
            kwh=kwh,
            source=source,
            note=note,
            energy_billed=energy_billed,
        )
    if code != context.settings.cost_currency:
        typer.echo(
            f"note: budgets and reports use {context.settings.cost_currency}; costs priced in "
            f"{code} are kept apart (never added to other currencies)",
            err=True,
        )
    if as_json:
        print_json(_price_dict(price))
    else:
        typer.echo(f"price version {price.price_id} applies from {price.valid_from}")


@prices_app.command("list")
def prices_list(ctx: typer.Context, as_json: bool = JSON) -> None:
    """Every price version, oldest first."""
    with psycopg.connect(cli_context(ctx).database_url()) as conn:
        prices = costs.list_prices(conn)
    if as_json:
        print_json([_price_dict(p) for p in prices])
        return
    print_table(
        ["id", "valid from", "cur", "vCPU-h", "GiB-h", "GPU-h", "kWh", "energy", "source"],
        [
            [
                p.price_id,
                p.valid_from,
                p.currency,
                str(p.vcpu_hour),
                str(p.ram_gb_hour),
                str(p.gpu_hour),
                str(p.kwh),
                "billed" if p.energy_billed else "-",
                p.source[:50],
            ]
            for p in prices
        ],
    )


@app.command("summary")
def summary(
    ctx: typer.Context,
    since: datetime | None = SINCE,
    until: datetime | None = UNTIL,
    price_id: int | None = PRICE_ID,
    as_json: bool = JSON,
) -> None:
    """Training and serving cost per model version for a period, and days over budget."""
    context = cli_context(ctx)
    first, last = _days(since, until)
    with psycopg.connect(context.database_url()) as conn:
        _check_price(conn, price_id)
        versions = cost_queries.summary(conn, since=first, until=last, price_id=price_id)
        days = cost_queries.budget_days(conn, context.settings, since=first, until=last)
    over = [d for d in days if d.exceeded]
    if as_json:
        print_json(_summary_json(first, last, price_id, versions, over))
        return
    _print_summary(versions, over)


@app.command("budget")
def budget(
    ctx: typer.Context,
    day: datetime | None = typer.Option(None, "--day", formats=DAY_FORMATS, help="Default: today."),
    as_json: bool = JSON,
) -> None:
    """One UTC day's training and serving cost against the daily budgets."""
    context = cli_context(ctx)
    when = day.date() if day else datetime.now(UTC).date()
    with psycopg.connect(context.database_url()) as conn:
        statuses = cost_queries.budget_status(conn, when, context.settings)
    if as_json:
        print_json([{**asdict(s), "exceeded": s.exceeded} for s in statuses])
        return
    print_table(
        ["day", "path", "cost", "budget", "currency", ""],
        [
            [s.day, s.path, s.cost, s.budget, s.currency, "OVER" if s.exceeded else ""]
            for s in statuses
        ],
    )


@app.command("report")
def report(
    ctx: typer.Context,
    html: Path = typer.Option(..., "--html", dir_okay=False, help="The HTML file to write."),
    since: datetime | None = SINCE,
    until: datetime | None = UNTIL,
    price_id: int | None = PRICE_ID,
) -> None:
    """Write one self-contained HTML page with the cost charts and tables."""
    context = cli_context(ctx)
    first, last = _days(since, until)
    with psycopg.connect(context.database_url()) as conn:
        _check_price(conn, price_id)
        data = cost_report.load_report(
            conn, context.settings, since=first, until=last, price_id=price_id
        )
    html.parent.mkdir(parents=True, exist_ok=True)
    html.write_text(cost_report.render_report(data), encoding="utf-8")
    typer.echo(f"wrote {html}")


def _moment(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise fail(f"not an ISO date or time: {text!r}", 2) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _days(since: datetime | None, until: datetime | None) -> tuple[date | None, date | None]:
    first, last = (since.date() if since else None), (until.date() if until else None)
    if first and last and first > last:
        raise fail("--since is after --until", 2)
    return first, last


def _check_price(conn: psycopg.Connection, price_id: int | None) -> None:
    if price_id is not None and costs.get_price(conn, price_id) is None:
        raise fail(f"no price version {price_id}", 2)


def _price_dict(price: costs.Price) -> dict[str, Any]:
    data = asdict(price)
    for key in ("vcpu_hour", "ram_gb_hour", "gpu_hour", "kwh"):
        data[key] = float(data[key])
    return data


def _summary_json(
    since: date | None,
    until: date | None,
    price_id: int | None,
    versions: list[cost_queries.VersionCost],
    over: list[cost_queries.BudgetStatus],
) -> dict[str, Any]:
    requests = sum(v.requests for v in versions)
    allocated = sum(v.inference_allocated_cost for v in versions)
    return {
        "since": since,
        "until": until,
        "price_id": price_id,
        "versions": [asdict(v) for v in versions],
        "totals": {
            "training_cost": sum(v.training_cost for v in versions),
            "inference_used_cost": sum(v.inference_used_cost for v in versions),
            "inference_allocated_cost": allocated,
            "requests": requests,
            "throttled": sum(v.throttled for v in versions),
            "cost_per_1000": allocated / requests * 1000 if requests else None,
        },
        "over_budget": [asdict(d) for d in over],
    }


def _print_summary(
    versions: list[cost_queries.VersionCost], over: list[cost_queries.BudgetStatus]
) -> None:
    print_table(
        ["version", "cur", "training", "serving alloc", "serving used", "requests",
         "per 1,000", "amortized/1,000", "429s"],
        [
            [v.model_version or "(none)", v.currency, v.training_cost,
             v.inference_allocated_cost, v.inference_used_cost, v.requests, v.cost_per_1000,
             v.amortized_cost_per_1000, v.throttled]
            for v in versions
        ],
    )  # fmt: skip
    for day in over:
        typer.echo(
            f"over budget: {day.day} {day.path} {day.cost:.4g} {day.currency} "
            f"(budget {day.budget:.4g})"
        )
