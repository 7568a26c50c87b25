"""The tracking server: HTTP API, ingest, live events (imported only by `runyard server` and tests)."""
