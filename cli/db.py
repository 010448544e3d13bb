"""`recsys db ...`: schema migrations and the embedded server."""

from __future__ import annotations

import typer

from cli.context import cli_context, print_json
from shared.migrate import current_revision, upgrade

app = typer.Typer(help="Database schema and the embedded server.", no_args_is_help=True)


@app.command("upgrade")
def upgrade_command(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Apply all migrations (safe to run twice, and from several processes at once)."""
    url = cli_context(ctx).database_url()
    before = current_revision(url)
    upgrade(url)
    after = current_revision(url)
    if as_json:
        print_json({"from": before, "to": after})
    else:
        typer.echo(f"database at revision {after} (was {before or 'empty'})")


@app.command("status")
def status_command(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Show the schema revision the database is at."""
    revision = current_revision(cli_context(ctx).database_url())
    if as_json:
        print_json({"revision": revision})
    else:
        typer.echo(f"revision: {revision or 'none (run `recsys db upgrade`)'}")


@app.command("stop")
def stop_command(ctx: typer.Context) -> None:
    """Stop the embedded PostgreSQL started under RECSYS_DATA_DIR, if one runs."""
    from shared.embedded import stop_embedded_postgres

    stopped = stop_embedded_postgres(cli_context(ctx).settings.data_dir)
    typer.echo("embedded PostgreSQL stopped" if stopped else "no embedded PostgreSQL running")
