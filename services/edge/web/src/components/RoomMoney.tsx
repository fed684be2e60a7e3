/** Money in a room: whether it sells (paid pins, tips), the tip button, the paid pins area with its
 * ticking countdowns, tip events in the message list, the host's word on setting up payouts, and
 * removing a paid pin. Nothing here shows in a room whose host cannot receive money. */
import { useEffect, useState } from "preact/hooks";
import type { ChatSession } from "../chat";
import { fetchPaymentsConfig, fetchSales, money, moneyError, removePaidPin, type PaymentsConfig, type RoomSales } from "../payments";
import { readJson, writeJson } from "../storage";
import type { Shop } from "./Checkout";
import { Link } from "./Link";
import { Modal } from "./Modal";
import { livePins, PaidPins, type ShownPaidPin } from "./PaidPins";
import { PinDialog, type PinTarget } from "./PinDialog";
import { TipDialog } from "./TipDialog";
import "./money.css";
import "./room-settings.css";
import "./reactions.css";

/** Ticks every second while `active`: countdowns move and expired pins drop without any entry. */
export function useTick(active: boolean): number {
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    if (!active) return;
    setNow(Date.now());
    const timer = window.setInterval(() => setNow(Date.now()), 1000);
    return () => window.clearInterval(timer);
  }, [active]);
  return now;
}

export interface RoomSalesState {
  sales: RoomSales | null;
  /** How to pay here, once the room sells. */
  shop: Shop | null;
}

/** What the room sells, read when the connection is (again) live and when the room opens or closes:
 * the host may have finished setting up payouts meanwhile. */
export function useRoomSales(chat: ChatSession, active = true): RoomSalesState {
  const [sales, setSales] = useState<RoomSales | null>(null);
  const [config, setConfig] = useState<PaymentsConfig | null>(null);
  const live = chat.state.kind === "live" && active;
  useEffect(() => {
    if (!live) return;
    let current = true;
    fetchSales(chat.code).then(
      (found) => current && setSales(found),
      () => undefined,
    );
    return () => {
      current = false;
    };
  }, [chat, live, chat.room.closed]);
  // Stripe's publishable key, only where real payments are taken.
  const stripe = sales?.enabled === true && sales.mode === "stripe";
  useEffect(() => {
    if (!stripe || config) return;
    fetchPaymentsConfig().then(setConfig, () => undefined);
  }, [stripe]);
  const shop: Shop | null =
    sales?.enabled && (!stripe || config) ? { code: chat.code, mode: sales.mode, publishableKey: stripe ? (config?.publishable_key ?? "") : "" } : null;
  return { sales, shop };
}

export function TipIcon() {
  return (
    <svg viewBox="0 0 24 24" width={20} height={20} aria-hidden="true" focusable="false" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" stroke-linejoin="round">
      <circle cx="12" cy="12" r="9" />
      <path d="M15 9.2c-.5-1-1.6-1.6-3-1.6-1.8 0-3 .9-3 2.2 0 3 6 1.6 6 4.5 0 1.3-1.3 2.2-3 2.2-1.5 0-2.6-.6-3.1-1.7M12 6v1.6M12 16.4V18" />
    </svg>
  );
}

/** "Tip the host", beside the message box (not for the host themself): the header has no room left
 * on a phone. */
export function TipButton({ onTip }: { onTip: () => void }) {
  return (
    <button
      type="button"
      class="icon-button tip-button"
      aria-label="Tip the host"
      title="Tip the host"
      onClick={onTip}
    >
      <TipIcon />
    </button>
  );
}

/** The paid pins with their own second ticker, so only they redraw every second. */
export function RoomPaidPins({
  pins,
  me,
  isHost,
  canExtend,
  canRemove,
  onJump,
  onExtend,
  onRemove,
}: {
  pins: ShownPaidPin[];
  me: string;
  isHost: boolean;
  canExtend: boolean;
  canRemove: boolean;
  onJump: (seq: number) => void;
  onExtend: (pin: ShownPaidPin) => void;
  onRemove: (pin: ShownPaidPin) => void;
}) {
  const now = useTick(pins.length > 0);
  const shown = livePins(pins, now);
  return (
    <PaidPins
      pins={shown}
      now={now}
      me={me}
      isHost={isHost}
      canAct={{ extend: canExtend, remove: canRemove }}
      onJump={onJump}
      onExtend={onExtend}
      onRemove={onRemove}
    />
  );
}

/** The pin dialog over the room's live pins: it keeps its own ticker for the countdown and reads
 * what the room sells again on opening, so what it takes to outbid is current. */
export function RoomPinDialog({
  chat,
  shop,
  sales,
  pins,
  target,
  onDismiss,
}: {
  chat: ChatSession;
  shop: Shop;
  sales: RoomSales;
  pins: ShownPaidPin[];
  target: PinTarget;
  onDismiss: () => void;
}) {
  const now = useTick(true);
  const [fresh, setFresh] = useState<RoomSales | null>(null);
  useEffect(() => {
    let current = true;
    fetchSales(chat.code).then(
      (found) => current && setFresh(found),
      () => undefined,
    );
    return () => {
      current = false;
    };
  }, []);
  const live = livePins(pins, now);
  // The pin being extended as it stands now (another extension may have landed meanwhile).
  const shown: PinTarget = target.kind === "extension" ? { kind: "extension", pin: live.find((p) => p.id === target.pin.id) ?? target.pin } : target;
  const current = fresh ?? sales;
  return (
    <PinDialog
      shop={shop}
      currency={current.currency}
      tiers={current.pin_tiers}
      top={live[0] ?? null}
      serverMinimum={fresh ? fresh.min_pin_cents : null}
      target={shown}
      now={now}
      onDismiss={onDismiss}
    />
  );
}

