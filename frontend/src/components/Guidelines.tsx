// The project's guidelines, written in Markdown by its owner. marked only tokenises them; the tokens
// become React elements here, so nothing is ever parsed as HTML: raw HTML in the Markdown shows as
// text, and links keep http(s), mailto and relative targets only (opened without the opener).
import { marked, type Token, type Tokens } from "marked";
import { Fragment, useMemo, type ReactNode } from "react";

function safeHref(href: string): string | null {
  const h = href.trim();
  if (/^(https?:|mailto:)/i.test(h)) return h;
  if (/^[a-z][a-z0-9+.-]*:/i.test(h)) return null; // javascript:, data:, vbscript:, …
  return h; // relative
}

function inline(tokens: Token[] | undefined, key = ""): ReactNode {
  return (tokens ?? []).map((t, i) => <Fragment key={`${key}${i}`}>{one(t, `${key}${i}.`)}</Fragment>);
}

function one(t: Token, key: string): ReactNode {
  switch (t.type) {
    case "heading": {
      const H = `h${Math.min(6, (t as Tokens.Heading).depth + 1)}` as "h2";
      return <H>{inline((t as Tokens.Heading).tokens, key)}</H>;
    }
    case "paragraph":
      return <p>{inline((t as Tokens.Paragraph).tokens, key)}</p>;
    case "text": {
      const tt = t as Tokens.Text;
      return tt.tokens ? inline(tt.tokens, key) : tt.text;
    }
    case "strong":
      return <strong>{inline((t as Tokens.Strong).tokens, key)}</strong>;
    case "em":
      return <em>{inline((t as Tokens.Em).tokens, key)}</em>;
    case "del":
      return <del>{inline((t as Tokens.Del).tokens, key)}</del>;
    case "codespan":
      return <code>{(t as Tokens.Codespan).text}</code>;
    case "code":
      return (
        <pre>
          <code>{(t as Tokens.Code).text}</code>
        </pre>
      );
    case "blockquote":
      return <blockquote>{inline((t as Tokens.Blockquote).tokens, key)}</blockquote>;
    case "list": {
      const l = t as Tokens.List;
      const items = l.items.map((item, i) => <li key={i}>{inline(item.tokens, `${key}${i}.`)}</li>);
      return l.ordered ? <ol start={typeof l.start === "number" ? l.start : undefined}>{items}</ol> : <ul>{items}</ul>;
    }
    case "link": {
      const l = t as Tokens.Link;
      const href = safeHref(l.href);
      return href ? (
        <a href={href} target="_blank" rel="noopener noreferrer">
          {inline(l.tokens, key)}
        </a>
      ) : (
        inline(l.tokens, key)
      );
    }
    case "image":
      return `[${(t as Tokens.Image).text || "image"}]`;
    case "br":
      return <br />;
    case "hr":
      return <hr />;
    case "space":
      return null;
    case "escape":
      return (t as Tokens.Escape).text;
    case "table": {
      const tb = t as Tokens.Table;
      return (
        <table className="table small">
          <thead>
            <tr>
              {tb.header.map((c, i) => (
                <th key={i}>{inline(c.tokens, `${key}h${i}.`)}</th>
              ))}
            </tr>
          </thead>
          <tbody>
            {tb.rows.map((row, r) => (
              <tr key={r}>
                {row.map((c, i) => (
                  <td key={i}>{inline(c.tokens, `${key}${r}.${i}.`)}</td>
                ))}
              </tr>
            ))}
          </tbody>
        </table>
      );
    }
    default:
      // html and anything unknown: its source, as text
      return "raw" in t ? String(t.raw) : "";
  }
}

export function Guidelines({ text }: { text: string }) {
  const tokens = useMemo(() => (text.trim() ? marked.lexer(text, { gfm: true }) : []), [text]);
  if (tokens.length === 0) return <span className="muted">No guidelines.</span>;
  return (
    <div className="guidelines md" data-testid="guidelines">
      {inline(tokens)}
    </div>
  );
}
