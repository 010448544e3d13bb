"""Apply a sweep's choice: store it as the retrain settings in force and queue a retrain.

The new settings take effect only through a normal retrain, so the version they produce
passes the same gate as any other (beats popularity, not worse than live); the sweep's
measurement is a reason to try the settings, not a licence to skip the gate.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import psycopg

from offline.retrain_overrides import StoredOverrides, save_overrides
from offline.tradeoff import store
from shared.control.retrain import Trigger, request_retrain
from shared.settings import Settings

_NOT_SAVED = ("num_threads",)  # a property of the machine, not of the choice


class NothingToApply(ValueError):
    """The run has no chosen candidate (still running, failed) or the candidate is unusable."""


@dataclass(frozen=True)
class Applied:
    settings: StoredOverrides
    candidate: store.CandidateRow
    trigger: Trigger


def apply_choice(
    conn: psycopg.Connection,
    settings: Settings,
    run_id: uuid.UUID,
    *,
    candidate_id: int | None = None,
) -> Applied:
    """Save the candidate's settings (default: the chosen one) and queue a forced retrain.

    Forced: the data did not change, the settings did. The caller executes the queued run
    (inline, or by sending the retrain task) as it would any trigger's.
    """
    run = store.get_run(conn, run_id)
    if run is None:
        raise NothingToApply(f"no tradeoff run {run_id}")
    chosen = run.chosen_candidate if candidate_id is None else candidate_id
    if chosen is None:
        raise NothingToApply(f"tradeoff run {run_id} has no chosen candidate ({run.status})")
    row = store.get_candidate(conn, run_id, chosen)
    if row is None or row.status != "done":
        raise NothingToApply(f"candidate {chosen} of run {run_id} was not measured")
    model = {k: v for k, v in row.model.items() if k not in _NOT_SAVED}
    with conn.transaction():
        saved = save_overrides(
            conn,
            source="tradeoff",
            model=model,
            serving=row.serving,
            origin={"tradeoff_run": str(run_id), "candidate": chosen},
            note=f"tradeoff choice: {row.label}",
        )
    trigger = request_retrain(conn, settings, trigger="tradeoff", force=True)
    store.mark_applied(conn, run_id, settings_id=saved.settings_id, retrain=trigger.run_id)
    return Applied(saved, row, trigger)
