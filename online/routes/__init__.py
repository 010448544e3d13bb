"""One module per resource of the HTTP API (events, items, recommendations, admin, health,
metrics). Thin: each route calls plain functions of `online` and `shared`."""
