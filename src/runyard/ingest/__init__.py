"""Ingest: spool records into the store, idempotently."""
