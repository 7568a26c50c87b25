"""``runyard migrate``: upgrade a database schema explicitly."""

from __future__ import annotations

import click

from runyard.config import resolve
from runyard.store.engine import create_engine, masked
from runyard.store.migrate import require_known, schema_state, upgrade


def run(db: str | None, check: bool) -> int:
    settings = resolve(overrides={"db": db} if db else None)
    engine = create_engine(settings.db)
    try:
        state = schema_state(engine)
        require_known(state)
        where = masked(settings.db)
        if state.up_to_date:
            click.echo(f"{where}: schema is at revision {state.head}, up to date")
            return 0
        if check:
            click.echo(f"{where}: schema is at revision {state.current or '(empty)'}; "
                       f"this runyard needs {state.head}: run `runyard migrate`")
            return 1
        before, after = upgrade(engine)
        click.echo(f"{where}: schema upgraded from {before or '(empty)'} to {after}")
        return 0
    finally:
        engine.dispose()
