/** Stripe.js, loaded from Stripe only when ChatPop takes real payments (a publishable key is set).
 *
 * Stripe asks that Stripe.js always come from https://js.stripe.com, never bundled; the edge widens
 * its Content-Security-Policy for Stripe's script, frames and API only when a key is configured, so
 * in test mode nothing from another origin can load at all. Card details go straight from Stripe's
 * own frames (the Payment Element) to Stripe: ChatPop never sees them. */

const STRIPE_JS = "https://js.stripe.com/v3/";

export interface StripeError {
  type?: string;
  code?: string;
  message?: string;
}

interface StripeElement {
  mount(target: HTMLElement): void;
  destroy(): void;
  on(event: "ready" | "change", handler: (event: { complete?: boolean }) => void): void;
}

export interface StripeElements {
  create(type: "payment", options?: Record<string, unknown>): StripeElement;
  submit(): Promise<{ error?: StripeError }>;
}

export interface StripeClient {
  elements(options: { clientSecret: string; appearance?: Record<string, unknown> }): StripeElements;
  confirmPayment(options: {
    elements: StripeElements;
    redirect: "if_required";
    confirmParams?: { return_url?: string };
  }): Promise<{ error?: StripeError; paymentIntent?: { id: string; status: string } }>;
}

type StripeFactory = (publishableKey: string) => StripeClient;

declare global {
  interface Window {
    Stripe?: StripeFactory;
  }
}

let loading: Promise<StripeFactory> | null = null;
const clients = new Map<string, StripeClient>();

function loadScript(): Promise<StripeFactory> {
  if (window.Stripe) return Promise.resolve(window.Stripe);
  if (loading) return loading;
  loading = new Promise<StripeFactory>((resolve, reject) => {
    const script = document.createElement("script");
    script.src = STRIPE_JS;
    script.async = true;
    script.addEventListener("load", () => (window.Stripe ? resolve(window.Stripe) : reject(new Error("Stripe.js did not start."))));
    script.addEventListener("error", () => reject(new Error("Could not reach Stripe. Check your connection and try again.")));
    document.head.appendChild(script);
  });
  // A failed load may be tried again later (the network came back).
  loading.catch(() => {
    loading = null;
  });
  return loading;
}

/** The Stripe client for this publishable key, loading Stripe.js on first use. */
export async function stripeClient(publishableKey: string): Promise<StripeClient> {
  const held = clients.get(publishableKey);
  if (held) return held;
  const factory = await loadScript();
  const client = factory(publishableKey);
  clients.set(publishableKey, client);
  return client;
}

/** Stripe's look for its frames, following the page's light or dark type and accent colour. */
export function stripeAppearance(): Record<string, unknown> {
  const root = document.documentElement;
  const dark = root.dataset.scheme === "dark";
  const accent = getComputedStyle(root).getPropertyValue("--accent").trim();
  return {
    theme: dark ? "night" : "stripe",
    variables: accent ? { colorPrimary: accent, borderRadius: "10px" } : { borderRadius: "10px" },
  };
}
