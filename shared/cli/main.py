"""The `recsys` command line: one thin command per job, each calling plain functions."""

from __future__ import annotations

import typer

from shared.cli import db, demo, imports, serve, workers
from shared.cli.context import CliContext

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


@app.callback()
def _root(ctx: typer.Context) -> None:
    ctx.obj = CliContext()


def main() -> None:
    app()
