/** `/payments`: this person's own payments (paid pins, extensions, tips), newest first, each with
 * where it stands: done, refunded and why, or the payment error. */
import { useEffect, useState } from "preact/hooks";
import { agoWords } from "../api";
import { account, existingDeviceSession } from "../auth";
import { AppHeader } from "../components/AppHeader";
import { Link } from "../components/Link";
import { useAccount } from "../components/useAccount";
import { KIND_WORDS, listOrders, money, moneyError, stateWords, type Order } from "../payments";
import { fetchMyRooms } from "../rooms";
import "../components/money.css";
import "./account.css";

/** What else there is to say about an order: the tip's note, why it was refunded, the card's error. */
function detail(order: Order): string {
  const parts: string[] = [];
  if (order.kind === "tip" && order.note) parts.push(`“${order.note}”`);
  if (order.state === "refunded" || order.state === "refunding") parts.push(order.refund_message || "Refunded in full.");
  else if (order.payment_error && order.state !== "fulfilled") parts.push(order.payment_error);
  if (order.test_mode) parts.push("Test mode — no real money");
  return parts.join(" · ");
}

export function Payments() {
  const signedIn = useAccount();
  const [orders, setOrders] = useState<Order[] | null>(null);
  const [hasMore, setHasMore] = useState(false);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [rooms, setRooms] = useState(new Map<string, { name: string; code: string }>());

  const load = async (before: string | null): Promise<void> => {
    setBusy(true);
    setError(null);
    try {
      // Without an account or an anonymous session on this device, nothing was ever bought here.
      if (!account() && !(await existingDeviceSession())) {
        setOrders([]);
        setHasMore(false);
        return;
      }
      const page = await listOrders(before);
      setOrders((held) => (before === null ? page.orders : [...(held ?? []), ...page.orders]));
      setHasMore(page.has_more);
    } catch (failure) {
      setError(moneyError(failure, "load your payments"));
    } finally {
      setBusy(false);
    }
  };

  useEffect(() => {
    document.title = "Your payments · ChatPop";
    return () => {
      document.title = "ChatPop";
    };
  }, []);
  useEffect(() => {
    void load(null);
    fetchMyRooms().then(
      (lists) => {
        const found = new Map<string, { name: string; code: string }>();
        for (const entry of [...(lists.account ?? []), ...lists.device]) found.set(entry.room.id, { name: entry.room.name, code: entry.room.code });
        setRooms(found);
      },
      () => undefined,
    );
  }, [signedIn?.identity.id]);

  const last = orders?.[orders.length - 1];
  return (
    <div class="page">
      <AppHeader />
      <main class="narrow money-page" id="main">
        <h1>Your payments</h1>
        <p class="hint">Paid pins and tips you bought{signedIn ? " with this account" : " on this device"}.</p>
        {error && (
          <p class="form-error" role="alert">
            {error}
          </p>
        )}
        {orders === null && !error && (
          <p role="status" class="hint">
            Loading…
          </p>
        )}
        {orders && !orders.length && <p>No payments yet.</p>}
        {orders && orders.length > 0 && (
          <ul class="order-list" aria-label="Payments">
            {orders.map((order) => {
              const room = rooms.get(order.room_id);
              const what = KIND_WORDS[order.kind] ?? "Payment";
              return (
                <li key={order.id} class="order-row" data-order-id={order.id} data-state={order.state}>
                  <span>
                    <strong>{what}</strong> <span class="hint">{agoWords(order.created_at)}</span>
                  </span>
                  <span class="order-amount">{money(order.amount_cents, order.currency)}</span>
                  <span class="order-detail">
                    {room && <Link href={`/c/${room.code}`}>{room.name}</Link>}
                    {room && detail(order) ? " · " : ""}
                    {detail(order)}
                  </span>
                  <span class="order-badge" data-state={order.state}>
                    {stateWords(order)}
                  </span>
                </li>
              );
            })}
          </ul>
        )}
        {hasMore && last && (
          <button type="button" class="button" disabled={busy} onClick={() => void load(last.id)}>
            {busy ? "Loading…" : "Older payments"}
          </button>
        )}
      </main>
    </div>
  );
}
