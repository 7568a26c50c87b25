"""Model servers: the handler protocol, the server app, and exporting a run's server (export.py)."""
