/** Money over REST: what a room sells (paid pins, tips), orders and their payment, payout onboarding,
 * a host's earnings and a buyer's own payments.
 *
 * Prices are the server's: the client only names a tier or a tip amount, and the server prices the
 * order. Every order is created with an idempotency key, so a retried request never buys twice. An
 * order moves forward only (created → awaiting payment → paid → fulfilled, or refunding → refunded,
 * failed, cancelled); the client follows it by reading it again until it settles. */
import { ApiError, request } from "./api";
import { withAccess } from "./auth";
import { newClientMsgId } from "./ids";
import { canonicalCode, withRoomToken } from "./rooms";

// --- shapes of the edge's JSON ---------------------------------------------------------------

/** "stripe": real payments through Stripe; "test": ChatPop's test mode, no real money moves. */
export type PaymentsMode = "stripe" | "test";

export interface PaymentsConfig {
  mode: PaymentsMode;
  currency: string;
  /** Stripe's publishable key; empty in test mode. */
  publishable_key: string;
  platform_fee_percent: number;
}

export interface PinTier {
  amount_cents: number;
  /** Minutes the tier adds to a pin. */
  minutes: number;
}

/** A paid pin as the edge sends it (REST and frames). */
export interface PaidPinWire {
  id: string;
  target_seq: number;
  /** The pinned message as it stood when the entry was written (read through `messageFrom`). */
  message?: unknown;
  participant_id: string;
  username: string;
  /** Everything paid for it, extensions included: what a rival must outbid. */
  amount_cents: number;
  currency: string;
  started_at: string | null;
  expires_at: string | null;
  removed_reason?: string;
}

export interface RoomSales {
  /** The room's host can receive money: pins and tips are on sale. */
  enabled: boolean;
  /** Why not: `anonymous_host`, `host_not_onboarded`, `room_closed`… */
  disabled_reason: string;
  mode: PaymentsMode;
  currency: string;
  pin_tiers: PinTier[];
  tip_presets_cents: number[];
  tip_min_cents: number;
  tip_max_cents: number;
  /** Live paid pins, top first. */
  paid_pins: PaidPinWire[];
  /** The lowest tier that outbids the top pin now (the base rate when none is live); 0 or null when
   * no tier is above the top pin. */
  min_pin_cents: number | null;
  /** The caller's pin when it is the top one (it may be extended); empty otherwise. */
  my_top_pin_id: string;
}

export type OrderKind = "pin" | "pin_extension" | "tip" | "seat";

export type OrderState =
  | "created"
  | "awaiting_payment"
  | "paid"
  | "fulfilled"
  | "refunding"
  | "refunded"
  | "failed"
  | "cancelled";

export interface Order {
  id: string;
  kind: OrderKind;
  state: OrderState;
  room_id: string;
  amount_cents: number;
  fee_cents: number;
  currency: string;
  target_seq: number | null;
  pin_id: string | null;
  note: string;
  /** The last payment error (a declined card…); empty when none. */
  payment_error: string;
  refund_reason: string;
  /** Why it was refunded, in a sentence for people. */
  refund_message: string;
  test_mode: boolean;
  created_at: string | null;
  updated_at: string | null;
  fulfilled_seq: number | null;
}

export interface CreatedOrder {
  order: Order;
  /** For Stripe.js to confirm the payment; empty in test mode. */
  client_secret: string;
}

export interface OrderPage {
  orders: Order[];
  has_more: boolean;
}

export interface PayoutAccount {
  stripe_account_id: string;
  details_submitted: boolean;
  charges_enabled: boolean;
  payouts_enabled: boolean;
  /** The host can sell: charges are enabled. */
  can_receive: boolean;
  updated_at: string | null;
  test_mode: boolean;
}

export interface Onboarding {
  account: PayoutAccount | null;
  /** Stripe's onboarding page, or in test mode this client's test onboarding page. */
  onboarding_url: string;
}

/** Money in cents: gross paid in, the platform's fee, the host's net; refunds already taken out. */
export interface Amounts {
  gross_cents: number;
  fee_cents: number;
  net_cents: number;
  refunded_cents: number;
  count: number;
}

export interface RoomEarnings {
  room_id: string;
  /** The room, when the edge names it. */
  room_code?: string;
  room_name?: string;
  pins: Amounts;
  tips: Amounts;
  total: Amounts;
  /** Back Room seats (absent from edges that do not sell them). */
  seats?: Amounts;
}

export interface Earnings {
  currency: string;
  pins: Amounts;
  tips: Amounts;
  total: Amounts;
  seats?: Amounts;
  rooms: RoomEarnings[];
}

/** What an order buys: a new pin, more time on this person's top pin, a tip, or a Back Room seat
 * (at the seat price of the moment: there is nothing to choose). */
