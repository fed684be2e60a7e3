/** Tipping the host: preset amounts or one's own (within the room's bounds) and an optional short
 * note, then the checkout. The tip shows in the room for everyone once it is paid. */
import { useState } from "preact/hooks";
import { money } from "../payments";
import { CheckoutSteps, TestModeLabel, usePurchase, type Shop } from "./Checkout";
import { Modal } from "./Modal";
import "./room-settings.css";

export const TIP_NOTE_CHARS = 200;

/** Cents from what a person typed ("5", "5.5", "5,50", "$5.00"), or null when it is not an amount. */
export function centsFrom(typed: string): number | null {
  const cleaned = typed.trim().replace(/^[^\d]+/, "").replace(/\s/g, "");
  const match = /^(\d{1,7})(?:[.,](\d{1,2}))?$/.exec(cleaned);
  if (!match) return null;
  return Number(match[1]) * 100 + Number((match[2] ?? "0").padEnd(2, "0"));
}

export function TipDialog({
  shop,
  hostName,
  currency,
  presets,
  minCents,
  maxCents,
  onDismiss,
}: {
  shop: Shop;
  hostName: string | null;
  currency: string;
  presets: number[];
  minCents: number;
  maxCents: number;
  onDismiss: () => void;
}) {
  const purchase = usePurchase(shop);
  const shown = presets.filter((p) => p >= minCents && p <= maxCents);
  const [preset, setPreset] = useState<number | "other">(shown[Math.min(1, shown.length - 1)] ?? "other");
  const [typed, setTyped] = useState("");
  const [note, setNote] = useState("");
  const [problem, setProblem] = useState<string | null>(null);
  const busy = purchase.phase.kind === "creating";
  const noteLength = [...note.trim()].length;

  const amount = (): number | string => {
    if (preset !== "other") return preset;
    const cents = centsFrom(typed);
    if (cents === null) return "Type an amount, like 5 or 2.50.";
    if (cents < minCents || cents > maxCents) return `A tip is from ${money(minCents, currency)} to ${money(maxCents, currency)}.`;
    return cents;
  };

  const submit = (event: Event): void => {
    event.preventDefault();
    const cents = amount();
    if (typeof cents === "string") {
      setProblem(cents);
      return;
    }
    if (noteLength > TIP_NOTE_CHARS) {
      setProblem(`A note can have at most ${TIP_NOTE_CHARS} characters.`);
      return;
    }
    setProblem(null);
    void purchase.buy({ tip: { amount_cents: cents, note: note.trim() } });
  };

  const current = amount();
  const choose = (
    <form class="form tip-form" onSubmit={submit} noValidate>
      <TestModeLabel mode={shop.mode} />
      <p class="hint" id="tip-description">
        The tip goes to {hostName ? hostName : "the host"}, and everyone in the room sees it.
      </p>
      <fieldset class="tiers" aria-describedby="tip-description">
        <legend>Amount</legend>
        <div class="tier-grid tip-grid">
          {shown.map((cents) => (
            <label key={cents} class="tier">
              <input type="radio" name="tip-amount" value={cents} checked={preset === cents} disabled={busy} onChange={() => setPreset(cents)} />
              <span class="tier-price">{money(cents, currency)}</span>
            </label>
          ))}
          <label class="tier">
            <input type="radio" name="tip-amount" value="other" checked={preset === "other"} disabled={busy} onChange={() => setPreset("other")} />
            <span class="tier-price">Other</span>
          </label>
        </div>
      </fieldset>
      {preset === "other" && (
        <div class="field">
          <label for="tip-custom">Your amount ({currency.toUpperCase()})</label>
          <input
            id="tip-custom"
            type="text"
            inputMode="decimal"
            autocomplete="off"
            placeholder={`${(minCents / 100).toFixed(2)} to ${(maxCents / 100).toFixed(2)}`}
            value={typed}
            aria-invalid={problem !== null && typeof current === "string"}
            aria-describedby="tip-bounds"
            onInput={(e) => {
              setTyped(e.currentTarget.value);
              setProblem(null);
            }}
          />
          <p class="hint" id="tip-bounds">
            From {money(minCents, currency)} to {money(maxCents, currency)}.
          </p>
        </div>
      )}
      <div class="field">
        <label for="tip-note">
          Note <span class="optional">(optional)</span>
        </label>
        <textarea
          id="tip-note"
          rows={2}
          maxLength={TIP_NOTE_CHARS + 50}
          value={note}
          aria-describedby="tip-note-count"
          onInput={(e) => {
            setNote(e.currentTarget.value);
            setProblem(null);
          }}
        />
        <p id="tip-note-count" class={`hint ${noteLength > TIP_NOTE_CHARS ? "over" : ""}`}>
          {noteLength > TIP_NOTE_CHARS ? `${noteLength - TIP_NOTE_CHARS} characters too long` : `${TIP_NOTE_CHARS - noteLength} characters left`}
        </p>
      </div>
      {(problem ?? (purchase.phase.kind === "choose" ? purchase.phase.error : null)) && (
        <p class="field-error" role="alert">
          {problem ?? (purchase.phase.kind === "choose" ? purchase.phase.error : "")}
        </p>
      )}
      <div class="modal-actions">
        <button type="button" class="button" onClick={onDismiss} disabled={busy}>
          Cancel
        </button>
        <button type="submit" class="button primary" disabled={busy}>
          {busy ? "Starting…" : typeof current === "number" ? `Tip ${money(current, currency)}` : "Tip"}
        </button>
      </div>
    </form>
  );
  return (
    <Modal title="Tip the host" titleId="tip-title" onDismiss={purchase.phase.kind === "confirming" ? undefined : onDismiss} class="money-modal">
      <CheckoutSteps
        shop={shop}
        purchase={purchase}
        words={{ processing: "Payment received. Sending your tip…", done: "Thank you! Your tip is in the room." }}
        choose={choose}
        onClose={onDismiss}
      />
    </Modal>
  );
}
