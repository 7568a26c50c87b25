"""Execution: snapshots, the queue and scheduler, executors, and the per-run supervisor."""
