// The run's log: tails live (follows the bottom while you are there) and searches.
import { useEffect, useMemo, useRef, useState } from "react";
import { useVirtualizer } from "@tanstack/react-virtual";
import { LogLine } from "../api";

export function LogViewer({ lines }: { lines: LogLine[] }) {
  const [search, setSearch] = useState("");
  const scroller = useRef<HTMLDivElement>(null);
  const atBottom = useRef(true);
  const shown = useMemo(() => {
    const s = search.toLowerCase();
    return s ? lines.filter((l) => l.text.toLowerCase().includes(s)) : lines;
  }, [lines, search]);
  const virtual = useVirtualizer({ count: shown.length, getScrollElement: () => scroller.current, estimateSize: () => 18, overscan: 30 });

  useEffect(() => {
    if (atBottom.current && shown.length) virtual.scrollToIndex(shown.length - 1, { align: "end" });
  }, [shown.length]); // eslint-disable-line react-hooks/exhaustive-deps

  return (
    <section className="logs" data-testid="logs">
      <div className="toolbar">
        <h2>Log</h2>
        <input data-testid="log-search" placeholder="search the log" value={search} onChange={(e) => setSearch(e.target.value)} />
        <span className="muted">{search ? `${shown.length.toLocaleString()} of ` : ""}{lines.length.toLocaleString()} lines</span>
      </div>
      <div className="log-body" ref={scroller} onScroll={(e) => {
        const el = e.currentTarget;
        atBottom.current = el.scrollHeight - el.scrollTop - el.clientHeight < 40;
      }}>
        <div style={{ height: virtual.getTotalSize(), position: "relative" }}>
          {virtual.getVirtualItems().map((v) => {
            const l = shown[v.index];
            return (
              <div key={l.id} className={`log-line ${l.stream}`} data-testid="log-line" style={{ transform: `translateY(${v.start}px)` }}>
                <span className="log-time">{new Date(l.time * 1000).toLocaleTimeString()}</span>
                <Highlight text={l.text} term={search} />
              </div>
            );
          })}
        </div>
        {!lines.length && <div className="muted pad">No output yet.</div>}
      </div>
    </section>
  );
}

function Highlight({ text, term }: { text: string; term: string }) {
  if (!term) return <span>{text}</span>;
  const i = text.toLowerCase().indexOf(term.toLowerCase());
  if (i < 0) return <span>{text}</span>;
  return <span>{text.slice(0, i)}<mark>{text.slice(i, i + term.length)}</mark>{text.slice(i + term.length)}</span>;
}