export type OrderItem =
  | { pin: { target_seq: number; tier_cents: number } }
  | { extension: { pin_id: string; tier_cents: number } }
  | { tip: { amount_cents: number; note: string } }
  | { seat: Record<string, never> };

// --- words -------------------------------------------------------------------------------------

/** "$5.00", "€12.50": an amount in the currency's minor unit, in this browser's language. */
export function money(cents: number, currency: string): string {
  const code = (currency || "usd").toUpperCase();
  try {
    return new Intl.NumberFormat(undefined, { style: "currency", currency: code }).format(cents / 100);
  } catch {
    return `${(cents / 100).toFixed(2)} ${code}`;
  }
}

/** "10 minutes", "1 hour", "1 hour 30 minutes", "5 hours". */
export function minutesWords(minutes: number): string {
  const hours = Math.floor(minutes / 60);
  const rest = minutes % 60;
  const h = hours ? `${hours} ${hours === 1 ? "hour" : "hours"}` : "";
  const m = rest ? `${rest} ${rest === 1 ? "minute" : "minutes"}` : "";
  return [h, m].filter(Boolean).join(" ") || "0 minutes";
}

/** "4:05" or "1:02:09": what is left until `until`, for a countdown. */
export function countdown(until: number, now: number): string {
  const total = Math.max(0, Math.ceil((until - now) / 1000));
  const hours = Math.floor(total / 3600);
  const minutes = Math.floor((total % 3600) / 60);
  const seconds = total % 60;
  const two = (n: number): string => String(n).padStart(2, "0");
  return hours ? `${hours}:${two(minutes)}:${two(seconds)}` : `${minutes}:${two(seconds)}`;
}

/** "4 minutes 5 seconds left", for screen readers (read once, not every second). */
export function countdownWords(until: number, now: number): string {
  const total = Math.max(0, Math.ceil((until - now) / 1000));
  if (total < 60) return `${total} ${total === 1 ? "second" : "seconds"} left`;
  return `${minutesWords(Math.ceil(total / 60))} left`;
}

export const STATE_WORDS: Record<OrderState, string> = {
  created: "Waiting for payment",
  awaiting_payment: "Waiting for payment",
  paid: "Paid — processing",
  fulfilled: "Done",
  refunding: "Being refunded",
  refunded: "Refunded",
  failed: "Payment failed",
  cancelled: "Cancelled",
};

/** Where an order stands, in words for its buyer ("Pinned", "Tip sent", "Refunded"…). */
export function stateWords(order: Order): string {
  if (order.state !== "fulfilled") return STATE_WORDS[order.state] ?? order.state;
  if (order.kind === "seat") return "Seat taken";
  return order.kind === "tip" ? "Tip sent" : order.kind === "pin_extension" ? "Extended" : "Pinned";
}

export const KIND_WORDS: Record<OrderKind, string> = {
  pin: "Paid pin",
  pin_extension: "Pin extension",
  tip: "Tip",
  seat: "Back Room seat",
};

/** States an order never leaves. */
export function settled(order: Order): boolean {
  return order.state === "fulfilled" || order.state === "refunded" || order.state === "failed" || order.state === "cancelled";
}

/** Words for a refusal of an order or a payment: the server's sentence, or ours for the codes people
 * can act on. */
export function moneyError(error: unknown, what: string): string {
  if (!(error instanceof ApiError)) return `Could not ${what}. Please try again.`;
  switch (error.code) {
    case "outbid_required":
      return "Someone pinned a message for more meanwhile: pick a higher tier.";
    case "not_top_pin":
      return "Your pin is no longer the top one, so it can't be extended.";
    case "payments_not_enabled":
      return "The host can't receive payments right now.";
    case "account_required":
      return "Log in with an account first: payouts need one.";
    case "not_test_mode":
      return "Test payments are off: this ChatPop takes real payments.";
    case "seats_full":
      return "The Back Room is full: no seat is left.";
    case "already_seated":
      return "You already have a seat in the Back Room.";
    case "back_room_unavailable":
      return "The Back Room isn't open right now.";
    default:
      return error.message;
  }
}

// --- calls ------------------------------------------------------------------------------------

function roomPath(code: string, rest: string): string {
  return `/api/v1/rooms/${encodeURIComponent(canonicalCode(code))}${rest}`;
}

export function fetchPaymentsConfig(): Promise<PaymentsConfig> {
  return request<PaymentsConfig>("GET", "/api/v1/payments/config", { retries: 2 });
}

/** What the room sells, with its live paid pins; with the room token when this person joined (the
 * answer then names their top pin). */
