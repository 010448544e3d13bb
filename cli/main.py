"""The `recsys` command line: one thin command per job, each calling plain functions."""

from __future__ import annotations

import typer
from pydantic import ValidationError

from cli import costs, db, demo, imports, keys, schedule, serve, tradeoff, training, workers
from cli.context import CliContext, fail
from cli.evaluate import evaluate
from cli.tune import app as tune_app

app = typer.Typer(
    name="recsys",
    help="A recommender for online shops that knows what it costs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(db.app, name="db")
app.add_typer(imports.events_app, name="events")
app.add_typer(imports.items_app, name="items")
app.command("serve")(serve.serve)
app.command("demo-data")(demo.demo_data)
app.command("demo")(demo.demo)
app.command("worker")(workers.worker)
app.command("beat")(workers.beat)
app.command("train")(training.train)
app.command("evaluate")(evaluate)
app.add_typer(training.runs_app, name="runs")
app.add_typer(training.models_app, name="models")
app.add_typer(schedule.app, name="schedule")
app.add_typer(costs.app, name="costs")
app.add_typer(keys.app, name="keys")
app.add_typer(tune_app, name="tune")
app.add_typer(tradeoff.app, name="tradeoff")


@app.callback()
def _root(ctx: typer.Context) -> None:
    try:
        ctx.obj = CliContext()
    except ValidationError as exc:
        problems = "; ".join(
            f"RECSYS_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}" for e in exc.errors()
        )
        raise fail(f"invalid settings: {problems}", 2) from None


def main() -> None:
    app()