/** The tip dialog with the room's bounds and presets. */
export function RoomTipDialog({ shop, sales, hostName, onDismiss }: { shop: Shop; sales: RoomSales; hostName: string | null; onDismiss: () => void }) {
  return (
    <TipDialog
      shop={shop}
      hostName={hostName}
      currency={sales.currency}
      presets={sales.tip_presets_cents}
      minCents={sales.tip_min_cents}
      maxCents={sales.tip_max_cents}
      onDismiss={onDismiss}
    />
  );
}

/** A tip in the message list: who, how much, and their note. */
export function TipEvent({
  seq,
  username,
  amountCents,
  currency,
  note,
  createdAt,
  mine,
}: {
  seq: number;
  username: string;
  amountCents: number;
  currency: string;
  note: string;
  createdAt: string | null;
  mine: boolean;
}) {
  const amount = money(amountCents, currency);
  const when = createdAt ? new Date(createdAt) : null;
  return (
    <article class="tip-event" id={`msg-${seq}`} data-tip-seq={seq} tabIndex={-1} aria-label={`${mine ? "You" : username} tipped the host ${amount}`}>
      <p class="tip-event-head">
        <strong>{mine ? "You" : username}</strong> tipped the host <span class="tip-event-amount">{amount}</span>
      </p>
      {note && <p class="tip-event-note">{note}</p>}
      {when && !Number.isNaN(when.getTime()) && (
        <time dateTime={when.toISOString()} title={when.toLocaleString()}>
          {when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })}
        </time>
      )}
    </article>
  );
}

const HINT_KEY = "chatpop.salesHintDismissed";

/** For the host of a room that sells nothing yet: how to start taking tips and paid pins. */
export function SalesHint({ sales, code }: { sales: RoomSales | null; code: string }) {
  const [dismissed, setDismissed] = useState(() => (readJson<string[]>(HINT_KEY) ?? []).includes(code));
  if (!sales || sales.enabled || dismissed) return null;
  if (sales.disabled_reason !== "host_not_onboarded" && sales.disabled_reason !== "anonymous_host") return null;
  const dismiss = (): void => {
    writeJson(HINT_KEY, [...(readJson<string[]>(HINT_KEY) ?? []), code].slice(-100));
    setDismissed(true);
  };
  return (
    <p class="sales-hint" role="note">
      {sales.disabled_reason === "anonymous_host" ? (
        <>Rooms of hosts with an account can take tips and paid pins. </>
      ) : (
        <>
          Take tips and paid pins here: <Link href="/payouts">set up payouts</Link>.{" "}
        </>
      )}
      <button type="button" class="link-button" onClick={dismiss}>
        Not now
      </button>
    </p>
  );
}

const DISABLED_WORDS: Record<string, string> = {
  host_not_onboarded: "Off until you set up payouts.",
  anonymous_host: "Off: rooms of hosts with an account can take them.",
  room_closed: "Off: the room is closed.",
};

/** In the host's room settings: whether the room takes tips and paid pins, and where the money is. */
export function RoomMoneySettings({ sales }: { sales: RoomSales | null }) {
  if (!sales) return null;
  const state = sales.enabled
    ? `On: people can tip you and pay to pin messages${sales.mode === "test" ? " (test mode — no real money)" : ""}.`
    : (DISABLED_WORDS[sales.disabled_reason] ?? "Off.");
  return (
    <section class="room-money" aria-labelledby="room-money-title">
      <h3 id="room-money-title">Tips and paid pins</h3>
      <p class="hint" data-enabled={sales.enabled ? "true" : "false"}>
        {state}
      </p>
      {sales.disabled_reason !== "anonymous_host" && (
        <p class="money-links">
          <Link href="/earnings" class="button small">
            Earnings
          </Link>
          <Link href="/payouts" class="button small">
            Payouts
          </Link>
        </p>
      )}
    </section>
  );
}

/** The host takes a paid pin down: it was paid for, so this asks once more (there is no refund). */
export function RemovePaidPinDialog({ chat, pin, onDone, onDismiss }: { chat: ChatSession; pin: ShownPaidPin; onDone: (text: string) => void; onDismiss: () => void }) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const remove = async (): Promise<void> => {
    setBusy(true);
    setError(null);
    try {
      await removePaidPin(chat.code, pin.id);
      onDone(`${pin.username}'s paid pin was removed.`);
      onDismiss();
    } catch (failure) {
      setError(moneyError(failure, "remove that pin"));
      setBusy(false);
    }
  };
  return (
    <Modal title={`Remove ${pin.username}'s paid pin?`} titleId="remove-pin-title" describedBy="remove-pin-description" onDismiss={busy ? undefined : onDismiss}>
      <div class="form">
        <p id="remove-pin-description">
          {pin.username} paid {money(pin.amount_cents, pin.currency)} for it. It leaves the pinned area for everyone at once, and the payment is not refunded.
        </p>
        <blockquote class="delete-preview">
          <strong>{pin.by}:</strong> {pin.text}
        </blockquote>
        {error && (
          <p class="field-error" role="alert">
            {error}
          </p>
        )}
        <div class="modal-actions">
          <button type="button" class="button" onClick={onDismiss} disabled={busy}>
            Cancel
          </button>
          <button type="button" class="button danger" onClick={() => void remove()} disabled={busy}>
            {busy ? "Removing…" : "Remove pin"}
          </button>
        </div>
      </div>
    </Modal>
  );
}
