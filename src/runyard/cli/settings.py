"""``runyard config``: every setting, its value and where it came from."""

from __future__ import annotations

import orjson
from rich.console import Console
from rich.table import Table

from runyard import redact
from runyard.config import SETTINGS, resolve


def run(as_json: bool) -> None:
    settings = resolve()
    rows: list[tuple[str, str | None, str]] = [("home", str(settings.home), settings.home_source)]
    for s in SETTINGS:
        value = settings.values[s.key].value
        if isinstance(value, str):
            value = redact.url(value)  # a server URL may carry user:password@
        rows.append((s.key, "(set, hidden)" if s.secret and value is not None else value, settings.source(s.key)))
    if as_json:
        doc = {key: {"value": value, "source": source} for key, value, source in rows}
        print(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("setting", "value", "source"):
        table.add_column(column, overflow="fold")
    for key, value, source in rows:
        table.add_row(key, "[dim](unset)[/dim]" if value is None else value, source)
    console = Console()
    console.print(table)
    if settings.project_file is None:
        console.print("[dim]no project runyard.toml found above this directory[/dim]")
