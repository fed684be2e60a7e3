/** `/payouts`: where a host sets up receiving money (Stripe Connect onboarding) and sees how far it
 * got; `/payouts/test-onboarding`: test mode's stand-in for Stripe's onboarding pages. Until a host's
 * account can take charges, their rooms sell nothing. */
import { useEffect, useState } from "preact/hooks";
import { AppHeader } from "../components/AppHeader";
import { TestModeLabel } from "../components/Checkout";
import { Link } from "../components/Link";
import { useAccount } from "../components/useAccount";
import {
  completeTestOnboarding,
  fetchPaymentsConfig,
  fetchPayoutAccount,
  moneyError,
  startOnboarding,
  type PaymentsConfig,
  type PayoutAccount,
} from "../payments";
import { navigate } from "../router";
import "../components/money.css";
import "./account.css";

export const TEST_ONBOARDING_PATH = "/payouts/test-onboarding";

function SignInFirst({ next }: { next: string }) {
  return (
    <div class="card notice">
      <p>Receiving money needs an account: payouts go to the person behind it. Log in or create one first.</p>
      <p class="notice-actions">
        <Link href={`/login?next=${encodeURIComponent(next)}`} class="button primary">
          Log in
        </Link>
        <Link href={`/signup?next=${encodeURIComponent(next)}`} class="link-button">
          Create an account
        </Link>
      </p>
    </div>
  );
}

function statusWords(account: PayoutAccount | null): string {
  if (!account || !account.stripe_account_id) return "You have not set up payouts yet.";
  if (account.can_receive && account.payouts_enabled) return "You're all set: your rooms take paid pins and tips, and payouts reach your bank.";
  if (account.can_receive) return "Your rooms take paid pins and tips. Stripe still needs a few details before it pays out to your bank.";
  if (account.details_submitted) return "Stripe is checking your details. Your rooms start selling once it accepts them.";
  return "You started setting up payouts but did not finish.";
}

function usePaymentsConfig(): PaymentsConfig | null {
  const [config, setConfig] = useState<PaymentsConfig | null>(null);
  useEffect(() => {
    fetchPaymentsConfig().then(setConfig, () => undefined);
  }, []);
  return config;
}

export function Payouts() {
  const signedIn = useAccount();
  const config = usePaymentsConfig();
  const [account, setAccount] = useState<PayoutAccount | null | undefined>(undefined);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  // Back from onboarding (Stripe's or the test page): ask Stripe for the account's state now.
  const returned = new URLSearchParams(window.location.search).has("returned");

  useEffect(() => {
    document.title = "Payouts · ChatPop";
    return () => {
      document.title = "ChatPop";
    };
  }, []);
  useEffect(() => {
    if (!signedIn) return;
    let live = true;
    setError(null);
    fetchPayoutAccount(returned).then(
      (found) => live && setAccount(found),
      (failure: unknown) => {
        if (!live) return;
        setAccount(null);
        setError(moneyError(failure, "load your payout account"));
      },
    );
    return () => {
      live = false;
    };
  }, [signedIn?.identity.id]);

  const onboard = async (): Promise<void> => {
    setBusy(true);
    setError(null);
    try {
      const started = await startOnboarding();
      if (started.account) setAccount(started.account);
      const target = new URL(started.onboarding_url, window.location.origin);
      // Test mode's onboarding is a page of this app (named by the site's public address, which may
      // differ from this page's); Stripe's is Stripe's.
      if (target.origin === window.location.origin || target.pathname === TEST_ONBOARDING_PATH) navigate(target.pathname + target.search);
      else window.location.assign(target.href);
    } catch (failure) {
      setError(moneyError(failure, "start setting up payouts"));
      setBusy(false);
    }
  };

  const started = Boolean(account?.stripe_account_id);
  const flags: Array<[string, boolean]> = account
    ? [
        ["Details submitted", account.details_submitted],
        ["Payments on", account.charges_enabled],
        ["Payouts on", account.payouts_enabled],
      ]
    : [];
  return (
    <div class="page">
      <AppHeader />
      <main class="narrow money-page" id="main">
        <h1>Payouts</h1>
        {config && <TestModeLabel mode={config.mode} />}
        <p class="hint">Paid pins and tips in the rooms you host go to you through Stripe, less ChatPop's fee.</p>
        {!signedIn ? (
          <SignInFirst next="/payouts" />
        ) : (
          <section class="card" aria-labelledby="payout-status" aria-busy={account === undefined}>
            <h2 id="payout-status">Status</h2>
            {account === undefined ? (
              <p role="status" class="hint">
                Loading…
              </p>
            ) : (
              <>
                <p class="payout-words" role="status" data-can-receive={account?.can_receive ? "true" : "false"}>
                  {statusWords(account)}
                </p>
                {flags.length > 0 && (
                  <ul class="payout-status" aria-label="Payout account">
                    {flags.map(([label, on]) => (
                      <li key={label} data-on={on ? "true" : "false"}>
                        {on ? "✓ " : ""}
                        {label}
                        <span class="sr-only">{on ? ": yes" : ": not yet"}</span>
                      </li>
                    ))}
                  </ul>
                )}
              </>
            )}
            {error && (
              <p class="form-error" role="alert">
                {error}
              </p>
            )}
            {account !== undefined && !(account?.can_receive && account.payouts_enabled) && (
              <button type="button" class="button primary" disabled={busy} onClick={() => void onboard()}>
                {busy ? "Opening…" : started ? "Continue setting up payouts" : "Set up payouts"}
              </button>
            )}
            {account?.can_receive && account.payouts_enabled && (
              <button type="button" class="button" disabled={busy} onClick={() => void onboard()}>
                {busy ? "Opening…" : "Update payout details"}
              </button>
            )}
          </section>
        )}
        <p class="money-links">
          <Link href="/earnings" class="button small">
            Earnings
          </Link>
          <Link href="/payments" class="button small">
            Your payments
          </Link>
        </p>
      </main>
    </div>
  );
}

/** Test mode's onboarding: no Stripe, no personal details; one click makes the account ready to sell,
 * as Stripe would after a real onboarding. */
export function TestOnboarding() {
  const signedIn = useAccount();
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);

  useEffect(() => {
    document.title = "Test onboarding · ChatPop";
    return () => {
      document.title = "ChatPop";
    };
  }, []);

  const complete = async (): Promise<void> => {
    setBusy(true);
    setError(null);
    try {
      await completeTestOnboarding();
      navigate("/payouts?returned=1", true);
    } catch (failure) {
      setError(moneyError(failure, "complete the test onboarding"));
      setBusy(false);
    }
  };

  return (
    <div class="page">
      <AppHeader />
      <main class="narrow money-page" id="main">
        <h1>Set up payouts (test)</h1>
        <TestModeLabel mode="test" />
        {!signedIn ? (
          <SignInFirst next={window.location.pathname + window.location.search} />
        ) : (
          <section class="card" aria-labelledby="test-onboarding-title">
            <h2 id="test-onboarding-title">Test onboarding</h2>
            <p>
              ChatPop runs without Stripe here, so this page stands in for Stripe's onboarding. Nothing is asked and no money moves: completing it lets your
              rooms take test payments.
            </p>
            {error && (
              <p class="form-error" role="alert">
                {error}
              </p>
            )}
            <p class="notice-actions">
              <button type="button" class="button primary" disabled={busy} onClick={() => void complete()}>
                {busy ? "Completing…" : "Complete test onboarding"}
              </button>
              <Link href="/payouts" class="link-button">
                Cancel
              </Link>
            </p>
          </section>
        )}
      </main>
    </div>
  );
}
