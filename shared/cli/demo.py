"""`recsys demo-data` (synthetic shop files) and `recsys demo` (the whole path, shown live)."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import typer

from shared.cli.context import cli_context, print_json
from shared.synthetic import ShopConfig, write_demo_files

RECSYS = str(Path(sys.executable).parent / "recsys")
DEMO_SCOPES = "events,recommend"


def demo_data(
    ctx: typer.Context,
    out: Path | None = typer.Option(None, help="Folder for the files (default DATA_DIR/demo)."),
    users: int = typer.Option(2_000, min=1),
    items: int = typer.Option(1_000, min=1),
    events: int = typer.Option(100_000, min=1),
    days: int = typer.Option(60, min=1),
    seed: int = typer.Option(0, min=0),
) -> None:
    """Write a synthetic shop (events.csv.gz, items.csv) that `events import` reads."""
    folder = out or cli_context(ctx).settings.data_dir / "demo"
    end = datetime.now(UTC).replace(second=0, microsecond=0)
    config = ShopConfig(
        n_users=users, n_items=items, n_events=events, days=days, seed=seed, end=end
    )
    paths = write_demo_files(folder, config)
    print_json({name: str(path) for name, path in paths.items()})


def demo(ctx: typer.Context, port: int = typer.Option(8765, help="Port for the demo API.")) -> None:
    """Start the database, migrate, import a synthetic shop, serve the API and talk to it."""
    context = cli_context(ctx)
    env = {**os.environ, "RECSYS_DATABASE_URL": context.database_url()}
    data_dir = context.settings.data_dir
    _step("Migrate the database", env, ["db", "upgrade"])
    _step("Generate a synthetic shop", env, ["demo-data", "--out", str(data_dir / "demo")])
    _step("Import the catalogue", env, ["items", "import", str(data_dir / "demo/items.csv")])
    _step("Import the event log", env, ["events", "import", str(data_dir / "demo/events.csv.gz")])
    key = _create_key(env)
    _banner(f"Serve the API: recsys serve --port {port}")
    server = subprocess.Popen([RECSYS, "serve", "--port", str(port)], env=env)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            _wait_ready(client)
            _show_requests(client, key)
    finally:
        server.terminate()
        server.wait(timeout=15)
    typer.echo(
        "\nDone. The database keeps running under "
        f"{data_dir}/pg; `recsys db stop` stops it, `make demo` runs all this again."
    )


def _banner(text: str) -> None:
    typer.secho(f"\n== {text}", bold=True)


def _step(title: str, env: dict[str, str], args: list[str]) -> None:
    _banner(f"{title}: recsys {' '.join(args)}")
    subprocess.run([RECSYS, *args], env=env, check=True)


def _create_key(env: dict[str, str]) -> str:
    """`recsys keys create --json`, shown as it prints; the key is kept only in this process."""
    args = ["keys", "create", "--name", "demo", "--scopes", DEMO_SCOPES, "--json"]
    _banner(f"Create an API key: recsys {' '.join(args)}")
    done = subprocess.run([RECSYS, *args], env=env, check=True, capture_output=True, text=True)
    typer.echo(done.stdout.rstrip())
    key: str = orjson.loads(done.stdout)["key"]
    return key


def _wait_ready(client: httpx.Client, timeout: float = 30) -> None:
    deadline = datetime.now(UTC) + timedelta(seconds=timeout)
    while datetime.now(UTC) < deadline:
        try:
            if client.get("/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        import time

        time.sleep(0.2)
    raise typer.Exit(1)


def _show(
    client: httpx.Client, method: str, path: str, body: Any = None, *, note: str = ""
) -> None:
    typer.secho(f"\n$ {method} {path}{note}", fg="cyan")
    if body is not None:
        typer.echo(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode())
    response = client.request(method, path, json=body)
    typer.secho(f"-> {response.status_code}", fg="green" if response.is_success else "yellow")
    typer.echo(orjson.dumps(response.json(), option=orjson.OPT_INDENT_2).decode())


def _show_requests(client: httpx.Client, key: str) -> None:
    now = datetime.now(UTC).replace(microsecond=0).isoformat()
    _show(client, "GET", "/readyz")
    _show(client, "POST", "/v1/events", [], note="   (no API key)")
    client.headers["Authorization"] = f"Bearer {key}"
    typer.secho(f"\nFrom here on every request sends: Authorization: Bearer {key}", bold=True)
    events = [
        {
            "event_id": "demo-1",
            "user_id": "u-000001",
            "item_id": "sku-000002",
            "type": "view",
            "occurred_at": now,
        },
        {"event_id": "demo-2", "user_id": "u-000001", "item_id": "sku-000002", "type": "purchase"},
        {"user_id": "u-000001", "item_id": "sku-000002", "type": "rating", "value": 9},
    ]
    _show(client, "POST", "/v1/events", events)
    _show(client, "POST", "/v1/events", events[:2])  # the same ids again: duplicates
    _show(
        client,
        "PUT",
        "/v1/items",
        [{"item_id": "sku-999999", "category": "cat-01", "attributes": {"brand": "demo"}}],
    )
