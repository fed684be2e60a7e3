/** Buying something in a room, after choosing it: the order is opened (with an idempotency key), then
 * paid (test mode: a test card that goes through or is declined; with Stripe: Stripe's Payment
 * Element), then followed until it settles: granted, refunded with the reason, or a payment error to
 * try again. Shared by paid pins, extensions and tips. */
import type { ComponentChildren } from "preact";
import { useEffect, useRef, useState } from "preact/hooks";
import {
  confirmTestPayment,
  createOrder,
  followOrder,
  money,
  moneyError,
  newIdempotencyKey,
  settled,
  type Order,
  type OrderItem,
  type PaymentsMode,
} from "../payments";
import { stripeAppearance, stripeClient, type StripeClient, type StripeElements } from "../stripe";
import "./money.css";

/** Where a purchase happens and how it is paid. */
export interface Shop {
  code: string;
  mode: PaymentsMode;
  /** Stripe's publishable key; empty in test mode. */
  publishableKey: string;
}

export type Phase =
  | { kind: "choose"; error?: string }
  | { kind: "creating" }
  | { kind: "pay"; order: Order; clientSecret: string; error?: string }
  | { kind: "confirming"; order: Order; clientSecret: string }
  | { kind: "processing"; order: Order; slow?: boolean }
  | { kind: "done"; order: Order };

export interface Purchase {
  phase: Phase;
  /** Open an order for `item`; asking again for the same item (after a network error) sends the same
   * idempotency key, so it never buys twice. */
  buy: (item: OrderItem) => Promise<void>;
  /** Test mode: pay with the test card, or have it declined. */
  payTest: (outcome: "succeed" | "decline") => Promise<void>;
  /** Stripe took the payment: follow the order to its end. */
  paid: () => void;
  /** Back to choosing (another tier, another amount): the next order is a new one. */
  again: () => void;
}

export function usePurchase(shop: Shop): Purchase {
  const [phase, setPhase] = useState<Phase>({ kind: "choose" });
  const key = useRef<{ item: string; key: string } | null>(null);
  const aborter = useRef(new AbortController());
  useEffect(() => () => aborter.current.abort(), []);

  const follow = async (order: Order): Promise<void> => {
    setPhase({ kind: "processing", order });
    try {
      const last = await followOrder(order.id, (seen) => setPhase(settled(seen) ? { kind: "done", order: seen } : { kind: "processing", order: seen }), aborter.current.signal);
      if (aborter.current.signal.aborted) return;
      if (last && settled(last)) land(last, "");
      else setPhase({ kind: "processing", order: last ?? order, slow: true });
    } catch {
      if (!aborter.current.signal.aborted) setPhase({ kind: "processing", order, slow: true });
    }
  };

  /** Where an order as the server answered it leaves this purchase. */
  const land = (order: Order, clientSecret: string): void => {
    if (settled(order)) {
      // Buying again is a new order, even of the same thing.
      key.current = null;
      setPhase({ kind: "done", order });
    } else if (order.state === "created" || order.state === "awaiting_payment") {
      setPhase({ kind: "pay", order, clientSecret, error: order.payment_error || undefined });
    } else void follow(order);
  };

  const buy = async (item: OrderItem): Promise<void> => {
    const wanted = JSON.stringify(item);
    if (!key.current || key.current.item !== wanted) key.current = { item: wanted, key: newIdempotencyKey() };
    setPhase({ kind: "creating" });
    try {
      const created = await createOrder(shop.code, key.current.key, item);
      land(created.order, created.client_secret ?? "");
    } catch (error) {
      setPhase({ kind: "choose", error: moneyError(error, "start the payment") });
    }
  };

  const payTest = async (outcome: "succeed" | "decline"): Promise<void> => {
    if (phase.kind !== "pay") return;
    const { order, clientSecret } = phase;
    setPhase({ kind: "confirming", order, clientSecret });
    try {
      const after = await confirmTestPayment(order.id, outcome);
      if (after.state === "awaiting_payment" && after.payment_error) {
        setPhase({ kind: "pay", order: after, clientSecret, error: after.payment_error });
      } else if (settled(after)) land(after, clientSecret);
      else void follow(after);
    } catch (error) {
      setPhase({ kind: "pay", order, clientSecret, error: moneyError(error, "pay") });
    }
  };

  const paid = (): void => {
    if (phase.kind === "pay" || phase.kind === "confirming") void follow(phase.order);
  };

  const again = (): void => {
    key.current = null;
    setPhase({ kind: "choose" });
  };

  return { phase, buy, payTest, paid, again };
}

