/** Paying to pin a message, or to extend one's own top pin: a tier picker (each tier's price and the
 * time it buys, what it takes to outbid now, tiers below that disabled), then the checkout. */
import { useMemo, useState } from "preact/hooks";
import type { Message } from "../api";
import { countdown, minutesWords, money, type PinTier } from "../payments";
import { CheckoutSteps, TestModeLabel, usePurchase, type Shop } from "./Checkout";
import { mediaWords } from "../media";
import { Modal } from "./Modal";
import type { ShownPaidPin } from "./PaidPins";
import "./room-settings.css";
import "./reactions.css";

/** A newly won pin stands this long at least (or its tier's time, when longer). */
const TOP_MINUTES = 60;

/** The lowest tier that outbids a top pin with `topCents` paid (the lowest tier when none is live), or
 * null when no tier is above it. The server decides for real; this only greys out what cannot win. */
export function minimumTier(tiers: PinTier[], topCents: number | null): number | null {
  if (!tiers.length) return null;
  if (topCents === null) return tiers[0]!.amount_cents;
  return tiers.find((t) => t.amount_cents > topCents)?.amount_cents ?? null;
}

export type PinTarget = { kind: "pin"; message: Message } | { kind: "extension"; pin: ShownPaidPin };

function snippet(text: string, length = 140): string {
  const flat = text.replace(/\s+/g, " ").trim();
  return flat.length > length ? `${flat.slice(0, length - 1)}…` : flat;
}

export function PinDialog({
  shop,
  currency,
  tiers,
  top,
  serverMinimum,
  target,
  now,
  onDismiss,
}: {
  shop: Shop;
  currency: string;
  tiers: PinTier[];
  /** The top paid pin now, if any. */
  top: ShownPaidPin | null;
  /** What the server last said it takes to outbid (0 or null: nothing does). */
  serverMinimum: number | null;
  target: PinTarget;
  now: number;
  onDismiss: () => void;
}) {
  const purchase = usePurchase(shop);
  const extending = target.kind === "extension";
  // The bar from the pins live on screen now (frames keep it current), never below what the server said.
  const minimum = useMemo(() => {
    if (extending) return tiers[0]?.amount_cents ?? null;
    const local = minimumTier(tiers, top ? top.amount_cents : null);
    if (local === null) return null;
    return serverMinimum ? Math.max(local, serverMinimum) : local;
  }, [extending, tiers, top?.amount_cents, serverMinimum]);
  const [chosen, setChosen] = useState<number | null>(minimum);
  const choice = chosen !== null && minimum !== null && chosen >= minimum ? chosen : minimum;
  const busy = purchase.phase.kind === "creating";
  const tierMinutes = (tier: PinTier): number => (extending ? tier.minutes : Math.max(TOP_MINUTES, tier.minutes));

  const submit = (event: Event): void => {
    event.preventDefault();
    if (choice === null) return;
    if (target.kind === "pin") void purchase.buy({ pin: { target_seq: target.message.seq, tier_cents: choice } });
    else void purchase.buy({ extension: { pin_id: target.pin.id, tier_cents: choice } });
  };

  const title = extending ? "Extend your pin" : "Pin this message";
  const words = extending
    ? { processing: "Payment received. Extending your pin…", done: "Your pin was extended." }
    : { processing: "Payment received. Pinning the message…", done: "The message is pinned for everyone." };
  const quoted = target.kind === "pin" ? target.message : null;
  const choose = (
    <form class="form pin-form" onSubmit={submit}>
      <TestModeLabel mode={shop.mode} />
      {quoted && (
        <blockquote class="delete-preview">
          <strong>{quoted.sender.username}:</strong> {snippet(quoted.text || mediaWords(quoted.media))}
        </blockquote>
      )}
      {target.kind === "extension" && target.pin.expiresAt !== null && (
        <p id="pin-outbid" class="outbid">
          Your pin is on top with {money(target.pin.amount_cents, currency)}, for another {countdown(target.pin.expiresAt, now)}. Each tier adds its time and
          raises what it takes to outbid you.
        </p>
      )}
      {!extending && (
        <p id="pin-outbid" class="outbid">
          {minimum === null
            ? "The top pin can't be outbid any more: try again when it runs out."
            : top
              ? `To outbid the top pin (${money(top.amount_cents, currency)} by ${top.username}) takes at least ${money(minimum, currency)}.`
              : `No message has a paid pin now: from ${money(minimum, currency)}.`}
        </p>
      )}
      <fieldset class="tiers" aria-describedby="pin-outbid">
        <legend>{extending ? "Add" : "Pay"}</legend>
        <div class="tier-grid">
          {tiers.map((tier) => {
            const disabled = minimum === null || tier.amount_cents < minimum;
            return (
              <label key={tier.amount_cents} class={`tier ${disabled ? "disabled" : ""}`} title={disabled ? "Doesn't outbid the top pin" : undefined}>
                <input
                  type="radio"
                  name="pin-tier"
                  value={tier.amount_cents}
                  checked={choice === tier.amount_cents}
                  disabled={disabled || busy}
                  onChange={() => setChosen(tier.amount_cents)}
                />
                <span class="tier-price">{money(tier.amount_cents, currency)}</span>
                <span class="tier-time">{extending ? `+${minutesWords(tierMinutes(tier))}` : minutesWords(tierMinutes(tier))}</span>
              </label>
            );
          })}
        </div>
      </fieldset>
      {!extending && <p class="hint">A pin stays on top until its time runs out or someone pays more. A higher amount is harder to outbid.</p>}
      {purchase.phase.kind === "choose" && purchase.phase.error && (
        <p class="field-error" role="alert">
          {purchase.phase.error}
        </p>
      )}
      <div class="modal-actions">
        <button type="button" class="button" onClick={onDismiss} disabled={busy}>
          Cancel
        </button>
        <button type="submit" class="button primary" disabled={busy || choice === null}>
          {busy ? "Starting…" : choice === null ? title : `${extending ? "Extend" : "Pin"} for ${money(choice, currency)}`}
        </button>
      </div>
    </form>
  );
  return (
    <Modal title={title} titleId="pin-title" onDismiss={purchase.phase.kind === "confirming" ? undefined : onDismiss} class="money-modal">
      <CheckoutSteps shop={shop} purchase={purchase} words={words} choose={choose} onClose={onDismiss} />
    </Modal>
  );
}
