import type { ReactNode } from "react";
import { ApiError, LOGIN_URL } from "../lib/api";

/** What a page shows instead of its data when a load failed. */
export function ErrorState({ error, what }: { error: ApiError; what?: string }) {
  if (error.isAuth) {
    return (
      <div className="notice" role="alert" data-testid="auth-required">
        <p>{error.status === 401 ? "You are not logged in." : error.message}</p>
        <a href={LOGIN_URL}>Log in</a>
      </div>
    );
  }
  if (error.isMissing) {
    return (
      <div className="notice calm" data-testid="not-available">
        {what ? `${what}: not available yet.` : "Not available yet."}
      </div>
    );
  }
  return (
    <div className="notice" role="alert">
      {error.message}
    </div>
  );
}

export function Loading() {
  return <div className="muted">Loading…</div>;
}

export function Section({ title, children, aside }: { title: string; children: ReactNode; aside?: ReactNode }) {
  return (
    <section className="panel">
      <header className="panel-head">
        <h2>{title}</h2>
        {aside}
      </header>
      {children}
    </section>
  );
}

export function fmtDate(s: string | null | undefined): string {
  if (!s) return "";
  const d = new Date(s);
  return isNaN(d.getTime()) ? s : d.toLocaleString();
}

/** Plain-text preview of chat messages (text parts only; images are shown separately). */
export function messagesText(messages: unknown): string {
  if (!Array.isArray(messages)) return typeof messages === "string" ? messages : "";
  return messages
    .map((m: { role?: string; content?: unknown }) => {
      const c = m?.content;
      if (typeof c === "string") return c;
      if (Array.isArray(c))
        return c
          .map((p: { type?: string; text?: string }) => (p?.type === "image" ? "[image]" : (p?.text ?? "")))
          .join(" ");
      return "";
    })
    .join("\n");
}
