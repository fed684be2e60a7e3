/** Reactions on a message: the bar of counts under it (one's own highlighted; a tap toggles) and the
 * picker of the six emojis, opened by the message's "Add a reaction" button or a long press on touch
 * screens. The picker is a toolbar: arrow keys move between emojis, Escape closes it and gives the
 * focus back to the button that opened it. */
import type { RefObject } from "preact";
import { useEffect, useLayoutEffect, useRef, useState } from "preact/hooks";
import type { Message } from "../api";
import { EMOJIS, EMOJI_NAMES, shownReactions } from "../messageState";
import "./reactions.css";

const LONG_PRESS_MS = 500;
const LONG_PRESS_SLOP_PX = 10;

function emojiName(emoji: string): string {
  return EMOJI_NAMES[emoji] ?? emoji;
}

function peopleWords(count: number): string {
  return `${count.toLocaleString()} ${count === 1 ? "person" : "people"}`;
}

export function ReactionBar({
  message,
  pending,
  disabled,
  onToggle,
}: {
  message: Message;
  pending: ReadonlyMap<string, boolean> | undefined;
  disabled: boolean;
  onToggle: (emoji: string, on: boolean) => void;
}) {
  const shown = shownReactions(message, pending);
  if (!shown.length) return null;
  return (
    <div class="reactions" role="group" aria-label="Reactions">
      {shown.map((reaction) => (
        <button
          type="button"
          key={reaction.emoji}
          class="reaction"
          data-emoji={reaction.emoji}
          aria-pressed={reaction.mine}
          aria-busy={reaction.busy || undefined}
          aria-label={`${emojiName(reaction.emoji)}: ${peopleWords(reaction.count)}${reaction.mine ? ", including you" : ""}`}
          title={reaction.mine ? "Take your reaction off" : `React with ${emojiName(reaction.emoji)}`}
          disabled={disabled}
          onClick={() => {
            if (!reaction.busy) onToggle(reaction.emoji, !reaction.mine);
          }}
        >
          <span class="reaction-emoji" aria-hidden="true">
            {reaction.emoji}
          </span>
          <span class="reaction-count" aria-hidden="true">
            {reaction.count.toLocaleString()}
          </span>
        </button>
      ))}
    </div>
  );
}

export function ReactionPicker({
  id,
  mine,
  opener,
  onPick,
  onClose,
}: {
  id: string;
  /** Emojis this person has on the message (shown as chosen; picking one again takes it off). */
  mine: readonly string[];
  /** The button that opened the picker: clicks on it are its own, and focus goes back to it. */
  opener: RefObject<HTMLButtonElement | null>;
  onPick: (emoji: string) => void;
  onClose: () => void;
}) {
  const ref = useRef<HTMLDivElement>(null);
  const [below, setBelow] = useState(false);

  // Above the message, unless that is outside the list (the first message): then below it.
  useLayoutEffect(() => {
    const picker = ref.current;
    if (!picker) return;
    const list = picker.closest(".messages");
    const message = picker.parentElement;
    if (list && message) {
      const room = message.getBoundingClientRect().top - list.getBoundingClientRect().top;
      setBelow(room < picker.offsetHeight + 8);
    }
    picker.querySelector<HTMLButtonElement>("button")?.focus({ preventScroll: true });
  }, []);

  useEffect(() => {
    const onPointerDown = (event: PointerEvent): void => {
      const target = event.target as Node | null;
      if (!target || ref.current?.contains(target) || opener.current?.contains(target)) return;
      onClose();
    };
    document.addEventListener("pointerdown", onPointerDown, true);
    return () => document.removeEventListener("pointerdown", onPointerDown, true);
  }, [onClose, opener]);

  const closeAndReturn = (): void => {
    onClose();
    opener.current?.focus({ preventScroll: true });
  };

  const onKeyDown = (event: KeyboardEvent): void => {
    const buttons = [...(ref.current?.querySelectorAll<HTMLButtonElement>("button") ?? [])];
    const at = buttons.indexOf(document.activeElement as HTMLButtonElement);
    let next: number | null = null;
    if (event.key === "Escape") {
      event.preventDefault();
      event.stopPropagation();
      closeAndReturn();
      return;
    }
    if (event.key === "ArrowRight" || event.key === "ArrowDown") next = (at + 1) % buttons.length;
    else if (event.key === "ArrowLeft" || event.key === "ArrowUp") next = (at - 1 + buttons.length) % buttons.length;
    else if (event.key === "Home") next = 0;
    else if (event.key === "End") next = buttons.length - 1;
    if (next !== null) {
      event.preventDefault();
      buttons[next]?.focus();
    }
  };

  return (
    <div
      ref={ref}
      id={id}
      class={`reaction-picker ${below ? "below" : ""}`}
      role="toolbar"
      aria-label="Choose a reaction"
      onKeyDown={onKeyDown}
      onFocusOut={(event) => {
        const next = event.relatedTarget as Node | null;
        if (next && !ref.current?.contains(next) && !opener.current?.contains(next)) onClose();
      }}
    >
      {EMOJIS.map((emoji) => {
        const chosen = mine.includes(emoji);
        return (
          <button
            type="button"
            key={emoji}
            class="reaction-choice"
            data-emoji={emoji}
            aria-pressed={chosen}
            aria-label={emojiName(emoji)}
            title={chosen ? `Take your ${emojiName(emoji)} off` : `React with ${emojiName(emoji)}`}
            tabIndex={emoji === EMOJIS[0] ? 0 : -1}
            onClick={() => {
              onPick(emoji);
              closeAndReturn();
            }}
          >
            {emoji}
          </button>
        );
      })}
    </div>
  );
}

/** Pointer handlers that call `onLongPress` when a finger rests on the element (not on one of its
 * controls) without moving; the context menu that press would open is kept shut. */
export function useLongPress(onLongPress: () => void) {
  const timer = useRef<number | undefined>(undefined);
  const start = useRef<{ x: number; y: number } | null>(null);
  const fired = useRef(false);

  const cancel = (): void => {
    window.clearTimeout(timer.current);
    timer.current = undefined;
    start.current = null;
  };
  useEffect(() => cancel, []);

  return {
    onPointerDown: (event: PointerEvent): void => {
      fired.current = false;
      if (event.pointerType !== "touch") return;
      const target = event.target as Element | null;
      if (target?.closest("button, a, textarea, input")) return;
      start.current = { x: event.clientX, y: event.clientY };
      window.clearTimeout(timer.current);
      timer.current = window.setTimeout(() => {
        timer.current = undefined;
        fired.current = true;
        navigator.vibrate?.(10);
        onLongPress();
      }, LONG_PRESS_MS);
    },
    onPointerMove: (event: PointerEvent): void => {
      const from = start.current;
      if (from && Math.hypot(event.clientX - from.x, event.clientY - from.y) > LONG_PRESS_SLOP_PX) cancel();
    },
    onPointerUp: cancel,
    onPointerCancel: cancel,
    onContextMenu: (event: Event): void => {
      if (fired.current || timer.current !== undefined) {
        event.preventDefault();
        if (!fired.current) {
          cancel();
          fired.current = true;
          onLongPress();
        }
      }
    },
  };
}
