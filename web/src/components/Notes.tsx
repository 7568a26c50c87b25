// Notes in Markdown: rendered (sanitised), editable in place.
import { useMemo, useState } from "react";
import { marked } from "marked";
import DOMPurify from "dompurify";

const escapeHtml = (text: string) => text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
// HTML written in notes is shown as text, never parsed: notes are Markdown, and parsing a teammate's
// HTML even to sanitise it would touch its handlers. DOMPurify still cleans what Markdown makes
// (javascript: links, say).
marked.use({ renderer: { html: ({ text }) => escapeHtml(text) } });

export function Notes({ text, onSave }: { text: string; onSave: (text: string) => Promise<void> }) {
  const [editing, setEditing] = useState(false);
  const [draft, setDraft] = useState(text);
  const [error, setError] = useState<string | null>(null);
  const html = useMemo(() => DOMPurify.sanitize(marked.parse(text || "", { async: false }) as string), [text]);
  if (editing) {
    return (
      <section className="notes" data-testid="notes">
        <h2>Notes</h2>
        <textarea data-testid="notes-editor" value={draft} onChange={(e) => setDraft(e.target.value)} rows={8} />
        <div>
          <button data-testid="notes-save" onClick={() => onSave(draft).then(() => setEditing(false)).catch((e) => setError(String(e.message ?? e)))}>Save</button>
          <button className="link" onClick={() => setEditing(false)}>Cancel</button>
          {error && <span className="error">{error}</span>}
        </div>
      </section>
    );
  }
  return (
    <section className="notes" data-testid="notes">
      <h2>Notes <button className="link" data-testid="notes-edit" onClick={() => { setDraft(text); setEditing(true); }}>edit</button></h2>
      {text ? <div className="markdown" data-testid="notes-view" dangerouslySetInnerHTML={{ __html: html }} /> : <p className="muted">No notes.</p>}
    </section>
  );
}
