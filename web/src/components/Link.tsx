import { MouseEvent, ReactNode } from "react";
import { navigate } from "../router";

/** An anchor the app follows itself (a modified click still opens a new tab). */
export function Link({ href, children, className, title, testid }: { href: string; children: ReactNode; className?: string; title?: string; testid?: string }) {
  const onClick = (e: MouseEvent<HTMLAnchorElement>) => {
    if (e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
    e.preventDefault();
    navigate(href);
  };
  return <a href={href} onClick={onClick} className={className} title={title} data-testid={testid}>{children}</a>;
}

export const runHref = (n: number) => `/runs/${n}`;
export const projectHref = (p: string) => `/projects/${encodeURIComponent(p)}`;
