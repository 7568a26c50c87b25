import { useState } from "react";

export function Labels({ labels, onChange }: { labels: string[]; onChange: (add: string[], remove: string[]) => Promise<void> }) {
  const [draft, setDraft] = useState("");
  const [error, setError] = useState<string | null>(null);
  const run = (p: Promise<void>) => p.then(() => setError(null)).catch((e) => setError(String(e.message ?? e)));
  return (
    <span className="labels" data-testid="labels">
      {labels.map((l) => (
        <span key={l} className="label">{l}<button className="link x" title={`remove ${l}`} onClick={() => run(onChange([], [l]))}>×</button></span>
      ))}
      <form onSubmit={(e) => { e.preventDefault(); const v = draft.trim(); if (v) run(onChange([v], []).then(() => setDraft(""))); }}>
        <input data-testid="label-input" className="small" placeholder="+ label" value={draft} onChange={(e) => setDraft(e.target.value)} />
      </form>
      {error && <span className="error">{error}</span>}
    </span>
  );
}
