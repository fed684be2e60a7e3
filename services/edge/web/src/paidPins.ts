/** Paid pins in the room's state: the live list, kept as the room's log says.
 *
 * `paid_pin` and `paid_pin_removed` are entries of the room's log (ChatSession accounts for their
 * seqs). Each carries the room's live paid pins right after it, so it replaces the list when its
 * `paid_pins_state_seq` is above the one held; the newest history page's `board` (as of its
 * `last_seq`) applies when it is not older. A pin running out comes with no entry: every pin carries
 * its `expires_at`, and what is shown drops it then (`livePins`). So a client that saw every frame, one
 * that resumed after a gap, and one that just read history show the same pins. Tips are messages with
 * a `tip` (messageState.ts). */
import { frameHandlers, newestPageHandlers, type ChatSession } from "./chat";
import type { ShownPaidPin } from "./components/PaidPins";
import { messageFrom, seqOf } from "./messageState";
import type { PaidPinWire } from "./payments";
import type { Frame } from "./realtime";

export interface PaidPinsBoard {
  /** The live paid pins as of `stateSeq`, top first (some may have run out since). */
  pins: PaidPinWire[];
  stateSeq: number;
}

const boards = new WeakMap<ChatSession, PaidPinsBoard>();

export function paidPinsOf(chat: ChatSession): PaidPinsBoard {
  let board = boards.get(chat);
  if (!board) {
    board = { pins: [], stateSeq: 0 };
    boards.set(chat, board);
  }
  return board;
}

/** A paid pin as the edge sends it; null when it is not one. */
export function paidPinFrom(raw: unknown): PaidPinWire | null {
  if (typeof raw !== "object" || raw === null) return null;
  const wire = raw as Record<string, unknown>;
  const target = seqOf(wire.target_seq);
  const amount = seqOf(wire.amount_cents);
  if (typeof wire.id !== "string" || !wire.id || target === null || amount === null) return null;
  return {
    id: wire.id,
    target_seq: target,
    message: wire.message,
    participant_id: typeof wire.participant_id === "string" ? wire.participant_id : "",
    username: typeof wire.username === "string" ? wire.username : "",
    amount_cents: amount,
    currency: typeof wire.currency === "string" ? wire.currency : "",
    started_at: typeof wire.started_at === "string" ? wire.started_at : null,
    expires_at: typeof wire.expires_at === "string" ? wire.expires_at : null,
    removed_reason: typeof wire.removed_reason === "string" ? wire.removed_reason : "",
  };
}

function paidPinList(value: unknown): PaidPinWire[] {
  return Array.isArray(value) ? value.map(paidPinFrom).filter((pin): pin is PaidPinWire => pin !== null) : [];
}

/** Replace the list when `stateSeq` is newer than what is held (or as new, for a history page). */
export function applyPaidPins(chat: ChatSession, pins: PaidPinWire[], stateSeq: number, orEqual: boolean): void {
  const board = paidPinsOf(chat);
  if (stateSeq < board.stateSeq || (!orEqual && stateSeq === board.stateSeq)) return;
  board.pins = pins;
  board.stateSeq = stateSeq;
  chat.changed();
}

newestPageHandlers.add((chat, page) => {
  const raw = page.board;
  if (typeof raw !== "object" || raw === null) return;
  const wire = raw as Record<string, unknown>;
  applyPaidPins(chat, paidPinList(wire.paid_pins), seqOf(wire.paid_pins_state_seq) ?? 0, true);
});

function onPaidPins(chat: ChatSession, frame: Frame): void {
  const stateSeq = seqOf(frame.paid_pins_state_seq) ?? seqOf(frame.seq);
  if (stateSeq === null) return;
  applyPaidPins(chat, paidPinList(frame.paid_pins), stateSeq, false);
}
frameHandlers.set("paid_pin", onPaidPins);
frameHandlers.set("paid_pin_removed", onPaidPins);

/** The paid pins to show: each with its message as it stands now (the loaded one, else the copy the
 * entry carried), a deleted message's pin left out, a hidden one's text only for the host. Not yet
 * filtered by time: the view drops each at its end as the clock runs (`livePins`). */
export function shownPaidPins(chat: ChatSession, isHost: boolean): ShownPaidPin[] {
  const shown: ShownPaidPin[] = [];
  for (const pin of paidPinsOf(chat).pins) {
    const copy = messageFrom(pin.message);
    // A copy names its sender as paid for: one whose account was deleted since reads as forgotten.
    const message = chat.message(pin.target_seq) ?? (copy && chat.asKnown(copy));
    if (message?.deleted) continue;
    const expires = pin.expires_at === null ? Number.NaN : Date.parse(pin.expires_at);
    shown.push({
      id: pin.id,
      target_seq: pin.target_seq,
      participant_id: pin.participant_id,
      username: chat.forgottenName(pin.participant_id) ?? pin.username,
      amount_cents: pin.amount_cents,
      currency: pin.currency,
      expiresAt: Number.isNaN(expires) ? null : expires,
      by: message?.sender.username ?? "",
      text: !message ? "" : message.hidden && !isHost ? "Hidden pending review" : message.text,
    });
  }
  return shown;
}
