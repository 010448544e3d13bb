"""The names the offline path and its callers agree on: Celery task names and queues.

Callers send tasks by name (`client.send_task(RETRAIN)`) and never import the task's code;
the worker registers its functions under these names (offline/tasks.py). No imports at all,
so the API can name a task without loading Celery.
"""

from __future__ import annotations

PING = "offline.tasks.ping"
RETRAIN = "offline.tasks.retrain"
RETRAIN_SCHEDULED = "offline.tasks.retrain_scheduled"
SWEEP_RUNS = "offline.tasks.sweep_runs"
TRADEOFF_MEASURE = "offline.tasks.tradeoff_measure"
TRADEOFF_FINISH = "offline.tasks.tradeoff_finish"
TUNE = "offline.tasks.tune"

DEFAULT_QUEUE = "default"
TRAINING_QUEUE = "training"
QUEUES = (TRAINING_QUEUE, DEFAULT_QUEUE)
