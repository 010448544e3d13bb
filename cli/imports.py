"""`recsys events import` and `recsys items import`: thin commands over shared/importing/.

The JSON summary goes to stdout; a one-line human summary, the first few reject reasons and
a progress bar (only when stderr is a terminal) go to stderr. Exit codes: 0 done (rejected
rows are counted and written to the rejects file, not an error), 1 the database failed,
2 the options do not fit the file (nothing stored), 130 interrupted. After 1 or 130 the
committed chunks stay, and re-running the same command finishes the import.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import typer
from tqdm import tqdm

from cli.context import cli_context, fail, print_json
from shared.events import EventRules
from shared.importing.chunks import DEFAULT_CHUNK_SIZE
from shared.importing.columns import ColumnMap, parse_type_map
from shared.importing.events import ImportSummary, import_events
from shared.importing.items import ItemColumns, ItemImportSummary, import_items
from shared.importing.readers import ImportConfigError

events_app = typer.Typer(help="The event log.", no_args_is_help=True)
items_app = typer.Typer(help="The item catalogue.", no_args_is_help=True)

FILE = typer.Argument(..., exists=True, dir_okay=False, readable=True, help="CSV or JSONL (.gz).")
FORMAT = typer.Option(None, "--format", help="csv or jsonl (default: from the file name).")
CHUNK = typer.Option(DEFAULT_CHUNK_SIZE, "--chunk-size", min=1, help="Rows per transaction.")
REJECTS = typer.Option(None, "--rejects", help="Rejects file (default FILE.rejects.jsonl).")
DELIMITER = typer.Option(",", "--delimiter", help="CSV field separator.")


@events_app.command("import")
def import_events_command(
    ctx: typer.Context,
    file: Path = FILE,
    file_format: str | None = FORMAT,
    user_col: str | None = typer.Option(None, "--user-col", help="Column of user_id."),
    item_col: str | None = typer.Option(None, "--item-col", help="Column of item_id."),
    type_col: str | None = typer.Option(None, "--type-col", help="Column of the event type."),
    type_constant: str | None = typer.Option(None, "--type", help="One type for every row."),
    value_col: str | None = typer.Option(None, "--value-col", help="Column of value."),
    time_col: str | None = typer.Option(None, "--time-col", help="Column of occurred_at."),
    time_format: str = typer.Option("iso", "--time-format", help="iso, epoch or epoch_ms."),
    event_id_col: str | None = typer.Option(None, "--event-id-col", help="Column of event_id."),
    type_map: str | None = typer.Option(
        None, "--type-map", help="Rename types: addtocart=add_to_cart,transaction=purchase."
    ),
    chunk_size: int = CHUNK,
    rejects: Path | None = REJECTS,
    delimiter: str = DELIMITER,
) -> None:
    """Import events; re-running (after an interruption too) stores nothing twice."""
    context = cli_context(ctx)
    with _config_errors():
        columns = ColumnMap(
            event_id=event_id_col,
            user_id=user_col,
            item_id=item_col,
            type=type_col,
            value=value_col,
            occurred_at=time_col,
            type_constant=type_constant,
            time_format=time_format,  # type: ignore[arg-type]  # checked by ColumnMap
            type_map=parse_type_map(type_map or ""),
        )
    with _connection(context.database_url()) as conn, _progress(file) as progress:
        summary = import_events(
            conn,
            file,
            columns=columns,
            rules=EventRules.from_settings(context.settings),
            chunk_size=chunk_size,
            rejects_path=rejects,
            file_format=file_format,
            delimiter=delimiter,
            progress=progress,
        )
    _report(summary, _events_line(summary))


@items_app.command("import")
def import_items_command(
    ctx: typer.Context,
    file: Path = FILE,
    file_format: str | None = FORMAT,
    item_col: str | None = typer.Option(None, "--item-col", help="Column of item_id."),
    category_col: str | None = typer.Option(None, "--category-col", help="Column of category."),
    chunk_size: int = CHUNK,
    rejects: Path | None = REJECTS,
    delimiter: str = DELIMITER,
) -> None:
    """Insert or update catalogue items; other columns become attributes."""
    columns = ItemColumns(item_id=item_col, category=category_col)
    with _connection(cli_context(ctx).database_url()) as conn, _progress(file) as progress:
        summary = import_items(
            conn,
            file,
            columns=columns,
            chunk_size=chunk_size,
            rejects_path=rejects,
            file_format=file_format,
            delimiter=delimiter,
            progress=progress,
        )
    _report(summary, _items_line(summary))


@contextmanager
def _config_errors() -> Iterator[None]:
    """Known failures as one clear line: options (exit 2), database (1), Ctrl-C (130)."""
    resume = "committed chunks are kept, re-run to finish"
    try:
        yield
    except ImportConfigError as exc:
        raise fail(str(exc), code=2) from None
    except psycopg.OperationalError as exc:
        raise fail(f"database: {str(exc).strip()} ({resume})") from None
    except KeyboardInterrupt:
        raise fail(f"interrupted; {resume}", 130) from None


@contextmanager
def _connection(url: str) -> Iterator[psycopg.Connection]:
    with _config_errors(), psycopg.connect(url, autocommit=True) as conn:
        yield conn


@contextmanager
def _progress(file: Path) -> Iterator[Callable[[int], None] | None]:
    """A byte-based progress bar on stderr, only when stderr is a terminal."""
    if not sys.stderr.isatty():
        yield None
        return
    with tqdm(total=file.stat().st_size, unit="B", unit_scale=True, file=sys.stderr) as bar:

        def advance(done: int) -> None:
            bar.update(done - bar.n)

        yield advance


def _report(summary: ImportSummary | ItemImportSummary, line: str) -> None:
    for number, error in summary.first_errors:
        typer.echo(f"line {number}: {error}", err=True)
    if summary.rejected > len(summary.first_errors):
        typer.echo(f"... all {summary.rejected} rejects in {summary.rejects_file}", err=True)
    typer.echo(line, err=True)
    print_json(summary.to_dict())


def _events_line(s: ImportSummary) -> str:
    line = (
        f"imported {s.accepted:,} events from {Path(s.file).name} in {s.seconds:.1f} s "
        f"({s.events_per_second:,.0f} rows/s); {s.duplicates:,} duplicates skipped"
    )
    return line + _rejects_note(s.rejected, s.rejects_file)


def _items_line(s: ItemImportSummary) -> str:
    line = f"upserted {s.upserted:,} items from {Path(s.file).name} in {s.seconds:.1f} s"
    return line + _rejects_note(s.rejected, s.rejects_file)


def _rejects_note(rejected: int, rejects_file: str | None) -> str:
    return f", {rejected:,} rejected (see {rejects_file})" if rejected else ", none rejected"
