"""The layout's one-way arrows: the import contracts hold, and the API loads no trainer."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_import_contracts_hold() -> None:
    """pyproject.toml's import-linter contracts (shared is a leaf, online and offline meet
    only in shared, no cycles): `lint-imports` exits 0 only when every one is kept."""
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint is not None, "import-linter is a dev dependency (pip install -e '.[dev]')"
    done = subprocess.run(
        [lint, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_the_api_loads_neither_celery_nor_the_trainer() -> None:
    """A fresh interpreter imports online.main: no celery, kombu, redbeat, implicit or offline."""
    probe = (
        "import sys, online.main; print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    loaded = set(done.stdout.split())
    assert "online" in loaded
    assert loaded.isdisjoint({"celery", "kombu", "redbeat", "implicit", "offline", "cli"})
