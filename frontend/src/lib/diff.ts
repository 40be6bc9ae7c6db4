// Word-level diff (LCS over whitespace-separated tokens, keeping the whitespace attached so the
// rendered text reads naturally). Step texts are short; a trace tail is at most a few thousand
// words, so the O(n·m) table is bounded below by a size cap that falls back to a coarse diff.

export type DiffOp = { op: "same" | "add" | "del"; text: string };

export function tokenize(s: string): string[] {
  return s.match(/\s+|[^\s]+/g) ?? [];
}

const MAX_CELLS = 4_000_000;

export function wordDiff(a: string, b: string): DiffOp[] {
  const x = tokenize(a);
  const y = tokenize(b);
  // Trim common prefix and suffix first: corrections usually touch a small part.
  let start = 0;
  while (start < x.length && start < y.length && x[start] === y[start]) start++;
  let endX = x.length;
  let endY = y.length;
  while (endX > start && endY > start && x[endX - 1] === y[endY - 1]) {
    endX--;
    endY--;
  }
  const out: DiffOp[] = [];
  const push = (op: DiffOp["op"], text: string) => {
    if (!text) return;
    const last = out[out.length - 1];
    if (last && last.op === op) last.text += text;
    else out.push({ op, text });
  };
  push("same", x.slice(0, start).join(""));
  const xs = x.slice(start, endX);
  const ys = y.slice(start, endY);
  if (xs.length * ys.length > MAX_CELLS) {
    push("del", xs.join(""));
    push("add", ys.join(""));
  } else {
    const n = xs.length;
    const m = ys.length;
    // lcs[i][j] = LCS length of xs[i:] and ys[j:]
    const lcs: Uint32Array[] = Array.from({ length: n + 1 }, () => new Uint32Array(m + 1));
    for (let i = n - 1; i >= 0; i--) {
      for (let j = m - 1; j >= 0; j--) {
        lcs[i][j] = xs[i] === ys[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
      }
    }
    let i = 0;
    let j = 0;
    while (i < n && j < m) {
      if (xs[i] === ys[j]) {
        push("same", xs[i]);
        i++;
        j++;
      } else if (lcs[i + 1][j] >= lcs[i][j + 1]) {
        push("del", xs[i++]);
      } else {
        push("add", ys[j++]);
      }
    }
    while (i < n) push("del", xs[i++]);
    while (j < m) push("add", ys[j++]);
  }
  push("same", x.slice(endX).join(""));
  return out;
}
