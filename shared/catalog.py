"""The item catalogue: wire format, validation and SQL (upserts by item_id, loading)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any

import msgspec
import psycopg

from shared.events import Id, MalformedBody, Rejection, describe_error
from shared.ranking.values import CatalogSnapshot

Category = Annotated[str, msgspec.Meta(max_length=256)]


class ItemIn(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """One catalogue entry; unavailable items are never recommended."""

    item_id: Id
    category: Category | None = None
    available: bool = True
    attributes: dict[str, Any] = msgspec.field(default_factory=dict)


_decode_batch = msgspec.json.Decoder(list[ItemIn]).decode
_decode_raw_items = msgspec.json.Decoder(list[msgspec.Raw]).decode
_decode_one = msgspec.json.Decoder(ItemIn).decode

_UPSERT = """
INSERT INTO items (item_id, category, available, attributes)
SELECT * FROM unnest(%s::text[], %s::text[], %s::bool[], %s::jsonb[])
ON CONFLICT (item_id) DO UPDATE
   SET category = EXCLUDED.category,
       available = EXCLUDED.available,
       attributes = EXCLUDED.attributes,
       updated_at = now()
"""


def nul_error(item: ItemIn) -> str | None:
    """Why PostgreSQL could not store the item (a NUL character in its text), or None."""
    if "\x00" in item.item_id or "\x00" in (item.category or ""):
        return "item_id or category: must not contain the NUL character"
    if "\\u0000" in json.dumps(item.attributes):
        return "attributes: must not contain the NUL character"
    return None


def validate_items(body: bytes) -> tuple[list[ItemIn], list[Rejection]]:
    """Validate a JSON array of items; valid ones are kept even when others are not."""
    valid, rejected = _validate_items(body)
    kept: list[ItemIn] = []
    for index, item in valid:
        error = nul_error(item)
        if error is None:
            kept.append(item)
        else:
            rejected.append(Rejection(index, error))
    rejected.sort(key=lambda r: r.index)
    return kept, rejected


def _validate_items(body: bytes) -> tuple[list[tuple[int, ItemIn]], list[Rejection]]:
    """(index, item) of the valid items and the rejections, by position in the array."""
    try:
        return list(enumerate(_decode_batch(body))), []
    except msgspec.DecodeError:
        pass
    try:
        raw_items = _decode_raw_items(body)
    except msgspec.ValidationError:
        raise MalformedBody("the body must be a JSON array of item objects") from None
    except msgspec.DecodeError as exc:
        raise MalformedBody(f"the body is not valid JSON: {exc}") from None
    valid: list[tuple[int, ItemIn]] = []
    rejected: list[Rejection] = []
    for index, raw in enumerate(raw_items):
        try:
            valid.append((index, _decode_one(raw)))
        except msgspec.ValidationError as exc:
            rejected.append(Rejection(index, describe_error(exc)))
    return valid, rejected


def convert_item(fields: dict[str, Any]) -> ItemIn:
    """Validate one item given as a mapping of strings or JSON values (an import row)."""
    return msgspec.convert(fields, ItemIn, strict=False)


def upsert_items(conn: psycopg.Connection, items: Sequence[ItemIn]) -> int:
    """Insert or replace items in one statement; a repeated id in one batch: the last wins."""
    latest = {item.item_id: item for item in items}
    if not latest:
        return 0
    rows = list(latest.values())
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(
            _UPSERT,
            (
                [r.item_id for r in rows],
                [r.category for r in rows],
                [r.available for r in rows],
                [json.dumps(r.attributes) for r in rows],
            ),
        )
    return len(rows)


def item_json_schema() -> dict[str, Any]:
    schema: dict[str, Any] = msgspec.json.schema(list[ItemIn])
    return schema


def load_catalog(conn: psycopg.Connection) -> CatalogSnapshot:
    """Every item's category and availability, as the ranking core reads them."""
    rows = conn.execute("SELECT item_id, category, available FROM items").fetchall()
    return CatalogSnapshot.from_rows(rows)


def catalog_stamp(conn: psycopg.Connection) -> tuple[int, datetime | None]:
    """Cheap change detector for the items table: (row count, newest update)."""
    row = conn.execute("SELECT count(*), max(updated_at) FROM items").fetchone()
    assert row is not None
    return int(row[0]), row[1]
