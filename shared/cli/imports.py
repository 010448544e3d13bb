"""`recsys events import` and `recsys items import` (placeholder, being written)."""

from __future__ import annotations

import typer

events_app = typer.Typer(help="The event log.", no_args_is_help=True)
items_app = typer.Typer(help="The item catalogue.", no_args_is_help=True)