/** "Test mode — no real money": shown wherever money is asked for while payments run in test mode. */
export function TestModeLabel({ mode }: { mode: PaymentsMode }) {
  if (mode !== "test") return null;
  return (
    <p class="test-mode" role="note">
      <strong>Test mode</strong> — no real money
    </p>
  );
}

/** Stripe's Payment Element for this order and the button that confirms it. */
function StripePay({ publishableKey, clientSecret, label, onPaid }: { publishableKey: string; clientSecret: string; label: string; onPaid: () => void }) {
  const box = useRef<HTMLDivElement>(null);
  const held = useRef<{ stripe: StripeClient; elements: StripeElements } | null>(null);
  const [ready, setReady] = useState(false);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);

  useEffect(() => {
    let live = true;
    let destroy: (() => void) | null = null;
    setReady(false);
    stripeClient(publishableKey).then(
      (stripe) => {
        if (!live || !box.current) return;
        const elements = stripe.elements({ clientSecret, appearance: stripeAppearance() });
        const element = elements.create("payment", { layout: "tabs" });
        element.on("ready", () => live && setReady(true));
        element.mount(box.current);
        destroy = () => element.destroy();
        held.current = { stripe, elements };
      },
      (failure: unknown) => live && setError(failure instanceof Error ? failure.message : "Could not reach Stripe."),
    );
    return () => {
      live = false;
      destroy?.();
      held.current = null;
    };
  }, [publishableKey, clientSecret]);

  const pay = async (): Promise<void> => {
    const stripe = held.current;
    if (!stripe) return;
    setBusy(true);
    setError(null);
    try {
      const submitted = await stripe.elements.submit();
      if (submitted.error) {
        setError(submitted.error.message ?? "Check your payment details.");
        return;
      }
      const result = await stripe.stripe.confirmPayment({
        elements: stripe.elements,
        redirect: "if_required",
        confirmParams: { return_url: window.location.href },
      });
      if (result.error) {
        setError(result.error.message ?? "Your payment was not accepted. Try another card.");
        return;
      }
      onPaid();
    } catch {
      setError("Could not reach Stripe. Check your connection and try again.");
    } finally {
      setBusy(false);
    }
  };

  return (
    <div class="stripe-pay">
      <div ref={box} class="stripe-element" aria-busy={!ready} />
      {!ready && !error && (
        <p class="hint" role="status">
          Loading the secure payment form…
        </p>
      )}
      {error && (
        <p class="field-error" role="alert">
          {error}
        </p>
      )}
      <button type="button" class="button primary" disabled={!ready || busy} onClick={() => void pay()}>
        {busy ? "Paying…" : label}
      </button>
    </div>
  );
}

/** What to say about an order once it is paid or settled. */
export interface OrderWords {
  /** While the payment goes through and the room applies it. */
  processing: string;
  /** Granted. */
  done: string;
}

// Why an order was refunded, when the server sent its reason without a sentence.
const REFUND_REASONS: Record<string, string> = {
  seats_full: "Seats ran out before your payment arrived.",
  already_seated: "You already had a seat in the Back Room.",
  seat_removed: "The host removed your seat.",
  room_closed: "The room closed before your payment arrived.",
  banned: "You can't take part in this room any more.",
};

