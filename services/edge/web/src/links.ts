/** Finding web links in message text, safely: only http(s) addresses ever become links. */

export type TextPart = { kind: "text"; text: string } | { kind: "link"; text: string; href: string };

// A run of non-space characters that starts like a web address.
const CANDIDATE = /\b(?:https?:\/\/|www\.)[^\s<>"]+/gi;
// Punctuation that ends a sentence rather than the address ("see example.com.").
const TRAILING = /[.,;:!?'"*_~]+$/;

function trimTrailing(raw: string): string {
  let text = raw.replace(TRAILING, "");
  // A closing bracket belongs to the address only when the address opened one ("(see x.com/a_(b))").
  for (const [open, close] of [
    ["(", ")"],
    ["[", "]"],
  ] as const) {
    while (text.endsWith(close) && text.split(open).length < text.split(close).length) {
      text = text.slice(0, -1).replace(TRAILING, "");
    }
  }
  return text;
}

/** The address a link goes to, or null when it would not be a plain web page. */
export function safeHref(text: string): string | null {
  const withScheme = /^www\./i.test(text) ? `https://${text}` : text;
  let url: URL;
  try {
    url = new URL(withScheme);
  } catch {
    return null;
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") return null;
  if (!url.hostname || url.username || url.password) return null;
  return url.href;
}

/** Split message text into plain text and links, in order; joined together they are the text. */
export function linkify(text: string): TextPart[] {
  const parts: TextPart[] = [];
  let last = 0;
  for (const match of text.matchAll(CANDIDATE)) {
    const start = match.index ?? 0;
    const candidate = trimTrailing(match[0]);
    const href = safeHref(candidate);
    if (!href) continue;
    if (start > last) parts.push({ kind: "text", text: text.slice(last, start) });
    parts.push({ kind: "link", text: candidate, href });
    last = start + candidate.length;
  }
  if (last < text.length) parts.push({ kind: "text", text: text.slice(last) });
  return parts;
}
