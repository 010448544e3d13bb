"""What every candidate of a sweep shares: the window, its holdout and the catalogue."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from offline.evaluation import time_split
from offline.holdout import Holdout, build_matrix_for, load_window, time_split_holdout
from shared.catalog import load_catalog
from shared.confidence import EventColumns
from shared.metering import Meter, PhaseMeasurement
from shared.ranking.values import CatalogSnapshot
from shared.retrain_config import RetrainConfig


@dataclass(frozen=True)
class Prepared:
    """The window, its holdout and the catalogue: the same for every candidate of a sweep."""

    config: RetrainConfig
    before: EventColumns  # the training split's events ("seen" of the served artifact)
    holdout: Holdout
    full_nnz: int
    catalog: CatalogSnapshot
    phase: PhaseMeasurement  # what loading and splitting cost


def prepare(conn: psycopg.Connection, config: RetrainConfig, *, meter: Meter) -> Prepared:
    """Load the retrain window and build its time-split holdout, metered as one phase."""
    with meter.measure("prepare") as progress:
        events = load_window(conn, config)
        holdout = time_split_holdout(events, config)
        before, _ = time_split(events, cutoff=holdout.cutoff)
        full_nnz = int(build_matrix_for(events, config).matrix.nnz)
    catalog = load_catalog(conn)
    conn.commit()
    assert progress.measurement is not None
    return Prepared(config, before, holdout, full_nnz, catalog, progress.measurement)
