"""The HTTP API: the ASGI app, auth, rate limits, serving metering, the live model and routes.
May import `shared` only; never the trainer (`offline`) nor the CLI."""
