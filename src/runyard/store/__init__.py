"""The store: metadata (SQL), metric series, logs and artifacts. See api.py for the contract."""
