/** `/earnings`: what a host earned from paid pins and tips, overall and per room: gross paid in, the
 * platform's fee, the host's net, and what was refunded. Hosts sell only with an account. */
import { useEffect, useState } from "preact/hooks";
import { AppHeader } from "../components/AppHeader";
import { TestModeLabel } from "../components/Checkout";
import { Link } from "../components/Link";
import { useAccount } from "../components/useAccount";
import { fetchEarnings, fetchPaymentsConfig, money, moneyError, type Amounts, type Earnings as EarningsData, type PaymentsConfig } from "../payments";
import { fetchMyRooms } from "../rooms";
import "../components/money.css";
import "./account.css";

const NONE: Amounts = { gross_cents: 0, fee_cents: 0, net_cents: 0, refunded_cents: 0, count: 0 };

function Figures({ amounts, currency, label }: { amounts: Amounts; currency: string; label: string }) {
  const rows: Array<[string, number, string]> = [
    ["Gross", amounts.gross_cents, "gross"],
    ["ChatPop's fee", amounts.fee_cents, "fee"],
    ["Net to you", amounts.net_cents, "net"],
    ["Refunded", amounts.refunded_cents, "refunded"],
  ];
  return (
    <dl class="money-figures" aria-label={label}>
      {rows.map(([name, cents, key]) => (
        <div key={key} data-figure={key}>
          <dt>{name}</dt>
          <dd>{money(cents, currency)}</dd>
        </div>
      ))}
    </dl>
  );
}

function countWords(count: number, one: string, many: string): string {
  return `${count.toLocaleString()} ${count === 1 ? one : many}`;
}

/** Room ids to names, from the account's own rooms (hosts see their rooms there). */
function useRoomNames(signedIn: boolean): Map<string, { name: string; code: string }> {
  const [names, setNames] = useState(new Map<string, { name: string; code: string }>());
  useEffect(() => {
    if (!signedIn) return;
    let live = true;
    fetchMyRooms().then(
      (lists) => {
        if (!live) return;
        const found = new Map<string, { name: string; code: string }>();
        for (const entry of [...(lists.account ?? []), ...lists.device]) found.set(entry.room.id, { name: entry.room.name, code: entry.room.code });
        setNames(found);
      },
      () => undefined,
    );
    return () => {
      live = false;
    };
  }, [signedIn]);
  return names;
}

