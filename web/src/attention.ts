// What needs the user's attention stays marked until seen: a failed (or lost, or timed-out) run is
// "unseen" until its page is opened. Kept in this browser's storage; routine events make no noise.
import { useSyncExternalStore } from "react";

const KEY = "runyard.seen";
const listeners = new Set<() => void>();
let seen: Set<string> = load();

function load(): Set<string> {
  try {
    return new Set(JSON.parse(localStorage.getItem(KEY) ?? "[]") as string[]);
  } catch {
    return new Set();
  }
}

export function isSeen(runId: string): boolean {
  return seen.has(runId);
}

export function markSeen(runId: string): void {
  if (seen.has(runId)) return;
  seen = new Set(seen).add(runId);
  const list = [...seen].slice(-5000); // bounded: the oldest marks go first
  localStorage.setItem(KEY, JSON.stringify(list));
  listeners.forEach((l) => l());
}

export function useSeen(): Set<string> {
  return useSyncExternalStore((l) => { listeners.add(l); return () => listeners.delete(l); }, () => seen);
}

window.addEventListener("storage", (e) => {
  if (e.key === KEY) { seen = load(); listeners.forEach((l) => l()); }
});
