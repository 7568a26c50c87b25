// A small history router: every page, run, chart zoom and comparison is a URL a teammate can open.
import { useSyncExternalStore } from "react";

export interface Location { path: string; query: URLSearchParams }

const listeners = new Set<() => void>();
let snapshot = read();

function read(): Location {
  return { path: window.location.pathname, query: new URLSearchParams(window.location.search) };
}

function changed(): void {
  snapshot = read();
  listeners.forEach((l) => l());
}

window.addEventListener("popstate", changed);

export function useLocation(): Location {
  return useSyncExternalStore(
    (l) => { listeners.add(l); return () => listeners.delete(l); },
    () => snapshot,
  );
}

/** Go to ``href``; ``replace`` rewrites the current entry (zooming should not fill the history). */
export function navigate(href: string, replace = false): void {
  if (href === window.location.pathname + window.location.search) return;
  if (replace) window.history.replaceState(null, "", href);
  else window.history.pushState(null, "", href);
  changed();
}

/** The current URL with some query parameters set (null removes one). */
export function withQuery(changes: Record<string, string | null>): string {
  const q = new URLSearchParams(window.location.search);
  for (const [k, v] of Object.entries(changes)) {
    if (v === null || v === "") q.delete(k);
    else q.set(k, v);
  }
  const s = q.toString();
  return window.location.pathname + (s ? `?${s}` : "");
}