export function Earnings() {
  const signedIn = useAccount();
  const [data, setData] = useState<EarningsData | null>(null);
  const [config, setConfig] = useState<PaymentsConfig | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [round, setRound] = useState(0);
  const names = useRoomNames(signedIn !== null);

  useEffect(() => {
    document.title = "Earnings · ChatPop";
    fetchPaymentsConfig().then(setConfig, () => undefined);
    return () => {
      document.title = "ChatPop";
    };
  }, []);
  useEffect(() => {
    if (!signedIn) return;
    let live = true;
    setError(null);
    fetchEarnings().then(
      (earned) => live && setData(earned),
      (failure: unknown) => live && setError(moneyError(failure, "load your earnings")),
    );
    return () => {
      live = false;
    };
  }, [signedIn?.identity.id, round]);

  if (!signedIn) {
    return (
      <div class="page">
        <AppHeader />
        <main class="narrow" id="main">
          <h1>Earnings</h1>
          <div class="card notice">
            <p>Hosts with an account earn from paid pins and tips in their rooms. Log in to see yours.</p>
            <p class="notice-actions">
              <Link href="/login?next=%2Fearnings" class="button primary">
                Log in
              </Link>
            </p>
          </div>
        </main>
      </div>
    );
  }

  const currency = data?.currency || config?.currency || "usd";
  return (
    <div class="page">
      <AppHeader />
      <main class="narrow money-page" id="main">
        <h1>Earnings</h1>
        {config && <TestModeLabel mode={config.mode} />}
        <p class="hint">
          Paid pins and tips in the rooms you host. Refunds are already taken out.{" "}
          {config ? `ChatPop keeps ${config.platform_fee_percent}% of each payment.` : ""}
        </p>
        {error && (
          <div class="card" role="alert">
            <p class="form-error">{error}</p>
            <button type="button" class="button small" onClick={() => setRound((n) => n + 1)}>
              Try again
            </button>
          </div>
        )}
        {!data && !error && (
          <p role="status" class="hint">
            Loading…
          </p>
        )}
        {data && (
          <>
            <section class="card" aria-labelledby="earnings-total">
              <h2 id="earnings-total">Overall</h2>
              <Figures amounts={data.total ?? NONE} currency={currency} label="Overall" />
              <p class="hint earnings-split">
                Pins: {money((data.pins ?? NONE).net_cents, currency)} net from {countWords((data.pins ?? NONE).count, "payment", "payments")} · Tips:{" "}
                {money((data.tips ?? NONE).net_cents, currency)} net from {countWords((data.tips ?? NONE).count, "tip", "tips")}
                {data.seats && (
                  <>
                    {" "}
                    · Back Room seats: {money(data.seats.net_cents, currency)} net from {countWords(data.seats.count, "seat", "seats")}
                  </>
                )}
              </p>
            </section>
            <section class="card" aria-labelledby="earnings-pins">
              <h2 id="earnings-pins">Paid pins</h2>
              <Figures amounts={data.pins ?? NONE} currency={currency} label="Paid pins" />
            </section>
            <section class="card" aria-labelledby="earnings-tips">
              <h2 id="earnings-tips">Tips</h2>
              <Figures amounts={data.tips ?? NONE} currency={currency} label="Tips" />
            </section>
            {data.seats && (
              <section class="card" aria-labelledby="earnings-seats">
                <h2 id="earnings-seats">Back Room seats</h2>
                <Figures amounts={data.seats} currency={currency} label="Back Room seats" />
              </section>
            )}
            <section class="card" aria-labelledby="earnings-rooms">
              <h2 id="earnings-rooms">By room</h2>
              {!data.rooms.length ? (
                <p class="hint">No room has earned anything yet.</p>
              ) : (
                <div class="money-table-wrap">
                  <table class="money-table">
                    <thead>
                      <tr>
                        <th scope="col">Room</th>
                        <th scope="col">Pins</th>
                        <th scope="col">Tips</th>
                        {data.seats && <th scope="col">Seats</th>}
                        <th scope="col">Gross</th>
                        <th scope="col">Fee</th>
                        <th scope="col">Net</th>
                        <th scope="col">Refunded</th>
                      </tr>
                    </thead>
                    <tbody>
                      {data.rooms.map((room) => {
                        const known = names.get(room.room_id);
                        const name = room.room_name || known?.name || "A room";
                        const code = room.room_code || known?.code;
                        return (
                          <tr key={room.room_id} data-room-id={room.room_id}>
                            <th scope="row">{code ? <Link href={`/c/${code}`}>{name}</Link> : name}</th>
                            <td>{money((room.pins ?? NONE).gross_cents, currency)}</td>
                            <td>{money((room.tips ?? NONE).gross_cents, currency)}</td>
                            {data.seats && <td>{money((room.seats ?? NONE).gross_cents, currency)}</td>}
                            <td>{money((room.total ?? NONE).gross_cents, currency)}</td>
                            <td>{money((room.total ?? NONE).fee_cents, currency)}</td>
                            <td>{money((room.total ?? NONE).net_cents, currency)}</td>
                            <td>{money((room.total ?? NONE).refunded_cents, currency)}</td>
                          </tr>
                        );
                      })}
                    </tbody>
                  </table>
                </div>
              )}
            </section>
          </>
        )}
        <p class="money-links">
          <Link href="/payouts" class="button small">
            Payouts
          </Link>
          <Link href="/payments" class="button small">
            Your payments
          </Link>
        </p>
      </main>
    </div>
  );
}
