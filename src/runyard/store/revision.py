"""The schema revisions this code knows, oldest first; the last is the one it needs.

Kept apart from ``schema.py`` so that the fast paths can check a database's revision without
loading SQLAlchemy. A test checks these against the Alembic scripts.
"""

REVISIONS = ("0001", "0002", "0003", "0004", "0005", "0006", "0007", "0008")
SCHEMA_REVISION = REVISIONS[-1]
