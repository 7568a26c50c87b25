// An executed notebook, as the server renders it, in a frame where nothing can run.
//
// The server already drops every script and serves a policy that allows none; this frame is the
// third wall. `sandbox` without allow-scripts or allow-same-origin: no scripts, no forms, no
// navigation of this page, and an opaque origin, so that even markup the sanitiser missed could
// neither read the dashboard's token (localStorage) nor call the API as the user. The one thing
// allowed: a link the reader clicks opens in a tab of its own (the server gives links
// target=_blank; SANDBOX in server/notebook_html.py is the same list). The HTML arrives through the
// dashboard's own authenticated fetch and goes in through `srcdoc`: a frame's `src` could not send
// the token, which travels in a header.
import { useEffect, useState } from "react";
import { api } from "../api";

export function isNotebook(path: string): boolean {
  return path.toLowerCase().endsWith(".ipynb");
}

export function NotebookView({ run, path, onClose, onDownload }: {
  run: number; path: string; onClose: () => void; onDownload: () => void;
}) {
  const [html, setHtml] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);

  useEffect(() => {
    const abort = new AbortController();
    setHtml(null);
    setError(null);
    api.notebookHtml(run, path, abort.signal).then(setHtml).catch((e) => {
      if (!abort.signal.aborted) setError(String(e.message ?? e));
    });
    return () => abort.abort();
  }, [run, path]);

  return (
    <div className="notebook-view" data-testid="notebook-view">
      <div className="toolbar">
        <h3>{path}</h3>
        <span className="muted">rendered on the server; its scripts and widgets do not run here</span>
        <span className="spacer" />
        <button className="link" onClick={onDownload}>download</button>
        <button className="link" data-testid="notebook-close" onClick={onClose}>close</button>
      </div>
      {error && <div className="error" data-testid="notebook-error">{error}</div>}
      {!error && html === null && <div className="muted">Rendering…</div>}
      {html !== null && (
        <iframe className="notebook-frame" data-testid="notebook-frame" title={`notebook ${path}`}
          sandbox="allow-popups allow-popups-to-escape-sandbox" referrerPolicy="no-referrer" srcDoc={html} />
      )}
    </div>
  );
}
