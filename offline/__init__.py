"""The training side: the Celery worker and tasks, loading, the retrain pipeline, evaluation,
tuning and the tradeoff lab. May import `shared` only; never the API (`online`) nor the CLI."""
