"""Operator actions that both the admin API and the CLI call: task names, a broker client
that registers no tasks, queueing a retrain, schedules. Imports only `shared` (and Celery)."""
