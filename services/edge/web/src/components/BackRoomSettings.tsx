/** The host's Back Room settings, when creating a room and in its settings: on or off, the seat
 * price and the seat limit. Only a host who can receive money may open one; the fields say why not
 * otherwise. The limit never goes below the seats already taken. */
import type { BackRoomInfo, BackRoomSettings } from "../api";
import { money } from "../payments";
import { Link } from "./Link";
import { centsFrom } from "./TipDialog";
import "./back-room.css";

export const SEAT_PRICE_MIN_CENTS = 50;
export const SEAT_PRICE_MAX_CENTS = 100_000;
export const SEAT_LIMIT_MAX = 1000;

export interface BackRoomDraft {
  enabled: boolean;
  /** The price as typed, in the currency's major unit ("5", "7.50"). */
  price: string;
  /** The limit as typed. */
  limit: string;
}

/** Whether this host can sell seats (null while it is being found out), and why not. */
export interface SeatSelling {
  can: boolean;
  /** `host_not_onboarded`, `anonymous_host`, `room_closed`…; empty when they can. */
  reason: string;
  currency: string;
  testMode: boolean;
}

export type BackRoomErrors = { price?: string; limit?: string; form?: string };

export function draftOf(info: BackRoomInfo | null | undefined): BackRoomDraft {
  return {
    enabled: info?.enabled === true,
    price: info?.seat_price_cents ? (info.seat_price_cents / 100).toFixed(2) : "5.00",
    limit: String(info?.seat_limit || 10),
  };
}

/** What the draft changes on the Back Room as it is (`info`), or what is wrong with it. */
export function backRoomChanges(
  draft: BackRoomDraft,
  info: BackRoomInfo | null | undefined,
  currency: string,
): { errors: BackRoomErrors; changes: BackRoomSettings | null } {
  const errors: BackRoomErrors = {};
  const wasOn = info?.enabled === true;
  if (!draft.enabled) return { errors, changes: wasOn ? { enabled: false } : null };
  const cents = centsFrom(draft.price);
  if (cents === null) errors.price = "Type a price, like 5 or 7.50.";
  else if (cents < SEAT_PRICE_MIN_CENTS || cents > SEAT_PRICE_MAX_CENTS) {
    errors.price = `A seat costs from ${money(SEAT_PRICE_MIN_CENTS, currency)} to ${money(SEAT_PRICE_MAX_CENTS, currency)}.`;
  }
  const taken = info?.seats_taken ?? 0;
  const limit = Number(draft.limit.trim());
  if (!draft.limit.trim() || !Number.isInteger(limit) || limit < 1 || limit > SEAT_LIMIT_MAX) {
    errors.limit = `Choose a number of seats from ${Math.max(1, taken)} to ${SEAT_LIMIT_MAX.toLocaleString()}.`;
  } else if (limit < taken) {
    errors.limit = `${taken} ${taken === 1 ? "seat is" : "seats are"} taken: the limit can't go below that.`;
  }
  if (errors.price || errors.limit) return { errors, changes: null };
  const changes: BackRoomSettings = {};
  if (!wasOn) changes.enabled = true;
  if (cents !== null && cents !== info?.seat_price_cents) changes.seat_price_cents = cents;
  if (limit !== info?.seat_limit) changes.seat_limit = limit;
  return { errors, changes: Object.keys(changes).length ? changes : null };
}

const CANNOT_WORDS: Record<string, string> = {
  anonymous_host: "Rooms of hosts with an account can have a Back Room.",
  room_closed: "The room is closed.",
};

export function BackRoomFields({
  idPrefix,
  draft,
  onChange,
  info,
  selling,
  errors,
}: {
  idPrefix: string;
  draft: BackRoomDraft;
  onChange: (draft: BackRoomDraft) => void;
  /** The Back Room as it is (null when creating a room). */
  info: BackRoomInfo | null | undefined;
  selling: SeatSelling | null;
  errors: BackRoomErrors;
}) {
  const taken = info?.seats_taken ?? 0;
  const wasOn = info?.enabled === true;
  // A host who can no longer sell may still close the Back Room, never open one.
  const canToggle = selling?.can === true || wasOn;
  const currency = selling?.currency ?? "usd";
  const priceId = `${idPrefix}-seat-price`;
  const limitId = `${idPrefix}-seat-limit`;
  return (
    <fieldset class="field back-room-fields" aria-describedby={`${idPrefix}-back-room-hint`}>
      <legend>Back Room (paid seats)</legend>
      <p id={`${idPrefix}-back-room-hint`} class="hint">
        A separate chat with you for the people who buy a seat.
        {selling?.can && selling.testMode && " Test mode — no real money."}
      </p>
      {selling === null && <p class="hint" role="status">Checking whether you can sell seats…</p>}
      {selling !== null && !selling.can && (
        <p class="hint back-room-cannot" role="note" data-reason={selling.reason}>
          {selling.reason === "host_not_onboarded" || !selling.reason ? (
            <>
              To sell seats you need to receive payments first: <Link href="/payouts">set up payouts</Link>.
            </>
          ) : (
            (CANNOT_WORDS[selling.reason] ?? "Seats can't be sold in this room right now.")
          )}
        </p>
      )}
      <label class="choice">
        <input
          type="checkbox"
          name={`${idPrefix}-back-room`}
          checked={draft.enabled}
          disabled={!canToggle}
          onChange={(e) => onChange({ ...draft, enabled: e.currentTarget.checked })}
        />
        Open a Back Room
      </label>
      {draft.enabled && (
        <div class="back-room-numbers">
          <div class="field">
            <label for={priceId}>Seat price ({currency.toUpperCase()})</label>
            <input
              id={priceId}
              type="text"
              inputMode="decimal"
              autocomplete="off"
              value={draft.price}
              aria-invalid={errors.price ? true : undefined}
              aria-describedby={`${priceId}-hint${errors.price ? ` ${priceId}-error` : ""}`}
              onInput={(e) => onChange({ ...draft, price: e.currentTarget.value })}
            />
            <p id={`${priceId}-hint`} class="hint">
              {wasOn ? "A new price applies to the next buyers." : `From ${money(SEAT_PRICE_MIN_CENTS, currency)} to ${money(SEAT_PRICE_MAX_CENTS, currency)}.`}
            </p>
            {errors.price && (
              <p id={`${priceId}-error`} class="field-error" role="alert">
                {errors.price}
              </p>
            )}
          </div>
          <div class="field">
            <label for={limitId}>Seats</label>
            <input
              id={limitId}
              type="number"
              inputMode="numeric"
              min={Math.max(1, taken)}
              max={SEAT_LIMIT_MAX}
              value={draft.limit}
              aria-invalid={errors.limit ? true : undefined}
              aria-describedby={`${limitId}-hint${errors.limit ? ` ${limitId}-error` : ""}`}
              onInput={(e) => onChange({ ...draft, limit: e.currentTarget.value })}
            />
            <p id={`${limitId}-hint`} class="hint" data-taken={taken}>
              {info ? `${taken} ${taken === 1 ? "seat" : "seats"} taken now.` : `Up to ${SEAT_LIMIT_MAX.toLocaleString()}.`}
            </p>
            {errors.limit && (
              <p id={`${limitId}-error`} class="field-error" role="alert">
                {errors.limit}
              </p>
            )}
          </div>
        </div>
      )}
      {errors.form && (
        <p class="field-error" role="alert">
          {errors.form}
        </p>
      )}
    </fieldset>
  );
}
