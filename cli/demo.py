"""`recsys demo-data` (synthetic shop files) and `recsys demo` (the whole path, shown live)."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import psycopg
import typer

from cli.context import cli_context, print_json
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
    """Start the database, import a synthetic shop, train, serve the API and talk to it."""
    context = cli_context(ctx)
    database_url = context.database_url()
    data_dir = context.settings.data_dir
    env = {**os.environ, "RECSYS_DATABASE_URL": database_url}
    # Model versions go beside the demo's other state unless a place for them was configured.
    env.setdefault("RECSYS_ARTIFACT_DIR", str((data_dir / "artifacts").absolute()))
    _step("Migrate the database", env, ["db", "upgrade"])
    _step("Generate a synthetic shop", env, ["demo-data", "--out", str(data_dir / "demo")])
    _step("Import the catalogue", env, ["items", "import", str(data_dir / "demo/items.csv")])
    _step("Import the event log", env, ["events", "import", str(data_dir / "demo/events.csv.gz")])
    _step("Train a model on the events (here, without a worker)", env, ["train", "--inline"])
    key = _create_key(env)
    _banner(f"Serve the API: recsys serve --port {port}")
    server = subprocess.Popen([RECSYS, "serve", "--port", str(port)], env=env)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            _wait_ready(client)
            _show_requests(client, key)
            _show_recommendations(client, database_url)
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
    """Until /readyz says the API serves a model: the recommendation calls need one loaded."""
    deadline = time.monotonic() + timeout
    answer: Any = None
    while time.monotonic() < deadline:
        try:
            answer = client.get("/readyz").json()
            if answer["status"] == "ready" and answer["checks"]["model"].startswith("serving"):
                return
        except (httpx.TransportError, ValueError):
            pass
        time.sleep(0.2)
    typer.echo(f"recsys: error: the API serves no model after {timeout} s: {answer}", err=True)
    raise typer.Exit(1)


def _show(client: httpx.Client, method: str, path: str, body: Any = None, *, note: str = "") -> Any:
    """Send one request, print it and its answer as they went over the wire; the answer."""
    typer.secho(f"\n$ {method} {path}{note}", fg="cyan")
    if body is not None:
        typer.echo(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode())
    response = client.request(method, path, json=body)
    typer.secho(f"-> {response.status_code}", fg="green" if response.is_success else "yellow")
    answer = response.json()
    typer.echo(orjson.dumps(answer, option=orjson.OPT_INDENT_2).decode())
    return answer


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


def _show_recommendations(client: httpx.Client, database_url: str) -> None:
    """What the trained model answers: a known shopper, similar and popular items."""
    _banner("Ask the trained model")
    shopper = _most_active_shopper(database_url)
    path = f"/v1/users/{quote(shopper)}/recommendations?n=5"
    _show(client, "GET", path, note="   (the most active shopper)")
    popular = _show(client, "GET", "/v1/items/popular?n=3")
    top = popular["items"][0]["item_id"]
    similar = _show(client, "GET", f"/v1/items/{quote(top)}/similar?n=5", note="   (the top one)")
    category = _category_of(database_url, top)
    if category is not None:
        path = f"/v1/items/popular?n=5&category={quote(category)}"
        _show(client, "GET", path, note="   (its category)")
    _show_fold_in(client, [item["item_id"] for item in similar["items"][:3]])


def _show_fold_in(client: httpx.Client, liked: list[str]) -> None:
    """A shopper the model never saw buys a few items; their next list reflects it at once."""
    shopper = f"new-shopper-{secrets.token_hex(3)}"  # new on every run of the demo
    _banner(f"Real time: {shopper} is new, then buys {len(liked)} items")
    path = f"/v1/users/{shopper}/recommendations?n=5"
    before = _show(client, "GET", path, note="   (no history: popular items)")
    events = [{"user_id": shopper, "item_id": item, "type": "purchase"} for item in liked]
    _show(client, "POST", "/v1/events", events)
    after = _show(client, "GET", path, note="   (the purchases folded in, no retrain)")
    typer.secho(f'\n"source": "{before["source"]}" -> "{after["source"]}"', bold=True)


def _most_active_shopper(database_url: str) -> str:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT user_id FROM events GROUP BY user_id ORDER BY count(*) DESC, user_id LIMIT 1"
        ).fetchone()
    assert row is not None, "the demo imported no events"
    return str(row[0])


def _category_of(database_url: str, item_id: str) -> str | None:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT category FROM items WHERE item_id = %s", (item_id,)).fetchone()
    return str(row[0]) if row and row[0] is not None else None
