"""`recsys keys create|list|revoke` on the real PostgreSQL: the key is shown once, only its
hash is stored."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Callable
from typing import Any

import orjson
import psycopg
import pytest
from typer.testing import CliRunner, Result

from cli.main import app
from tests.processes import RECSYS

Run = Callable[..., Result]


@pytest.fixture
def recsys(clean_database: str) -> Run:
    """recsys(*args) -> the CLI's result, run against the test database."""

    def run(*args: str) -> Result:
        env = {"RECSYS_DATABASE_URL": clean_database}
        return CliRunner().invoke(app, list(args), env=env)

    return run


def created(recsys: Run, scopes: str = "recommend,events", name: str = "shop") -> dict[str, Any]:
    result = recsys("keys", "create", "--name", name, "--scopes", scopes, "--json")
    assert result.exit_code == 0, result.output
    answer: dict[str, Any] = orjson.loads(result.stdout)
    return answer


def stored_rows(database_url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            "SELECT key_id::text, key_hash, row_to_json(api_keys)::text FROM api_keys"
        ).fetchall()


def test_create_prints_the_key_once_and_stores_only_its_hash(
    recsys: Run, clean_database: str
) -> None:
    answer = created(recsys)
    key = answer["key"]
    assert key.startswith("rk_")
    assert len(key) == 46
    assert answer["name"] == "shop"
    assert answer["scopes"] == ["recommend", "events"]
    assert answer["prefix"] == key[:9]
    assert answer["revoked_at"] is None
    [(key_id, key_hash, row)] = stored_rows(clean_database)
    assert key_id == answer["key_id"]
    assert bytes(key_hash) == hashlib.sha256(key.encode()).digest()
    assert key not in row
    assert key[9:] not in row  # not even the secret part past the shown prefix


def test_create_for_people_says_it_cannot_be_shown_again(recsys: Run) -> None:
    result = recsys("keys", "create", "--name", "ops", "--scopes", "admin")
    assert result.exit_code == 0, result.output
    assert "cannot be shown again" in result.stdout
    key = next(word for word in result.stdout.split() if word.startswith("rk_"))
    listed = recsys("keys", "list")
    assert key not in listed.stdout
    assert key[:9] in listed.stdout


def test_list_shows_every_key_without_secrets(recsys: Run) -> None:
    first = created(recsys, "events", name="importer")
    second = created(recsys, "admin,analyst", name="ops")
    result = recsys("keys", "list", "--json")
    assert result.exit_code == 0, result.output
    listed = orjson.loads(result.stdout)["keys"]
    assert [k["key_id"] for k in listed] == [second["key_id"], first["key_id"]]
    assert [k["scopes"] for k in listed] == [["admin", "analyst"], ["events"]]
    assert all(set(k) == set(first) - {"key"} for k in listed)
    table = recsys("keys", "list").stdout
    assert table.splitlines()[0].split()[:4] == ["key_id", "prefix", "name", "scopes"]
    assert "importer" in table
    assert "admin,analyst" in table


def test_revoke_by_prefix_or_id_and_twice(recsys: Run) -> None:
    key = created(recsys)
    first = recsys("keys", "revoke", key["prefix"], "--json")
    assert first.exit_code == 0, first.output
    revoked = orjson.loads(first.stdout)
    assert revoked["key_id"] == key["key_id"]
    assert revoked["revoked_at"] is not None
    assert revoked["already_revoked"] is False
    again = recsys("keys", "revoke", key["key_id"], "--json")
    assert again.exit_code == 0, again.output
    assert orjson.loads(again.stdout)["already_revoked"] is True
    assert orjson.loads(again.stdout)["revoked_at"] == revoked["revoked_at"]
    listed = orjson.loads(recsys("keys", "list", "--json").stdout)["keys"]
    assert listed[0]["revoked_at"] == revoked["revoked_at"]


def test_revoke_by_the_key_itself(recsys: Run) -> None:
    key = created(recsys)
    result = recsys("keys", "revoke", key["key"])
    assert result.exit_code == 0, result.output
    assert f"revoked key {key['key_id']}" in result.stdout


def test_revoking_an_unknown_key_is_a_clear_error(recsys: Run) -> None:
    result = recsys("keys", "revoke", "rk_nope")
    assert result.exit_code == 1
    assert "no key with id or prefix 'rk_nope'" in result.stderr


@pytest.mark.parametrize(
    ("scopes", "message"),
    [
        ("recommend,root", "unknown scope 'root'; scopes are: recommend, events, admin, analyst"),
        (",", "give at least one scope of: recommend, events, admin, analyst"),
    ],
)
def test_a_bad_scope_is_exit_2_and_stores_nothing(
    recsys: Run, clean_database: str, scopes: str, message: str
) -> None:
    result = recsys("keys", "create", "--name", "x", "--scopes", scopes, "--json")
    assert result.exit_code == 2
    assert f"recsys: error: {message}" in result.stderr
    assert result.stdout == ""
    assert stored_rows(clean_database) == []


def test_a_blank_name_is_exit_2(recsys: Run) -> None:
    result = recsys("keys", "create", "--name", "  ", "--scopes", "events")
    assert result.exit_code == 2
    assert "name of 1 to 200 characters" in result.stderr


def test_the_table_refuses_unknown_scopes_too(clean_database: str) -> None:
    with psycopg.connect(clean_database) as conn, pytest.raises(psycopg.errors.CheckViolation):
        conn.execute(
            "INSERT INTO api_keys (key_id, name, prefix, key_hash, scopes) "
            "VALUES (gen_random_uuid(), 'x', 'rk_x', %s, %s)",
            (bytes(32), ["events", "root"]),
        )


@pytest.mark.e2e
def test_the_installed_command_creates_a_key(clean_database: str) -> None:
    done = subprocess.run(
        [RECSYS, "keys", "create", "--name", "cli", "--scopes", "events", "--json"],
        env={**os.environ, "RECSYS_DATABASE_URL": clean_database},
        capture_output=True,
        check=True,
        timeout=60,
    )
    assert orjson.loads(done.stdout)["key"].startswith("rk_")
