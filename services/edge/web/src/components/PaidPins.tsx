/** The paid pins above the chat, below the host's: the top pin with a live countdown to its end, the
 * other live pins below it by amount. A pin drops off when its time runs out, with no entry from the
 * server (every pin carries its end). The top pin's buyer may extend it; the host may remove any. */
import { useState } from "preact/hooks";
import { countdown, countdownWords, money } from "../payments";

/** A live paid pin as the pinned area shows it. */
export interface ShownPaidPin {
  id: string;
  target_seq: number;
  /** The buyer. */
  participant_id: string;
  username: string;
  /** Everything paid for it, extensions included. */
  amount_cents: number;
  currency: string;
  /** When it drops off (ms since the epoch), or null when the server sent no end. */
  expiresAt: number | null;
  /** The pinned message's author and text as shown (a hidden message's placeholder, say). */
  by: string;
  text: string;
}

/** Live pins at `now`, top first: the highest amount, then the earliest end. */
export function livePins(pins: ShownPaidPin[], now: number): ShownPaidPin[] {
  return pins
    .filter((pin) => pin.expiresAt === null || pin.expiresAt > now)
    .sort((a, b) => b.amount_cents - a.amount_cents || (a.expiresAt ?? 0) - (b.expiresAt ?? 0));
}

// Below the top pin, this many show before "more".
const SHOWN_BELOW = 2;

function snippet(text: string, length = 120): string {
  const flat = text.replace(/\s+/g, " ").trim();
  return flat.length > length ? `${flat.slice(0, length - 1)}…` : flat;
}

function Remaining({ pin, now }: { pin: ShownPaidPin; now: number }) {
  if (pin.expiresAt === null) return null;
  return (
    <span class="paid-pin-time">
      <time aria-hidden="true" dateTime={new Date(pin.expiresAt).toISOString()} title={`Until ${new Date(pin.expiresAt).toLocaleTimeString()}`}>
        {countdown(pin.expiresAt, now)}
      </time>{" "}
      <span class="sr-only">{countdownWords(pin.expiresAt, now)}</span>
    </span>
  );
}

export function PaidPins({
  pins,
  now,
  me,
  isHost,
  canAct,
  onJump,
  onExtend,
  onRemove,
}: {
  /** Live pins, top first (`livePins`). */
  pins: ShownPaidPin[];
  now: number;
  /** This person's participant id. */
  me: string;
  isHost: boolean;
  /** Buying and removing are possible (connected, room open, sales on for extending). */
  canAct: { extend: boolean; remove: boolean };
  onJump: (seq: number) => void;
  onExtend: (pin: ShownPaidPin) => void;
  onRemove: (pin: ShownPaidPin) => void;
}) {
  const [expanded, setExpanded] = useState(false);
  if (!pins.length) return null;
  const [top, ...rest] = pins as [ShownPaidPin, ...ShownPaidPin[]];
  const below = expanded ? rest : rest.slice(0, SHOWN_BELOW);
  const hidden = rest.length - below.length;
  const row = (pin: ShownPaidPin, isTop: boolean) => {
    const mine = pin.participant_id === me;
    const amount = money(pin.amount_cents, pin.currency);
    return (
      <li key={pin.id} class={`paid-pin ${isTop ? "top" : ""}`} data-pin-id={pin.id} data-seq={pin.target_seq} data-top={isTop ? "true" : undefined}>
        <button
          type="button"
          class="paid-pin-main"
          onClick={() => onJump(pin.target_seq)}
          aria-label={`${isTop ? "Top paid pin" : "Paid pin"}: ${amount} from ${pin.username}${mine ? " (you)" : ""}. ${pin.by}: ${snippet(pin.text, 80)}. Show the message`}
        >
          <span class="paid-pin-head">
            <span class="badge paid">{isTop ? "Top pin" : "Pinned"}</span>{" "}
            <span class="paid-pin-amount">{amount}</span>{" "}
            <span class="paid-pin-buyer">
              from {pin.username}
              {mine && " (you)"}
            </span>{" "}
            <Remaining pin={pin} now={now} />
          </span>{" "}
          <span class="paid-pin-text">
            <strong>{pin.by}:</strong> {snippet(pin.text, isTop ? 160 : 90)}
          </span>
        </button>
        {((isTop && mine && canAct.extend) || (isHost && canAct.remove)) && (
          <span class="paid-pin-actions">
            {isTop && mine && canAct.extend && (
              <button type="button" class="button small" onClick={() => onExtend(pin)} aria-label="Extend your pin">
                Extend
              </button>
            )}
            {isHost && canAct.remove && (
              <button type="button" class="button small" onClick={() => onRemove(pin)} aria-label={`Remove ${pin.username}'s paid pin`}>
                Remove
              </button>
            )}
          </span>
        )}
      </li>
    );
  };
  return (
    <section class="paid-pins" aria-label="Paid pins">
      <ul class="paid-pin-list">
        {row(top, true)}
        {below.map((pin) => row(pin, false))}
      </ul>
      {(hidden > 0 || expanded) && rest.length > SHOWN_BELOW && (
        <button type="button" class="link-button paid-pins-more" aria-expanded={expanded} onClick={() => setExpanded(!expanded)}>
          {expanded ? "Show fewer pins" : `${hidden} more paid ${hidden === 1 ? "pin" : "pins"}`}
        </button>
      )}
    </section>
  );
}
