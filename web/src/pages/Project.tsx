// The runs of a project: live status, the columns the user picks, sorting, filtering, 10,000 rows.
import { useEffect, useMemo, useRef, useState } from "react";
import {
  ColumnDef, getCoreRowModel, getSortedRowModel, SortingState, useReactTable, flexRender,
} from "@tanstack/react-table";
import { useVirtualizer } from "@tanstack/react-virtual";
import { ACTIVE, api, BAD, follow, Run, unplain } from "../api";
import { useSeen } from "../attention";
import { duration, flatten, runDuration, value, when } from "../format";
import { KindBadge } from "../components/Kind";
import { Link, runHref } from "../components/Link";
import { navigate, useLocation, withQuery } from "../router";

const STATUSES = ["queued", "starting", "running", "finished", "failed", "stopped", "timeout", "lost"];
const KINDS = ["script", "notebook", "jupyterlab", "serve"];

interface Filter {
  status: string[];
  kinds: string[];
  labels: string[];
  compare: { key: string; op: string; value: string }[];
  words: string[];
  errors: string[];
}

/** The filter box: the filters of `runyard ls` (status:, kind:, label:) plus comparisons and words. */
export function parseFilter(text: string): Filter {
  const f: Filter = { status: [], kinds: [], labels: [], compare: [], words: [], errors: [] };
  for (const token of text.match(/\S+/g) ?? []) {
    const m = token.match(/^(status|kind|label|project):(.+)$/);
    const c = token.match(/^((?:config|summary)\.[^<>=!]+)(>=|<=|!=|=|>|<)(.+)$/);
    if (m && m[1] === "status") {
      if (!STATUSES.includes(m[2])) f.errors.push(`unknown status ${m[2]} (one of ${STATUSES.join(", ")})`);
      else f.status.push(m[2]);
    } else if (m && m[1] === "kind") {
      if (!KINDS.includes(m[2])) f.errors.push(`unknown kind ${m[2]} (one of ${KINDS.join(", ")})`);
      else f.kinds.push(m[2]);
    } else if (m && m[1] === "label") f.labels.push(m[2]);
    else if (c) f.compare.push({ key: c[1], op: c[2], value: c[3] });
    else f.words.push(token.toLowerCase());
  }
  return f;
}

export function lookup(run: Run, key: string): unknown {
  const [group, ...rest] = key.split(".");
  let v: unknown = group === "config" ? run.config : group === "summary" ? run.summary : (run as unknown as Record<string, unknown>)[key];
  if (group !== "config" && group !== "summary") return v;
  for (const part of rest) {
    v = unplain(v);
    if (v && typeof v === "object" && part in (v as object)) v = (v as Record<string, unknown>)[part];
    else {
      // a key holding dots ("a.b" stored flat)
      const flat = (group === "config" ? run.config : run.summary) as Record<string, unknown>;
      return unplain(flat[rest.join(".")]);
    }
  }
  return unplain(v);
}

function matches(run: Run, f: Filter): boolean {
  if (f.status.length && !f.status.includes(run.status)) return false;
  if (f.kinds.length && !f.kinds.includes(run.kind ?? "script")) return false;
  for (const l of f.labels) if (!run.labels.includes(l)) return false;
  for (const c of f.compare) {
    const v = lookup(run, c.key);
    const want = Number(c.value);
    const cmp = typeof v === "number" && !Number.isNaN(want) ? v - want : String(v ?? "").localeCompare(c.value);
    const ok = { ">": cmp > 0, "<": cmp < 0, ">=": cmp >= 0, "<=": cmp <= 0, "=": cmp === 0, "!=": cmp !== 0 }[c.op];
    if (!ok) return false;
  }
  if (f.words.length) {
    const hay = `${run.number} ${run.name ?? ""} ${(run.command ?? []).join(" ")} ${run.labels.join(" ")}`.toLowerCase();
    for (const w of f.words) if (!hay.includes(w)) return false;
  }
  return true;
}

function sortValue(v: unknown): number | string {
  if (typeof v === "number") return Number.isNaN(v) ? Infinity : v;
  if (v === null || v === undefined) return "";
  return typeof v === "string" ? v : JSON.stringify(v);
}

