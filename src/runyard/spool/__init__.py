"""The spool: append-only, checksummed segment files, written before anything else."""
