"""Watch for promotions (LISTEN/NOTIFY, polling as the fallback) and swap the live model.

One thread per API process. A promotion commits with a NOTIFY on `recsys_model_promoted`;
the thread wakes, reads the pointer, loads the new version (checksums verified) off the
request path and swaps the reference. A corrupt or missing artifact is refused (logged,
counted) and the old version keeps serving. The catalogue (availability, categories) is
refreshed on the same thread when the items table changed. Before any version is published,
the thread serves the event log's popular-now lists (shared.popular_now), rebuilt every 30 s.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime
from pathlib import Path

import psycopg

from online.live_model import LiveModel
from shared.artifacts import CorruptArtifact
from shared.catalog import catalog_stamp, load_catalog
from shared.popular_now import popular_now
from shared.ranking.recommender import CatalogSnapshot, Recommender
from shared.registry import PROMOTION_CHANNEL

log = logging.getLogger(__name__)
_RETRY_REFUSED_AFTER = 60.0  # seconds before a refused version is tried again
FALLBACK_REFRESH_SECONDS = 30.0  # how often popular-now lists are rebuilt before any version


class Reloader:
    """Keeps `live` on the promoted version and its catalogue fresh."""

    def __init__(
        self, database_url: str, live: LiveModel, *, poll_seconds: float = 2.0, verify: bool = True
    ) -> None:
        self.database_url = database_url
        self.live = live
        self.poll_seconds = poll_seconds
        self.verify = verify
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._refused_at: dict[str, float] = {}
        self._catalog_stamp: tuple[int, datetime | None] | None = None
        self._catalog: CatalogSnapshot | None = None
        self._fallback_at: float | None = None  # monotonic time of the last popular_now

    def check_now(self) -> None:
        """One check on a connection of its own, before the process takes requests, so its
        first answer already comes from the promoted version (or popular-now lists). A
        database that does not answer within seconds is left to the thread's retries."""
        try:
            with psycopg.connect(self.database_url, autocommit=True, connect_timeout=3) as conn:
                self.check(conn)
        except psycopg.Error as exc:
            log.warning("first model check failed (%s); the reloader keeps trying", exc)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="model-reloader", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout)

    def check(self, conn: psycopg.Connection) -> None:
        """Bring the live model to the promoted version and the current catalogue."""
        self._refresh_catalog(conn)
        row = conn.execute(
            "SELECT p.version, v.artifact_path FROM model_pointer p "
            "JOIN model_versions v USING (version)"
        ).fetchone()
        if row is None:
            self._serve_popular_now(conn)
            return
        if row[0] == self.live.version:
            return
        version, path = row
        refused = self._refused_at.get(version)
        if refused is not None and time.monotonic() - refused < _RETRY_REFUSED_AFTER:
            return
        self._load(version, Path(path))

    def _load(self, version: str, path: Path) -> None:
        started = time.monotonic()
        try:
            recommender = Recommender.load(path, catalog=self._catalog, verify=self.verify)
        except (CorruptArtifact, OSError, ValueError) as exc:
            self._refused_at[version] = time.monotonic()
            self.live.refuse(version)
            log.error(
                "refused model version %s: %s; still serving %s", version, exc, self.live.version
            )
            return
        self._refused_at.pop(version, None)
        self.live.swap(recommender)
        log.warning(
            "now serving model version %s (loaded in %.2f s)", version, time.monotonic() - started
        )

    def _serve_popular_now(self, conn: psycopg.Connection) -> None:
        """No version is published: answer from the event log's popularity, rebuilt every
        FALLBACK_REFRESH_SECONDS while that lasts (a real version replaces it at once)."""
        current = self.live.current
        if current is not None and not current.is_fallback:
            return  # a loaded version keeps serving even if the pointer went away
        last = self._fallback_at
        if last is not None and time.monotonic() - last < FALLBACK_REFRESH_SECONDS:
            return
        self._fallback_at = time.monotonic()
        item_ids, scores = popular_now(conn)
        catalog = self._catalog or load_catalog(conn)
        self.live.swap(Recommender.popular_only(item_ids, scores, catalog=catalog))

    def _refresh_catalog(self, conn: psycopg.Connection) -> None:
        stamp = catalog_stamp(conn)
        if stamp == self._catalog_stamp:
            return
        self._catalog = load_catalog(conn)
        self._catalog_stamp = stamp
        current = self.live.current
        if current is not None:
            self.live.swap(current.with_catalog(self._catalog))

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._listen()
            except psycopg.Error as exc:
                log.warning("reloader lost the database (%s); retrying", exc)
                self._stop.wait(self.poll_seconds)

    def _listen(self) -> None:
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            conn.execute(f"LISTEN {PROMOTION_CHANNEL}")
            while not self._stop.is_set():
                self.check(conn)
                # Wakes on a promotion's NOTIFY, or after poll_seconds as the fallback.
                for _ in conn.notifies(timeout=self.poll_seconds, stop_after=1):
                    pass