export function ProjectPage({ project }: { project: string }) {
  const { query } = useLocation();
  const [runs, setRuns] = useState<Map<number, Run> | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [selected, setSelected] = useState<Set<number>>(new Set());
  const [now, setNow] = useState(Date.now() / 1000);
  const seen = useSeen();
  const filterText = query.get("q") ?? "";
  const [draft, setDraft] = useState(filterText);
  const picked = (query.get("cols") ?? "").split(",").filter(Boolean);
  const sortParam = query.get("sort");
  const descending = query.get("desc") === "1";
  // Stable between renders: a new array each time would make the table recompute (and re-render) forever.
  const sorting: SortingState = useMemo(() => (sortParam ? [{ id: sortParam, desc: descending }] : []), [sortParam, descending]);

  useEffect(() => {
    const abort = new AbortController();
    const q = new URLSearchParams({ project, compact: "true", limit: "10000" });
    api.runs(q, abort.signal)
      .then((page) => setRuns(new Map(page.items.map((r) => [r.number, r]))))
      .catch((e) => { if (!abort.signal.aborted) setError(String(e.message ?? e)); });
    follow(`project=${encodeURIComponent(project)}`, (kind, data) => {
      if (kind !== "run") return;
      const r = data as Run;
      setRuns((old) => (old ? new Map(old).set(r.number, { ...r, environment: {}, launch: null, notes: "" }) : old));
    }, abort.signal);
    const tick = window.setInterval(() => setNow(Date.now() / 1000), 1000);
    return () => { abort.abort(); window.clearInterval(tick); };
  }, [project]);

  useEffect(() => setDraft(filterText), [filterText]);
  // For bench/ui.py: when the table first shows its runs (a mark costs nothing).
  useEffect(() => { if (runs) performance.mark("runyard:runs-ready"); }, [runs !== null]); // eslint-disable-line react-hooks/exhaustive-deps

  const all = useMemo(() => (runs ? [...runs.values()] : []), [runs]);
  const filter = useMemo(() => parseFilter(filterText), [filterText]);
  const rows = useMemo(() => {
    const list = all.filter((r) => matches(r, filter));
    // Queued and running runs first, newest first: unless the user sorts by a column.
    list.sort((a, b) => (Number(ACTIVE.has(b.status)) - Number(ACTIVE.has(a.status))) || b.number - a.number);
    return list;
  }, [all, filter]);

  const available = useMemo(() => {
    const keys = new Set<string>();
    for (const r of all.slice(0, 2000)) {
      for (const [k] of flatten(r.config)) keys.add(`config.${k}`);
      for (const [k] of flatten(r.summary)) keys.add(`summary.${k}`);
    }
    return [...keys].sort();
  }, [all]);

  const columns = useMemo<ColumnDef<Run>[]>(() => [
    {
      id: "select", header: "", size: 32, enableSorting: false,
      cell: ({ row }) => (
        <input type="checkbox" aria-label={`select run ${row.original.number}`} checked={selected.has(row.original.number)}
          onChange={(e) => setSelected((s) => { const n = new Set(s); if (e.target.checked) n.add(row.original.number); else n.delete(row.original.number); return n; })} />
      ),
    },
    { id: "number", header: "#", size: 64, accessorFn: (r) => r.number,
      cell: ({ row }) => <Link href={runHref(row.original.number)}>{row.original.number}</Link> },
    { id: "name", header: "name", size: 200, accessorFn: (r) => r.name ?? "",
      cell: ({ row }) => (
        <><Link href={runHref(row.original.number)}>{row.original.name ?? `run ${row.original.number}`}</Link>{" "}
          <KindBadge kind={row.original.kind} /></>
      ) },
    { id: "status", header: "status", size: 110, accessorFn: (r) => r.status,
      cell: ({ row }) => {
        const r = row.original;
        const mark = BAD.has(r.status) && !seen.has(r.id);
        return <span className={`status ${r.status}`} data-testid="run-status">{mark && <span className="unseen" title="not opened yet">●</span>}{r.status}</span>;
      } },
    { id: "labels", header: "labels", size: 160, accessorFn: (r) => r.labels.join(","),
      cell: ({ row }) => row.original.labels.map((l) => <span key={l} className="label">{l}</span>) },
    { id: "duration", header: "duration", size: 90, accessorFn: (r) => runDuration(r, now) ?? -1,
      cell: ({ row }) => duration(runDuration(row.original, now)) },
    { id: "created_at", header: "created", size: 170, accessorFn: (r) => r.created_at, cell: ({ row }) => when(row.original.created_at) },
    ...picked.map((key): ColumnDef<Run> => ({
      id: key, header: key, size: 130, accessorFn: (r) => sortValue(lookup(r, key)),
      sortingFn: (a, b, id) => {
        const x = a.getValue(id) as number | string, y = b.getValue(id) as number | string;
        if (x === "" && y !== "") return 1; // missing values last
        if (y === "" && x !== "") return -1;
        return typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y));
      },
      cell: ({ row }) => <span className="num">{value(lookup(row.original, key))}</span>,
    })),
  ], [picked.join(","), selected, seen, now]);

  const table = useReactTable({
    data: rows, columns, state: { sorting },
    onSortingChange: (updater) => {
      const next = typeof updater === "function" ? updater(sorting) : updater;
      navigate(withQuery({ sort: next[0]?.id ?? null, desc: next[0]?.desc ? "1" : null }), true);
    },
    getCoreRowModel: getCoreRowModel(), getSortedRowModel: getSortedRowModel(),
    enableSortingRemoval: true,
    sortDescFirst: false,
    autoResetPageIndex: false, // no pages here; resetting would re-render on every sort
  });
  const tableRows = table.getRowModel().rows;
  const scroller = useRef<HTMLDivElement>(null);
  const virtual = useVirtualizer({ count: tableRows.length, getScrollElement: () => scroller.current, estimateSize: () => 30, overscan: 20 });
  const template = table.getVisibleLeafColumns().map((c) => `${c.getSize()}px`).join(" ");

  if (error) return <div className="error pad">{error}</div>;
  if (!runs) return <div className="muted pad">Loading runs…</div>;
  return (
    <div className="project pad">
      <div className="toolbar">
        <form onSubmit={(e) => { e.preventDefault(); navigate(withQuery({ q: draft.trim() || null })); }}>
          <input className="filter" data-testid="filter" value={draft} onChange={(e) => setDraft(e.target.value)}
            placeholder="filter: status:running label:baseline summary.loss<0.5 words…" />
        </form>
        <select data-testid="add-column" value="" onChange={(e) => { if (e.target.value) navigate(withQuery({ cols: [...picked, e.target.value].join(",") }), true); }}>
          <option value="">+ column</option>
          {available.filter((k) => !picked.includes(k)).map((k) => <option key={k} value={k}>{k}</option>)}
        </select>
        {picked.length > 0 && <button className="link" onClick={() => navigate(withQuery({ cols: null }), true)}>reset columns</button>}
        <span className="muted" data-testid="row-count">{rows.length.toLocaleString()} of {all.length.toLocaleString()} runs</span>
        <span className="spacer" />
        <button disabled={selected.size < 2 || selected.size > 20} data-testid="compare"
          title="select 2 to 20 runs"
          onClick={() => navigate(`/compare?runs=${[...selected].sort((a, b) => a - b).join(",")}`)}>
          Compare {selected.size ? `(${selected.size})` : ""}
        </button>
      </div>
      {filter.errors.map((e) => <div key={e} className="error">{e}</div>)}
      <div className="grid" role="table" data-testid="runs-table">
        <div className="grid-head" role="row" style={{ gridTemplateColumns: template }}>
          {table.getHeaderGroups()[0].headers.map((h) => (
            <div key={h.id} role="columnheader" className={h.column.getCanSort() ? "sortable" : ""}
              data-testid={`col-${h.id}`} onClick={h.column.getToggleSortingHandler()}>
              {flexRender(h.column.columnDef.header, h.getContext())}
              {{ asc: " ▲", desc: " ▼" }[h.column.getIsSorted() as string] ?? ""}
              {picked.includes(h.id) && (
                <button className="link x" title="remove column" onClick={(e) => { e.stopPropagation(); navigate(withQuery({ cols: picked.filter((p) => p !== h.id).join(",") || null }), true); }}>×</button>
              )}
            </div>
          ))}
        </div>
        <div className="grid-body" ref={scroller}>
          <div style={{ height: virtual.getTotalSize(), position: "relative" }}>
            {virtual.getVirtualItems().map((v) => {
              const row = tableRows[v.index];
              return (
                <div key={row.id} role="row" className="grid-row" data-testid="run-row" data-number={row.original.number}
                  style={{ gridTemplateColumns: template, transform: `translateY(${v.start}px)` }}>
                  {row.getVisibleCells().map((c) => <div key={c.id} role="cell">{flexRender(c.column.columnDef.cell, c.getContext())}</div>)}
                </div>
              );
            })}
          </div>
        </div>
      </div>
    </div>
  );
}
