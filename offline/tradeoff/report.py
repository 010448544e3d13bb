"""One self-contained HTML page for a sweep: the cost/quality frontier, the choice, every figure.

The chart is `shared/svg_charts.scatter` (frontier points drawn large) with the frontier's
staircase and the chosen candidate's ring added on the same scales; no scripts, no external
files, so the page can be mailed or attached to a ticket as it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from html import escape
from typing import Any

from offline.tradeoff.store import CandidateRow, TradeoffRun
from shared import svg_charts
from shared.svg_charts import BOTTOM, HEIGHT, LEFT, RIGHT, TOP, WIDTH, Point, nice_ticks

_CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 1100px; color: #222; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 17px; margin-top: 28px; }
.meta { color: #666; } .chosen td { background: #fdf1e6; font-weight: 600; }
table { border-collapse: collapse; margin-top: 8px; font-size: 12px; }
th, td { border-bottom: 1px solid #e3e3e3; padding: 3px 8px; text-align: right; }
th:nth-child(2), td:nth-child(2) { text-align: left; white-space: nowrap; }
svg { margin-top: 10px; font-size: 11px; } svg .title { font-size: 14px; font-weight: 600; }
svg .grid { stroke: #e6e6e6; } svg .axis-label { fill: #555; } svg .point-label { fill: #333; }
"""


def render(run: TradeoffRun, rows: Sequence[CandidateRow]) -> str:
    """The whole page."""
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>recsys tradeoff {run.run_id}</title><style>{_CSS}</style></head><body>"
        + _header(run, rows)
        + frontier_chart(run, rows)
        + "<h2>Every candidate</h2>"
        + _table(run, rows)
        + "</body></html>"
    )


def _header(run: TradeoffRun, rows: Sequence[CandidateRow]) -> str:
    by_id = {r.candidate_id: r for r in rows}
    chosen = by_id.get(run.chosen_candidate) if run.chosen_candidate is not None else None
    base = by_id.get(run.baseline_candidate) if run.baseline_candidate is not None else None
    w = run.workload
    lines = [
        f"workload: {w['requests_per_day']:,.0f} requests/day, {w['retrains_per_day']:g} "
        f"retrains/day, at least {w['api_processes']} API processes of "
        f"{_sizes(w)} (peak {w['peak_to_mean']:g}x mean, "
        f"{w['target_utilization']:.0%} target utilisation), active users "
        f"{w.get('active_users') or 'all'}",
        f"quality floor: {run.floor:g} x the best NDCG@k found ({_num(run.best_ndcg)}); "
        f"price version {run.price_id}, costs per day in {run.currency}",
    ]
    if chosen is not None:
        lines.append(
            f"chosen: #{chosen.candidate_id} {chosen.label}, {_num(chosen.daily_cost)}/day"
            f" on {_processes(chosen)}; " + sizing_line(chosen)
        )
    if base is not None and run.saving is not None:
        lines.append(
            f"current settings: #{base.candidate_id} {base.label}, {_num(base.daily_cost)}/day; "
            f"saving {_num(run.saving)}/day"
        )
    failed = sum(r.status == "failed" for r in rows)
    lines.append(f"{len(rows)} candidates, {failed} failed; status {run.status}")
    created = run.created_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"<h1>Tradeoff sweep {escape(str(run.run_id))}</h1><p class='meta'>started {created}; "
        f"generated {datetime.now(UTC):%Y-%m-%d %H:%M UTC}</p>"
        + "".join(f"<p>{escape(line)}</p>" for line in lines)
    )


