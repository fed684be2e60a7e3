/** The Back Room (paid seats) as the main room shows it: its card (price, seats left, "Full", live
 * from the room's `room_updated` frames), buying a seat through the same checkout as pins and tips,
 * and the way in for the host and seat holders. Inside the Back Room: its members and, for the host,
 * removing a seat with or without a refund. */
import { useEffect, useRef, useState } from "preact/hooks";
import { ApiError, type BackRoomInfo } from "../api";
import type { ChatSession } from "../chat";
import { money, moneyError, type RoomSales } from "../payments";
import { listSeats, removeSeat, type Seat } from "../rooms";
import { navigate } from "../router";
import { CheckoutSteps, TestModeLabel, usePurchase, type Shop } from "./Checkout";
import { Modal } from "./Modal";
import "./money.css";
import "./back-room.css";

export function backRoomPath(mainCode: string): string {
  return `/c/${encodeURIComponent(mainCode)}/back-room`;
}

export function seatsLeftWords(info: BackRoomInfo): string {
  const left = Math.max(0, info.seats_left ?? info.seat_limit - info.seats_taken);
  if (info.full || left === 0) return "Full";
  return `${left} of ${info.seat_limit} ${info.seat_limit === 1 ? "seat" : "seats"} left`;
}

/** Whether this person holds a seat: null until known. The host always may enter. Asked again when
 * the connection comes back and whenever the number of seats taken changes (a seat granted or
 * removed), since only the host and holders may read the seat list. */
export function useMySeat(chat: ChatSession, isHost: boolean): { held: boolean | null; seated: () => void } {
  const info = chat.room.back_room;
  // Holders keep their seats while seats are off sale.
  const enabled = info?.enabled === true || (info?.seats_taken ?? 0) > 0;
  const live = chat.state.kind === "live";
  const [held, setHeld] = useState<boolean | null>(isHost ? true : null);
  const [asked, setAsked] = useState(0);
  useEffect(() => {
    if (isHost || !enabled || !live) return;
    const controller = new AbortController();
    listSeats(chat.code, controller.signal).then(
      (list) => setHeld(list.seats.some((seat) => seat.participant_id === chat.me.id)),
      (error: unknown) => {
        if (controller.signal.aborted) return;
        if (error instanceof ApiError && (error.status === 403 || error.status === 404)) setHeld(false);
      },
    );
    return () => controller.abort();
  }, [chat, isHost, enabled, live, info?.seats_taken, asked]);
  return {
    held: isHost ? true : enabled ? held : false,
    seated: () => {
      setHeld(true);
      setAsked((n) => n + 1);
    },
  };
}

export function DoorIcon() {
  return (
    <svg viewBox="0 0 24 24" width={20} height={20} aria-hidden="true" focusable="false" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" stroke-linejoin="round">
      <path d="M4 21h16M6 21V4a1 1 0 0 1 1-1h10a1 1 0 0 1 1 1v17" />
      <circle cx="14.5" cy="12.5" r="1" fill="currentColor" stroke="none" />
    </svg>
  );
}