export function fetchSales(code: string, signal?: AbortSignal): Promise<RoomSales> {
  return withRoomToken(code, (token) => request<RoomSales>("GET", roomPath(code, "/sales"), { token, retries: 2, signal }));
}

/** Open an order. `key` makes the request safe to send again: the same key answers the same order. */
export function createOrder(code: string, key: string, item: OrderItem): Promise<CreatedOrder> {
  const body = { idempotency_key: key, ...item };
  return withRoomToken(code, (token) => request<CreatedOrder>("POST", roomPath(code, "/orders"), { body, token, retries: 2 }));
}

export function newIdempotencyKey(): string {
  return newClientMsgId();
}

export async function fetchOrder(orderId: string, signal?: AbortSignal): Promise<Order> {
  const path = `/api/v1/payments/orders/${encodeURIComponent(orderId)}`;
  const answer = await withAccess((token) => request<{ order: Order } | Order>("GET", path, { token, retries: 2, signal }));
  return "order" in answer ? answer.order : answer;
}

export function listOrders(before: string | null, limit = 25): Promise<OrderPage> {
  const params = new URLSearchParams({ limit: String(limit) });
  if (before) params.set("before", before);
  return withAccess((token) => request<OrderPage>("GET", `/api/v1/payments/orders?${params}`, { token, retries: 2 }));
}

/** Test mode's stand-in for paying at Stripe: the test card goes through, or is declined. */
export async function confirmTestPayment(orderId: string, outcome: "succeed" | "decline"): Promise<Order> {
  const path = `/api/v1/payments/orders/${encodeURIComponent(orderId)}/test-confirm`;
  const answer = await withAccess((token) => request<{ order: Order } | Order>("POST", path, { body: { outcome }, token, retries: 2 }));
  return "order" in answer ? answer.order : answer;
}

export async function fetchPayoutAccount(refresh = false): Promise<PayoutAccount | null> {
  const path = `/api/v1/payments/payout-account${refresh ? "?refresh=true" : ""}`;
  const answer = await withAccess((token) => request<{ account: PayoutAccount | null }>("GET", path, { token, retries: 2 }));
  return answer.account ?? null;
}

/** A fresh onboarding link; Stripe sends the host back to `/payouts?returned=1` (the server's default:
 * it names this site by its public address, which the page's own address may not be). */
export function startOnboarding(): Promise<Onboarding> {
  return withAccess((token) => request<Onboarding>("POST", "/api/v1/payments/payout-account/onboarding", { body: {}, token, retries: 2 }));
}

export async function completeTestOnboarding(): Promise<PayoutAccount | null> {
  const answer = await withAccess((token) =>
    request<{ account: PayoutAccount | null }>("POST", "/api/v1/payments/payout-account/test-complete", { token, retries: 2 }),
  );
  return answer.account ?? null;
}

export function fetchEarnings(): Promise<Earnings> {
  return withAccess((token) => request<Earnings>("GET", "/api/v1/payments/earnings", { token, retries: 2 }));
}

/** The host takes a paid pin down before its time (no refund for a pin that was granted). */
export function removePaidPin(code: string, pinId: string): Promise<{ seq?: number; changed: boolean }> {
  const path = roomPath(code, `/paid-pins/${encodeURIComponent(pinId)}`);
  return withRoomToken(code, (token) => request("DELETE", path, { token, retries: 2 }));
}

// --- following an order -------------------------------------------------------------------------

/** Read a paid order again until it settles (granted, refunded…). `onChange` sees every new state.
 * An error of an earlier declined card may still show until Stripe's word of the payment arrives, so
 * it is no reason to stop. Gives up quietly after `limitMs` (the order goes on at the server; the
 * payments page shows where it ended). */
export async function followOrder(
  orderId: string,
  onChange: (order: Order) => void,
  signal: AbortSignal,
  options: { limitMs?: number } = {},
): Promise<Order | null> {
  const started = Date.now();
  const limit = options.limitMs ?? 120_000;
  let delay = 600;
  let last: Order | null = null;
  while (!signal.aborted && Date.now() - started < limit) {
    try {
      const order = await fetchOrder(orderId, signal);
      if (!last || order.state !== last.state || order.payment_error !== last.payment_error || order.updated_at !== last.updated_at) {
        onChange(order);
      }
      last = order;
      if (settled(order)) return order;
    } catch (error) {
      if (error instanceof DOMException && error.name === "AbortError") return last;
      if (error instanceof ApiError && !error.transient && error.status !== 429) throw error;
    }
    await new Promise<void>((resolve) => {
      const timer = window.setTimeout(resolve, delay);
      signal.addEventListener("abort", () => {
        window.clearTimeout(timer);
        resolve();
      });
    });
    delay = Math.min(3000, Math.round(delay * 1.4));
  }
  return last;
}
