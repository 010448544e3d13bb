"""docker-compose.yml: the six services, their order, and commands the `recsys` CLI really has.

No Docker engine is needed: the file is read as YAML, and each service's command is resolved
against the Typer app, so renaming a command or an option breaks this test, not a deploy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from typer.testing import CliRunner

from cli.main import app

ROOT = Path(__file__).resolve().parents[2]
APP_SERVICES = ("migrate", "api", "worker", "beat")
ARTIFACT_DIR = "/var/lib/recsys/artifacts"


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    found: dict[str, Any] = compose["services"]
    return found


def test_the_six_services(services: dict[str, Any]) -> None:
    assert set(services) == {"postgres", "redis", *APP_SERVICES}
    assert services["postgres"]["image"].startswith("postgres:16")
    assert services["redis"]["image"].startswith("redis:7")


def test_postgres_and_redis_have_healthchecks(services: dict[str, Any]) -> None:
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert services["redis"]["healthcheck"]["test"][-2:] == ["redis-cli", "ping"]


def test_migrate_runs_once_after_postgres_and_the_rest_wait_for_it(
    services: dict[str, Any],
) -> None:
    migrate = services["migrate"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("api", "worker", "beat"):
        assert services[name]["depends_on"]["migrate"] == {
            "condition": "service_completed_successfully"
        }, name


def test_app_services_are_built_from_the_one_dockerfile(services: dict[str, Any]) -> None:
    for name in APP_SERVICES:
        build = services[name]["build"]
        assert build["dockerfile"] == "infra/Dockerfile", name
        assert (ROOT / build["context"] / build["dockerfile"]).is_file(), name


def test_app_services_get_database_redis_and_artifact_settings(services: dict[str, Any]) -> None:
    for name in APP_SERVICES:
        env = services[name]["environment"]
        assert env["RECSYS_DATABASE_URL"].startswith("postgresql://recsys:"), name
        assert env["RECSYS_DATABASE_URL"].endswith("@postgres:5432/recsys"), name
        assert env["RECSYS_REDIS_URL"] == "redis://redis:6379/0", name
        assert env["RECSYS_ARTIFACT_DIR"] == ARTIFACT_DIR, name


def test_api_and_worker_share_the_artifact_volume(services: dict[str, Any]) -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mounts = {name: _artifact_volume(services[name]) for name in ("api", "worker")}
    assert mounts["api"] == mounts["worker"] is not None
    assert mounts["worker"] in compose["volumes"]
    assert ARTIFACT_DIR + ":ro" in " ".join(services["api"]["volumes"])
    assert services["api"]["ports"] == ["8000:8000"]


@pytest.mark.parametrize("name", APP_SERVICES)
def test_service_command_is_a_real_recsys_command(services: dict[str, Any], name: str) -> None:
    program, *args = services[name]["command"]
    assert program == "recsys"
    result = CliRunner().invoke(app, [*args, "--help"])
    assert result.exit_code == 0, result.output
    _parse_without_running(args)


def _artifact_volume(service: dict[str, Any]) -> str | None:
    for mount in service.get("volumes", []):
        source, target, *_ = mount.split(":")
        if target == ARTIFACT_DIR:
            return str(source)
    return None


def _parse_without_running(args: list[str]) -> None:
    """Resolve the sub-command and convert every option value, without calling the command."""
    # Typer ships its own copy of click, so groups are told apart by what they can do.
    command: Any = typer.main.get_command(app)
    name, rest, parent = "recsys", list(args), None
    while hasattr(command, "resolve_command"):
        ctx = command.context_class(command, info_name=name, parent=parent)
        name, command, rest = command.resolve_command(ctx, rest)
        parent = ctx
    command.make_context(name, rest, parent=parent)