/** The main room's card for its Back Room: what a seat costs, how many are left, and the way in. */
export function BackRoomCard({
  info,
  mainCode,
  isHost,
  held,
  sales,
  canAct,
  onBuy,
}: {
  info: BackRoomInfo;
  mainCode: string;
  isHost: boolean;
  held: boolean | null;
  sales: RoomSales | null;
  canAct: boolean;
  onBuy: () => void;
}) {
  const currency = sales?.currency ?? "usd";
  const left = seatsLeftWords(info);
  const full = left === "Full";
  const enter = (
    <a
      href={backRoomPath(mainCode)}
      class="button small primary"
      onClick={(event) => {
        if (event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
        event.preventDefault();
        navigate(backRoomPath(mainCode));
      }}
    >
      Enter the Back Room
    </a>
  );
  let action = null;
  if (isHost || held) action = enter;
  else if (full || !info.enabled) action = null;
  else if (canAct && sales?.enabled) {
    action = (
      <button type="button" class="button small primary" onClick={onBuy}>
        Buy a seat
      </button>
    );
  }
  return (
    <section class="back-room-card" aria-labelledby="back-room-card-title" data-full={full ? "true" : "false"} data-held={held ? "true" : "false"}>
      <span class="back-room-icon" aria-hidden="true">
        <DoorIcon />
      </span>
      <div class="back-room-card-main">
        <h2 id="back-room-card-title">Back Room</h2>
        <p class="back-room-card-facts">
          {info.enabled ? (
            <span class="back-room-price">{money(info.seat_price_cents, currency)} a seat</span>
          ) : (
            <span class="back-room-price">No seats on sale</span>
          )}
          <span aria-hidden="true"> · </span>
          {!info.enabled ? (
            <span class="back-room-left">
              {info.seats_taken} {info.seats_taken === 1 ? "holder" : "holders"}
            </span>
          ) : full ? (
            <strong class="back-room-full">Full</strong>
          ) : (
            <span class="back-room-left">{left}</span>
          )}
          {isHost && info.enabled && (
            <>
              <span aria-hidden="true"> · </span>
              <span class="back-room-taken">
                {info.seats_taken} {info.seats_taken === 1 ? "seat" : "seats"} taken
              </span>
            </>
          )}
          {held && !isHost && (
            <>
              <span aria-hidden="true"> · </span>
              <span class="back-room-yours">You have a seat</span>
            </>
          )}
        </p>
      </div>
      {action}
    </section>
  );
}

/** Buying a seat: nothing to choose but to go ahead, then the same checkout as pins and tips. A
 * payment that lands after the last seat went is refunded in full, and the dialog says so. */
export function SeatDialog({
  shop,
  info,
  currency,
  mainCode,
  onSeated,
  onDismiss,
}: {
  shop: Shop;
  info: BackRoomInfo;
  currency: string;
  mainCode: string;
  onSeated: () => void;
  onDismiss: () => void;
}) {
  const purchase = usePurchase(shop);
  const busy = purchase.phase.kind === "creating";
  const price = money(info.seat_price_cents, currency);
  const phase = purchase.phase;
  const seated = phase.kind === "done" && phase.order.state === "fulfilled";
  const told = useRef(false);
  useEffect(() => {
    if (seated && !told.current) {
      told.current = true;
      onSeated();
    }
  }, [seated]);
  const left = seatsLeftWords(info);
  const choose = (
    <form
      class="form seat-form"
      noValidate
      onSubmit={(event) => {
        event.preventDefault();
        void purchase.buy({ seat: {} });
      }}
    >
      <TestModeLabel mode={shop.mode} />
      <p id="seat-description">
        The Back Room is a separate chat with the host, only for the people who bought a seat. A seat costs <strong>{price}</strong>, paid once.
      </p>
      <p class="hint">{left === "Full" ? "No seat is left right now." : `${left}.`} If the seats run out before your payment arrives, you are refunded in full.</p>
      {phase.kind === "choose" && phase.error && (
        <p class="field-error" role="alert">
          {phase.error}
        </p>
      )}
      <div class="modal-actions">
        <button type="button" class="button" onClick={onDismiss} disabled={busy}>
          Cancel
        </button>
        <button type="submit" class="button primary" disabled={busy}>
          {busy ? "Starting…" : `Buy a seat for ${price}`}
        </button>
      </div>
    </form>
  );
  return (
    <Modal title="Buy a Back Room seat" titleId="seat-title" describedBy="seat-description" onDismiss={phase.kind === "confirming" ? undefined : onDismiss} class="money-modal">
      <CheckoutSteps
        shop={shop}
        purchase={purchase}
        words={{ processing: "Payment received. Taking your seat…", done: "Your seat is yours: welcome to the Back Room." }}
        choose={choose}
        onClose={onDismiss}
      />
      {seated && (
        <p class="seat-enter">
          <a
            href={backRoomPath(mainCode)}
            class="button primary"
            onClick={(event) => {
              event.preventDefault();
              navigate(backRoomPath(mainCode));
            }}
          >
            Enter the Back Room
          </a>
        </p>
      )}
    </Modal>
  );
}

function grantedWords(iso: string | null): string {
  if (!iso) return "";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? "" : `since ${date.toLocaleString([], { day: "numeric", month: "short", hour: "2-digit", minute: "2-digit" })}`;
}

/** Removing a seat: the host chooses whether the holder gets their money back. */
function RemoveSeat({ mainCode, seat, onRemoved, onCancel }: { mainCode: string; seat: Seat; onRemoved: (words: string) => void; onCancel: () => void }) {
  const [refund, setRefund] = useState(true);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const confirm = async (): Promise<void> => {
    setBusy(true);
    setError(null);
    try {
      const removed = await removeSeat(mainCode, seat.participant_id, refund);
      onRemoved(
        refund
          ? `${seat.username}'s seat was removed${removed.refunded === false ? "." : " and refunded in full."}`
          : `${seat.username}'s seat was removed, without a refund.`,
      );
    } catch (failure) {
      setError(moneyError(failure, "remove that seat"));
      setBusy(false);
    }
  };
  return (
    <div class="remove-seat" role="group" aria-labelledby={`remove-seat-${seat.participant_id}`}>
      <p id={`remove-seat-${seat.participant_id}`}>
        <strong>Remove {seat.username}'s seat?</strong> They leave the Back Room at once.
      </p>
      <fieldset class="choices">
        <legend class="sr-only">Refund</legend>
        <label class="choice">
          <input type="radio" name={`refund-${seat.participant_id}`} checked={refund} disabled={busy} onChange={() => setRefund(true)} />
          Refund their seat in full
        </label>
        <label class="choice">
          <input type="radio" name={`refund-${seat.participant_id}`} checked={!refund} disabled={busy} onChange={() => setRefund(false)} />
          No refund (for abuse)
        </label>
      </fieldset>
      {error && (
        <p class="field-error" role="alert">
          {error}
        </p>
      )}
      <div class="modal-actions">
        <button type="button" class="button" onClick={onCancel} disabled={busy}>
          Keep the seat
        </button>
        <button type="button" class="button danger" onClick={() => void confirm()} disabled={busy}>
          {busy ? "Removing…" : refund ? "Remove and refund" : "Remove without refund"}
        </button>
      </div>
    </div>
  );
}

/** Who is in the Back Room: its host and the seat holders; the host removes seats from here. */
export function BackRoomMembers({
  mainCode,
  isHost,
  hostName,
  me,
  onSaid,
  onDismiss,
}: {
  mainCode: string;
  isHost: boolean;
  hostName: string | null;
  /** This person's username (in the main room and the Back Room alike). */
  me: string;
  onSaid: (text: string) => void;
  onDismiss: () => void;
}) {
  const [seats, setSeats] = useState<Seat[] | null>(null);
  const [info, setInfo] = useState<BackRoomInfo | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [removing, setRemoving] = useState<string | null>(null);
  const [round, setRound] = useState(0);
  useEffect(() => {
    const controller = new AbortController();
    listSeats(mainCode, controller.signal).then(
      (list) => {
        setSeats(list.seats);
        setInfo(list.back_room ?? null);
        setError(null);
      },
      (failure: unknown) => {
        if (!controller.signal.aborted) setError(failure instanceof ApiError ? failure.message : "Could not load the members.");
      },
    );
    return () => controller.abort();
  }, [mainCode, round]);
  const host = isHost ? me : hostName;
  return (
    <Modal title="Back Room members" titleId="members-title" onDismiss={onDismiss} class="back-room-members">
      {info && (
        <p class="hint">
          {info.seats_taken} of {info.seat_limit} {info.seat_limit === 1 ? "seat" : "seats"} taken
        </p>
      )}
      {error && (
        <p class="field-error" role="alert">
          {error}{" "}
          <button type="button" class="link-button" onClick={() => setRound((n) => n + 1)}>
            Try again
          </button>
        </p>
      )}
      {seats === null && !error && <p role="status">Loading…</p>}
      {seats !== null && (
        <ul class="seat-list" aria-label="Members">
          <li class="seat-row" data-host="true">
            <span class="seat-name">
              {host ?? "The host"}
              {isHost && <span class="sr-only"> (you)</span>}
            </span>
            <span class="badge host">Host</span>
          </li>
          {seats.map((seat) => (
            <li key={seat.participant_id} class="seat-row" data-participant={seat.participant_id}>
              <span class="seat-name">
                {seat.username}
                {!isHost && seat.username === me && <span class="seat-you"> (you)</span>}
              </span>
              <span class="seat-since">{grantedWords(seat.granted_at)}</span>
              {isHost && removing !== seat.participant_id && (
                <button type="button" class="button small danger" aria-label={`Remove ${seat.username}'s seat`} onClick={() => setRemoving(seat.participant_id)}>
                  Remove
                </button>
              )}
              {isHost && removing === seat.participant_id && (
                <RemoveSeat
                  mainCode={mainCode}
                  seat={seat}
                  onCancel={() => setRemoving(null)}
                  onRemoved={(words) => {
                    setRemoving(null);
                    onSaid(words);
                    setRound((n) => n + 1);
                  }}
                />
              )}
            </li>
          ))}
          {!seats.length && <li class="seat-row empty">Nobody has bought a seat yet.</li>}
        </ul>
      )}
    </Modal>
  );
}
