"""`recsys keys create|list|revoke`: API keys for the HTTP API (only their hashes are stored)."""

from __future__ import annotations

from dataclasses import asdict

import psycopg
import typer

from cli.context import cli_context, fail, print_json
from cli.tables import print_table
from shared import keys

app = typer.Typer(help="API keys for the HTTP API.", no_args_is_help=True)
JSON = typer.Option(False, "--json", help="Print JSON for scripts.")


def _connect(ctx: typer.Context) -> psycopg.Connection:
    return psycopg.connect(cli_context(ctx).database_url(), autocommit=True)


@app.command("create")
def create(
    ctx: typer.Context,
    name: str = typer.Option(..., "--name", help="Who or what uses the key, e.g. 'frontend'."),
    scopes: str = typer.Option(
        ..., "--scopes", help=f"Comma-separated, from: {','.join(keys.SCOPES)}."
    ),
    as_json: bool = JSON,
) -> None:
    """Create a key and print it once: it cannot be shown again (only its hash is kept)."""
    try:
        keys.parse_scopes(scopes)  # refuse bad input before touching the database
        with _connect(ctx) as conn:
            new = keys.create_key(conn, name=name, scopes=scopes)
    except keys.InvalidKeyRequest as exc:
        raise fail(str(exc), 2) from None
    if as_json:
        print_json(new.as_dict())
        return
    record = new.record
    typer.echo(f"key {record.key_id} ({record.name}; scopes {', '.join(record.scopes)}):")
    typer.echo(f"\n    {new.key}\n")
    typer.echo("Store it now: it is not kept and cannot be shown again.")


@app.command("list")
def list_(ctx: typer.Context, as_json: bool = JSON) -> None:
    """Every key, newest first, revoked ones included (never the keys themselves)."""
    with _connect(ctx) as conn:
        found = keys.list_keys(conn)
    if as_json:
        print_json({"keys": [asdict(k) for k in found]})
        return
    headers = ["key_id", "prefix", "name", "scopes", "created", "last used", "revoked"]
    print_table(headers, [_row(k) for k in found])


def _row(key: keys.ApiKey) -> list[object]:
    scopes = ",".join(key.scopes)
    return [
        key.key_id,
        key.prefix,
        key.name,
        scopes,
        key.created_at,
        key.last_used_at,
        key.revoked_at,
    ]


@app.command("revoke")
def revoke(
    ctx: typer.Context,
    target: str = typer.Argument(..., help="The key's id or prefix (from `recsys keys list`)."),
    as_json: bool = JSON,
) -> None:
    """Revoke a key; API processes refuse it within RECSYS_AUTH_CACHE_SECONDS."""
    try:
        with _connect(ctx) as conn:
            record, newly = keys.revoke_key(conn, target)
    except keys.InvalidKeyRequest as exc:
        raise fail(str(exc), 1) from None
    if as_json:
        print_json({**asdict(record), "already_revoked": not newly})
    elif newly:
        typer.echo(f"revoked key {record.key_id} ({record.name})")
    else:
        typer.echo(
            f"key {record.key_id} ({record.name}) was revoked before, at {record.revoked_at}"
        )