def frontier_chart(run: TradeoffRun, rows: Sequence[CandidateRow]) -> str:
    """Daily cost against NDCG; frontier large and joined, chosen ringed."""
    done = [r for r in rows if r.daily_cost is not None and r.ndcg is not None]
    if not done:
        return "<p>No candidate was measured.</p>"
    points = [
        Point(r.daily_cost or 0.0, r.ndcg or 0.0, _point_label(run, r), r.on_frontier) for r in done
    ]
    svg = svg_charts.scatter(
        "Daily cost against NDCG (large: on the frontier; ringed: chosen)",
        points,
        x_label=f"total cost per day ({run.currency})",
        y_label="NDCG@k on the holdout",
    )
    x_ticks = nice_ticks(0.0, max([0.0, *(p.x for p in points)]))
    y_ticks = nice_ticks(0.0, max([0.0, *(p.y for p in points)]))

    def place(x: float, y: float) -> tuple[float, float]:
        px = LEFT + (x - x_ticks[0]) / ((x_ticks[-1] - x_ticks[0]) or 1.0) * (WIDTH - RIGHT - LEFT)
        py = (
            HEIGHT
            - BOTTOM
            + (y - y_ticks[0]) / ((y_ticks[-1] - y_ticks[0]) or 1.0) * (TOP - (HEIGHT - BOTTOM))
        )
        return px, py

    extra = _staircase([place(p.x, p.y) for p in sorted(points, key=lambda p: p.x) if p.highlight])
    for r in done:
        if r.candidate_id == run.chosen_candidate:
            cx, cy = place(r.daily_cost or 0.0, r.ndcg or 0.0)
            extra += (
                f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="12" fill="none" stroke="#c0392b" '
                f'stroke-width="2.5" class="chosen"/>'
            )
    return svg.replace("</svg>", extra + "</svg>")


def _staircase(points: list[tuple[float, float]]) -> str:
    """The frontier as steps: quality holds until the next cheaper-to-better point."""
    if len(points) < 2:
        return ""
    coords = [points[0]]
    for px, py in points[1:]:
        coords += [(px, coords[-1][1]), (px, py)]
    text = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
    return (
        f'<polyline points="{text}" fill="none" stroke="#e07b39" stroke-width="1.5" '
        'stroke-dasharray="5 3" class="frontier"/>'
    )


def _point_label(run: TradeoffRun, row: CandidateRow) -> str:
    tags = [f"#{row.candidate_id}"]
    if row.candidate_id == run.chosen_candidate:
        tags.append("chosen")
    if row.is_baseline:
        tags.append("current")
    if row.on_frontier or len(tags) > 1:
        tags.append(row.label)
    return " ".join(tags)


def _table(run: TradeoffRun, rows: Sequence[CandidateRow]) -> str:
    head = (
        "#", "candidate", "status", "NDCG", "recall", "fit CPU s", "retrain cost",
        "CPU s/1k req", "p99 ms", "RSS MiB", "artifact MiB", "recall vs exact",
        "processes x vCPU", "cost/day", "frontier",
    )  # fmt: skip
    body = []
    for r in rows:
        cells = (
            str(r.candidate_id),
            r.label + (" (current)" if r.is_baseline and "current" not in r.label else ""),
            r.status if r.status != "failed" else f"failed: {r.error or ''}"[:80],
            _num(r.ndcg),
            _num(r.recall),
            _num(r.train_cpu_seconds),
            _num(r.training_cost),
            _num(r.serving_cpu_per_1000),
            _num(r.p99_ms),
            _mib(r.rss_growth_bytes),
            _mib(r.artifact_bytes),
            _num(r.recall_vs_exact),
            _processes(r),
            _num(r.daily_cost),
            "yes" if r.on_frontier else "",
        )
        css = " class='chosen'" if r.candidate_id == run.chosen_candidate else ""
        body.append(f"<tr{css}>" + "".join(f"<td>{escape(c)}</td>" for c in cells) + "</tr>")
    header = "".join(f"<th>{escape(h)}</th>" for h in head)
    return f"<table><tr>{header}</tr>{''.join(body)}</table>"


def _sizes(workload: dict[str, Any]) -> str:
    fixed = workload.get("vcpus_per_process")
    if fixed is not None:
        return f"{fixed:g} vCPU"
    sizes = workload.get("process_sizes") or []
    return "the cheapest size of " + "/".join(f"{s:g}" for s in sizes) + " vCPU"


def _processes(row: CandidateRow) -> str:
    if row.processes is None:
        return "-"
    if row.vcpus_per_process is None:
        return str(row.processes)
    return f"{row.processes} x {row.vcpus_per_process:g}"


def sizing_line(row: CandidateRow) -> str:
    """Every process size the candidate was priced at: "2 x 0.25 vCPU 0.42/day, …"."""
    parts = []
    for sizing in row.sizings or []:
        part = (
            f"{sizing['processes']} x {sizing['vcpus_per_process']:g} vCPU "
            f"{sizing['total']:.4g}/day (p99 ~{sizing['p99_ms']:.2g} ms)"
        )
        parts.append(part if sizing["eligible"] else part + " over the p99 limit")
    return "sizes: " + ", ".join(parts) if parts else "sizes: -"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / 1024**2:.1f}"
