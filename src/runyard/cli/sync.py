"""``runyard sync``: ingest pending spools now and report per run."""

from __future__ import annotations

import orjson

from runyard.api import Api
from runyard.errors import NotFound


def run(refs: tuple[str, ...], as_json: bool) -> int:
    api = Api(catch_up=False)
    try:
        run_ids = None
        if refs:
            run_ids = []
            for ref in refs:
                try:
                    run_ids.append(api.store.get_run(ref).id)
                except NotFound:
                    if len(ref) == 26:  # a run still only in the spool: its id
                        run_ids.append(ref.upper())
                    else:
                        raise
        report = api.sync(runs=run_ids)
        rows = []
        for w in report.writers:
            if w.error is not None:
                state = f"not delivered, kept in the spool: {w.error}"
            else:
                state = "still logging" if w.alive else ("marked lost" if w.marked_lost else "complete")
            rows.append({"run": w.run_number, "run_id": w.run_id, "writer": w.writer, "records": w.records,
                         "dropped_bytes": w.dropped_bytes, "skipped_bytes": w.skipped_bytes,
                         "quarantined": w.quarantined, "state": state, "error": w.error})
        from runyard.ingest import quarantine

        held = quarantine.listing(api.settings.spool_dir)
        failed = 1 if report.errors else 0  # the records are safe; a script should still know
        if as_json:
            doc = {"writers": rows, "retired": report.retired,
                   "quarantine": {"records": len(held), "directory": str(api.settings.spool_dir / quarantine.DIR)}}
            print(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
            return failed
        if not rows and not held:
            print("nothing to sync: every spool is in the store")
            return 0
        for r in rows:
            notes = []
            if r["dropped_bytes"]:
                notes.append(f"dropped a torn tail of {r['dropped_bytes']:,} bytes")
            if r["skipped_bytes"]:
                notes.append(f"skipped {r['skipped_bytes']:,} corrupt bytes")
            if r["quarantined"]:
                notes.append(f"set {r['quarantined']:,} records aside that the store refused")
            extra = "".join(f", {n}" for n in notes)
            print(f"run {r['run'] or r['run_id']}: {r['records']:,} records ingested{extra}; {r['state']}")
        if held:
            from runyard.cli.printable import printable

            # The reason may quote what the record held (a key, a value): escaped for the terminal.
            print(printable(f"{len(held):,} record(s) in quarantine ({api.settings.spool_dir / quarantine.DIR}); "
                            f"the last: run {held[-1].run_id} writer {held[-1].writer}: {held[-1].reason}"))
        return failed
    finally:
        api.close()
