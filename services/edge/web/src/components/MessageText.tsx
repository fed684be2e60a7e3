import { useMemo } from "preact/hooks";
import { linkify } from "../links";

/** A message's text with its web addresses as links that open in a new tab, never passing on who
 * sent the reader there (`noreferrer`), giving the page no hold on ours (`noopener`) and no
 * endorsement to search engines (`nofollow`). Everything else stays text: nothing is HTML. */
export function MessageText({ text }: { text: string }) {
  const parts = useMemo(() => linkify(text), [text]);
  return (
    <p class="msg-text">
      {parts.map((part, index) =>
        part.kind === "link" ? (
          <a key={index} href={part.href} target="_blank" rel="noopener noreferrer nofollow">
            {part.text}
          </a>
        ) : (
          part.text
        ),
      )}
    </p>
  );
}