function refundWords(order: Order): string {
  // The server's sentence says why, and usually that the money is coming back.
  const why = order.refund_message || REFUND_REASONS[order.refund_reason] || "It could not be applied.";
  if (/refund/i.test(why)) return why;
  return order.state === "refunding" ? `${why} Your refund is on its way.` : `${why} You were refunded in full.`;
}

/** The steps after choosing: paying, then the order's progress and outcome. `choose` renders the
 * choosing form (phase "choose" and "creating"). */
export function CheckoutSteps({
  shop,
  purchase,
  words,
  choose,
  onClose,
}: {
  shop: Shop;
  purchase: Purchase;
  words: OrderWords;
  choose: ComponentChildren;
  onClose: () => void;
}) {
  const { phase } = purchase;
  const status = useRef<HTMLDivElement>(null);
  useEffect(() => {
    if (phase.kind !== "choose" && phase.kind !== "creating") status.current?.focus({ preventScroll: true });
  }, [phase.kind]);

  if (phase.kind === "choose" || phase.kind === "creating") return <>{choose}</>;

  const order = phase.order;
  const amount = money(order.amount_cents, order.currency);
  let body: ComponentChildren;
  if (phase.kind === "pay" || phase.kind === "confirming") {
    const busy = phase.kind === "confirming";
    body = (
      <>
        <TestModeLabel mode={shop.mode} />
        <p class="checkout-total">
          To pay: <strong>{amount}</strong>
        </p>
        {phase.kind === "pay" && phase.error && (
          <p class="field-error" role="alert">
            {phase.error} You can try again.
          </p>
        )}
        {shop.mode === "test" || !shop.publishableKey ? (
          <div class="test-pay">
            <p class="hint">No card is needed in test mode: choose how the test payment goes.</p>
            <div class="modal-actions">
              <button type="button" class="button" disabled={busy} onClick={() => void purchase.payTest("decline")}>
                Decline (test card)
              </button>
              <button type="button" class="button primary" disabled={busy} onClick={() => void purchase.payTest("succeed")}>
                {busy ? "Paying…" : "Pay (test card)"}
              </button>
            </div>
          </div>
        ) : phase.clientSecret ? (
          <StripePay publishableKey={shop.publishableKey} clientSecret={phase.clientSecret} label={`Pay ${amount}`} onPaid={purchase.paid} />
        ) : (
          <div class="modal-actions">
            <button type="button" class="button primary" onClick={purchase.again}>
              Start again
            </button>
          </div>
        )}
      </>
    );
  } else if (phase.kind === "processing") {
    body = (
      <>
        <p class="order-state" data-state={order.state}>
          <span class="spinner" aria-hidden="true" />
          {order.state === "refunding" ? refundWords(order) : words.processing}
        </p>
        {phase.slow && <p class="hint">This is taking longer than usual. It goes on without you: your payments list shows how it ends.</p>}
        <div class="modal-actions">
          <button type="button" class="button" onClick={onClose}>
            Close
          </button>
        </div>
      </>
    );
  } else {
    const ok = order.state === "fulfilled";
    body = (
      <>
        <p class={`order-state ${ok ? "ok" : "bad"}`} data-state={order.state}>
          {order.state === "fulfilled" && words.done}
          {(order.state === "refunded" || order.state === "refunding") && refundWords(order)}
          {order.state === "failed" && `The payment failed. ${order.payment_error || ""}`.trim()}
          {order.state === "cancelled" && "The payment was cancelled."}
        </p>
        <div class="modal-actions">
          {!ok && (
            <button type="button" class="button" onClick={purchase.again}>
              Try again
            </button>
          )}
          <button type="button" class={ok ? "button primary" : "button"} onClick={onClose}>
            {ok ? "Done" : "Close"}
          </button>
        </div>
      </>
    );
  }
  return (
    <div class="checkout" ref={status} tabIndex={-1} aria-live="polite" data-phase={phase.kind} data-order-state={order.state}>
      {body}
    </div>
  );
}
