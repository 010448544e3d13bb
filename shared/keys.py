"""API keys: make one, keep only its hash, look it up, list and revoke them (values bound).

A key is `rk_` + 43 URL-safe characters (32 random bytes). It is shown once, when created;
the database keeps its SHA-256 and its first characters (`prefix`), so people can tell their
keys apart in `recsys keys list` and revoke one by prefix.

Why a plain SHA-256, without salt or a slow hash: those protect *low-entropy* secrets
(passwords) from dictionary and brute-force attacks on a stolen table. A key carries 256 bits
from `secrets`, so no dictionary holds it and no amount of hashing speed makes a preimage
search feasible; salt or bcrypt would add nothing but cost on every cache miss, and an
unsalted hash is what lets a request find its key through the unique index in one lookup.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.rows import class_row

SCOPES: tuple[str, ...] = ("recommend", "events", "admin", "analyst")
KEY_MARK = "rk_"
PREFIX_LENGTH = len(KEY_MARK) + 6
KEY_PATTERN = re.compile(r"rk_[A-Za-z0-9_-]{43}")
# last_used_at is for people ("is this key still in use?"): an hour's resolution is plenty,
# and it keeps the write off the request path (at most one per key and hour and process).
LAST_USED_RESOLUTION_SECONDS = 3600

_COLUMNS = "key_id, name, prefix, scopes, created_at, revoked_at, last_used_at"


@dataclass(frozen=True)
class ApiKey:
    """What is stored about a key (never the key itself)."""

    key_id: uuid.UUID
    name: str
    prefix: str
    scopes: list[str]
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None


@dataclass(frozen=True)
class NewKey:
    """A key just created: the only moment its plaintext exists outside the caller's hands."""

    key: str
    record: ApiKey

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, **asdict(self.record)}


class InvalidKeyRequest(ValueError):
    """A bad name or scope list, or a revoke target that names no key or several."""


def parse_scopes(scopes: str | Iterable[str]) -> list[str]:
    """`recommend,events` -> ['recommend', 'events'] (order kept, duplicates dropped)."""
    parts = scopes.split(",") if isinstance(scopes, str) else list(scopes)
    wanted = list(dict.fromkeys(p.strip() for p in parts if p.strip()))
    if not wanted:
        raise InvalidKeyRequest(f"give at least one scope of: {', '.join(SCOPES)}")
    unknown = [s for s in wanted if s not in SCOPES]
    if unknown:
        raise InvalidKeyRequest(
            f"unknown scope {', '.join(map(repr, unknown))}; scopes are: {', '.join(SCOPES)}"
        )
    return wanted


def generate_key() -> str:
    return KEY_MARK + secrets.token_urlsafe(32)


def hash_key(key: str) -> bytes:
    """SHA-256 of the key (see the module docstring for why this is enough)."""
    return hashlib.sha256(key.encode()).digest()


def looks_like_key(text: str) -> bool:
    """Whether text has a key's shape: lets garbage be refused without a database lookup."""
    return KEY_PATTERN.fullmatch(text) is not None


def create_key(conn: psycopg.Connection, *, name: str, scopes: str | Iterable[str]) -> NewKey:
    """Store a new key's hash and scopes; the returned plaintext is never stored."""
    name = name.strip()
    if not name or len(name) > 200:
        raise InvalidKeyRequest("a key needs a name of 1 to 200 characters")
    wanted = parse_scopes(scopes)
    key = generate_key()
    with conn.cursor(row_factory=class_row(ApiKey)) as cur:
        cur.execute(
            f"INSERT INTO api_keys (key_id, name, prefix, key_hash, scopes) "
            f"VALUES (%s, %s, %s, %s, %s) RETURNING {_COLUMNS}",
            (uuid.uuid4(), name, key[:PREFIX_LENGTH], hash_key(key), wanted),
        )
        record = cur.fetchone()
    assert record is not None
    return NewKey(key=key, record=record)


def list_keys(conn: psycopg.Connection) -> list[ApiKey]:
    """Every key, newest first, revoked ones included (revoked_at says so)."""
    with conn.cursor(row_factory=class_row(ApiKey)) as cur:
        return cur.execute(f"SELECT {_COLUMNS} FROM api_keys ORDER BY created_at DESC").fetchall()


def find_by_hash(conn: psycopg.Connection, key_hash: bytes) -> ApiKey | None:
    """The key with this hash (revoked or not); notes its use if last_used_at is stale."""
    with conn.cursor(row_factory=class_row(ApiKey)) as cur:
        found = cur.execute(
            f"SELECT {_COLUMNS} FROM api_keys WHERE key_hash = %s", (key_hash,)
        ).fetchone()
    if found is not None and found.revoked_at is None and _use_is_stale(found.last_used_at):
        _record_use(conn, found.key_id)
    return found


def _use_is_stale(last_used_at: datetime | None) -> bool:
    if last_used_at is None:
        return True
    age = datetime.now(UTC) - last_used_at
    return age.total_seconds() >= LAST_USED_RESOLUTION_SECONDS


def _record_use(conn: psycopg.Connection, key_id: uuid.UUID) -> None:
    # The condition repeats the check in SQL so that processes racing here write once.
    conn.execute(
        "UPDATE api_keys SET last_used_at = now() WHERE key_id = %s "
        "AND (last_used_at IS NULL OR last_used_at < now() - make_interval(secs => %s))",
        (key_id, LAST_USED_RESOLUTION_SECONDS),
    )


def revoke_key(conn: psycopg.Connection, target: str) -> tuple[ApiKey, bool]:
    """Revoke the key a key id, a prefix or the key itself names; (its row, newly revoked?).

    Revoking twice is not an error: the second call reports the first revocation.
    """
    key_id = _resolve(conn, target.strip())
    with conn.cursor(row_factory=class_row(ApiKey)) as cur:
        revoked = cur.execute(
            f"UPDATE api_keys SET revoked_at = now() WHERE key_id = %s AND revoked_at IS NULL "
            f"RETURNING {_COLUMNS}",
            (key_id,),
        ).fetchone()
        if revoked is not None:
            return revoked, True
        earlier = cur.execute(
            f"SELECT {_COLUMNS} FROM api_keys WHERE key_id = %s", (key_id,)
        ).fetchone()
    assert earlier is not None
    return earlier, False


def _resolve(conn: psycopg.Connection, target: str) -> uuid.UUID:
    """The one key id that target names, or InvalidKeyRequest saying why not."""
    ids = _matching_ids(conn, target)
    if not ids:
        raise InvalidKeyRequest(f"no key with id or prefix {target!r}")
    if len(ids) > 1:
        listed = ", ".join(map(str, ids))
        raise InvalidKeyRequest(f"prefix {target!r} names several keys ({listed}); give the key id")
    return ids[0]


def _matching_ids(conn: psycopg.Connection, target: str) -> list[uuid.UUID]:
    value: object
    if looks_like_key(target):
        query, value = "SELECT key_id FROM api_keys WHERE key_hash = %s", hash_key(target)
    elif _is_uuid(target):
        query, value = "SELECT key_id FROM api_keys WHERE key_id = %s", uuid.UUID(target)
    else:
        query, value = "SELECT key_id FROM api_keys WHERE prefix = %s", target
    return [row[0] for row in conn.execute(query, (value,)).fetchall()]


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True
