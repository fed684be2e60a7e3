/** `/admin`: ChatPop's moderators' page (admin accounts only): counts, the audit log, rooms taken
 * down, taking a room down, and site-wide bans (adding and lifting). Anyone else gets a polite
 * "admins only". */
import { useEffect, useState } from "preact/hooks";
import { agoWords, ApiError, request, type AuditPage, type SiteBan, type Stats, type TakenDownRoom } from "../api";
import { withAccess } from "../auth";
import { AppHeader } from "../components/AppHeader";
import { Link } from "../components/Link";
import { useAccount } from "../components/useAccount";
import { canonicalCode } from "../rooms";
import "../components/moderation.css";

function admin<T>(method: string, path: string, body?: unknown): Promise<T> {
  return withAccess((token) => request<T>(method, `/api/v1/admin${path}`, { token, body, retries: method === "GET" ? 2 : 0 }));
}

function errorText(error: unknown): string {
  return error instanceof ApiError ? error.message : "Something went wrong. Please try again.";
}

function AdminsOnly({ signedIn }: { signedIn: boolean }) {
  return (
    <main class="narrow" id="main">
      <h1>For admins only</h1>
      <p>This page is for ChatPop's moderators. {signedIn ? "Your account can't open it." : "Log in with an admin account to open it."}</p>
      <p>
        {signedIn ? (
          <Link href="/" class="button">
            Go to the home page
          </Link>
        ) : (
          <Link href="/login?next=%2Fadmin" class="button primary">
            Log in
          </Link>
        )}
      </p>
    </main>
  );
}

function StatsView({ stats }: { stats: Stats }) {
  const today = stats.messages_per_day[stats.messages_per_day.length - 1]?.messages ?? 0;
  const week = stats.messages_per_day.reduce((sum, d) => sum + d.messages, 0);
  const rows: Array<[string, number]> = [
    ["Rooms", stats.rooms.total],
    ["Open rooms", stats.rooms.open],
    ["Rooms created today", stats.rooms.created_today],
    ["Messages today", today],
    ["Messages in 7 days", week],
    ["Open reports", stats.open_reports],
    ["Audit events today", stats.audit_events_today],
    ["Sockets on this edge", stats.open_sockets],
  ];
  return (
    <dl class="stats">
      {rows.map(([label, value]) => (
        <div key={label}>
          <dt>{label}</dt>
          <dd>{value.toLocaleString()}</dd>
        </div>
      ))}
    </dl>
  );
}

const FILTERS = [
  ["kind", "Kind", "e.g. identity.login_failed"],
  ["actor", "Actor", "identity or participant id"],
  ["target", "Target", ""],
  ["room_id", "Room id", ""],
] as const;

function AuditLog() {
  const [filters, setFilters] = useState<Record<string, string>>({});
  const [applied, setApplied] = useState<Record<string, string>>({});
  const [pages, setPages] = useState<AuditPage[]>([]);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  const load = async (before: number | null, wanted: Record<string, string>): Promise<void> => {
    setBusy(true);
    setError(null);
    const params = new URLSearchParams({ limit: "50" });
    for (const [key, value] of Object.entries(wanted)) if (value.trim()) params.set(key, value.trim());
    if (before !== null) params.set("before", String(before));
    try {
      const page = await admin<AuditPage>("GET", `/audit?${params}`);
      setPages((held) => (before === null ? [page] : [...held, page]));
    } catch (failure) {
      setError(errorText(failure));
    } finally {
      setBusy(false);
    }
  };
  useEffect(() => void load(null, {}), []);
  const events = pages.flatMap((p) => p.events);
  const next = pages[pages.length - 1]?.next_before ?? null;
  return (
    <>
      <form
        class="admin-filters"
        onSubmit={(e) => {
          e.preventDefault();
          setApplied(filters);
          void load(null, filters);
        }}
      >
        {FILTERS.map(([key, label, hint]) => (
          <label key={key}>
            {label}
            <input type="text" name={key} placeholder={hint} value={filters[key] ?? ""} onInput={(e) => setFilters({ ...filters, [key]: e.currentTarget.value })} />
          </label>
        ))}
        <button type="submit" class="button small" disabled={busy}>
          Filter
        </button>
      </form>
      {error && (
        <p class="field-error" role="alert">
          {error}
        </p>
      )}
      <table class="admin-table" aria-label="Audit log">
        <thead>
          <tr>
            <th scope="col">When</th>
            <th scope="col">Kind</th>
            <th scope="col">Actor</th>
            <th scope="col">Target</th>
            <th scope="col">Details</th>
          </tr>
        </thead>
        <tbody>
          {events.map((event) => (
            <tr key={event.id} data-kind={event.kind}>
              <td title={event.at ?? ""}>{agoWords(event.at)}</td>
              <td>{event.kind}</td>
              <td>{event.actor ?? "—"}</td>
              <td>{event.target ?? "—"}</td>
              <td>{Object.keys(event.details).length ? JSON.stringify(event.details) : ""}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {!busy && !events.length && !error && <p class="mod-none">No events.</p>}
      {next !== null && (
        <button type="button" class="button small" disabled={busy} onClick={() => void load(next, applied)}>
          Older events
        </button>
      )}
    </>
  );
}

function Takedowns() {
  const [rooms, setRooms] = useState<TakenDownRoom[] | null>(null);
  const [code, setCode] = useState("");
  const [reason, setReason] = useState("");
  const [said, setSaid] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const refresh = (): void => {
    admin<{ rooms: TakenDownRoom[] }>("GET", "/rooms/taken-down").then(
      (list) => setRooms(list.rooms),
      (failure: unknown) => setSaid(errorText(failure)),
    );
  };
  useEffect(refresh, []);
  const act = async (task: () => Promise<unknown>, done: string): Promise<void> => {
    setBusy(true);
    try {
      await task();
      setSaid(done);
      refresh();
    } catch (failure) {
      setSaid(errorText(failure));
    } finally {
      setBusy(false);
    }
  };
  return (
    <>
      <form
        class="admin-filters"
        onSubmit={(e) => {
          e.preventDefault();
          const room = canonicalCode(code);
          if (!room || !reason.trim()) {
            setSaid("Give the room's code and a reason.");
            return;
          }
          void act(() => admin("POST", `/rooms/${encodeURIComponent(room)}/takedown`, { reason: reason.trim() }), `${room} was taken down.`).then(() => {
            setCode("");
            setReason("");
          });
        }}
      >
        <label>
          Room code
          <input type="text" name="code" autocomplete="off" value={code} onInput={(e) => setCode(e.currentTarget.value)} />
        </label>
        <label>
          Reason
          <input type="text" name="reason" maxLength={500} value={reason} onInput={(e) => setReason(e.currentTarget.value)} />
        </label>
        <button type="submit" class="button small danger" disabled={busy}>
          Take down
        </button>
      </form>
      {said && (
        <p role="status" class="mod-state">
          {said}
        </p>
      )}
      {rooms && !rooms.length && <p class="mod-none">No rooms are taken down.</p>}
      <ul class="mod-list">
        {(rooms ?? []).map((taken) => (
          <li key={taken.room.id} class="mod-item mod-row">
            <span>
              <strong>{taken.room.name}</strong> ({taken.room.code}) · {taken.reason} · {agoWords(taken.taken_down_at)}
            </span>
            <button
              type="button"
              class="button small"
              disabled={busy}
              aria-label={`Restore ${taken.room.name}`}
              onClick={() => void act(() => admin("POST", `/rooms/${encodeURIComponent(taken.room.code)}/restore`), `${taken.room.code} is back.`)}
            >
              Restore
            </button>
          </li>
        ))}
      </ul>
    </>
  );
}

type BanBy = "identity" | "ip" | "participant";

const BAN_BY: Array<[BanBy, string]> = [
  ["identity", "An identity"],
  ["ip", "A network"],
  ["participant", "A participant"],
];

/** The body of a new site-wide ban, or what is missing from the form. */
function banBody(by: BanBy, fields: Record<string, string>, reason: string): Record<string, string> | string {
  const value = (name: string): string => (fields[name] ?? "").trim();
  if (!reason.trim()) return "Give a reason for the ban.";
  if (by === "identity") {
    return value("identity_id") ? { identity_id: value("identity_id"), reason: reason.trim() } : "Give the identity id to ban.";
  }
  if (by === "ip") return value("ip") ? { ip: value("ip"), reason: reason.trim() } : "Give the IP address to ban.";
  const room = canonicalCode(value("room_code"));
  if (!room || !value("participant_id")) return "Give the room's code and the participant's id.";
  return { room_code: room, participant_id: value("participant_id"), reason: reason.trim() };
}

function SiteBans() {
  const [bans, setBans] = useState<SiteBan[] | null>(null);
  const [said, setSaid] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const [by, setBy] = useState<BanBy>("identity");
  const [fields, setFields] = useState<Record<string, string>>({});
  const [reason, setReason] = useState("");
  const refresh = (): void => {
    admin<{ bans: SiteBan[] }>("GET", "/site-bans").then(
      (list) => setBans(list.bans),
      (failure: unknown) => setSaid(errorText(failure)),
    );
  };
  useEffect(refresh, []);
  const lift = async (ban: SiteBan): Promise<void> => {
    setBusy(true);
    try {
      await admin("DELETE", `/site-bans/${encodeURIComponent(ban.id)}`);
      setSaid("Ban lifted.");
      refresh();
    } catch (failure) {
      setSaid(errorText(failure));
    } finally {
      setBusy(false);
    }
  };
  const ban = async (event: Event): Promise<void> => {
    event.preventDefault();
    const body = banBody(by, fields, reason);
    if (typeof body === "string") {
      setSaid(body);
      return;
    }
    setBusy(true);
    try {
      const made = await admin<SiteBan>("POST", "/site-bans", body);
      const who = made.identity_id ? `Identity ${made.identity_id}` : "That network";
      setSaid(made.changed ? `${who} is banned from ChatPop.` : `${who} was banned already.`);
      setFields({});
      setReason("");
      refresh();
    } catch (failure) {
      setSaid(errorText(failure));
    } finally {
      setBusy(false);
    }
  };
  const field = (name: string, label: string, hint = "") => (
    <label key={name}>
      {label}
      <input
        type="text"
        name={name}
        autocomplete="off"
        placeholder={hint}
        value={fields[name] ?? ""}
        onInput={(e) => setFields({ ...fields, [name]: e.currentTarget.value })}
      />
    </label>
  );
  return (
    <>
      <form class="admin-filters" aria-label="Ban from ChatPop" onSubmit={(e) => void ban(e)}>
        <label>
          Ban by
          <select name="ban_by" value={by} onChange={(e) => setBy(e.currentTarget.value as BanBy)}>
            {BAN_BY.map(([value, label]) => (
              <option key={value} value={value}>
                {label}
              </option>
            ))}
          </select>
        </label>
        {by === "identity" && field("identity_id", "Identity id", "a session or account id")}
        {by === "ip" && field("ip", "IP address", "e.g. 203.0.113.7")}
        {by === "participant" && [field("room_code", "Room code"), field("participant_id", "Participant id")]}
        <label>
          Reason
          <input type="text" name="ban_reason" maxLength={500} value={reason} onInput={(e) => setReason(e.currentTarget.value)} />
        </label>
        <button type="submit" class="button small danger" disabled={busy}>
          Ban from ChatPop
        </button>
      </form>
      {said && (
        <p role="status" class="mod-state">
          {said}
        </p>
      )}
      {bans && !bans.length && <p class="mod-none">No site-wide bans.</p>}
      <ul class="mod-list">
        {(bans ?? []).map((ban) => (
          <li key={ban.id} class="mod-item mod-row">
            <span>
              <strong>{ban.identity_id ? `Identity ${ban.identity_id}` : `Network ${ban.ip_hash?.slice(0, 12)}…`}</strong> · {ban.reason} ·{" "}
              {agoWords(ban.created_at)}
            </span>
            <button type="button" class="button small" disabled={busy} onClick={() => void lift(ban)} aria-label={`Lift the ban: ${ban.reason}`}>
              Lift
            </button>
          </li>
        ))}
      </ul>
    </>
  );
}

export function Admin() {
  const signedIn = useAccount();
  const [state, setState] = useState<{ kind: "loading" } | { kind: "denied" } | { kind: "failed"; text: string } | { kind: "ready"; stats: Stats }>({
    kind: "loading",
  });
  useEffect(() => {
    document.title = "Admin · ChatPop";
    if (!signedIn) {
      setState({ kind: "denied" });
      return;
    }
    setState({ kind: "loading" });
    admin<Stats>("GET", "/stats").then(
      (stats) => setState({ kind: "ready", stats }),
      (failure: unknown) => {
        if (failure instanceof ApiError && (failure.status === 403 || failure.status === 401)) setState({ kind: "denied" });
        else setState({ kind: "failed", text: errorText(failure) });
      },
    );
    return () => {
      document.title = "ChatPop";
    };
  }, [signedIn?.identity.id]);
  return (
    <div class="page">
      <AppHeader />
      {state.kind === "denied" && <AdminsOnly signedIn={signedIn !== null} />}
      {state.kind === "loading" && (
        <main class="narrow" id="main" aria-busy="true">
          <p role="status">Loading…</p>
        </main>
      )}
      {state.kind === "failed" && (
        <main class="narrow" id="main">
          <h1>Admin</h1>
          <p role="alert">{state.text}</p>
        </main>
      )}
      {state.kind === "ready" && (
        <main class="admin-page" id="main">
          <h1>Admin</h1>
          <section aria-labelledby="admin-stats">
            <h2 id="admin-stats">Today</h2>
            <StatsView stats={state.stats} />
          </section>
          <section aria-labelledby="admin-takedowns">
            <h2 id="admin-takedowns">Rooms taken down</h2>
            <Takedowns />
          </section>
          <section aria-labelledby="admin-bans">
            <h2 id="admin-bans">Site-wide bans</h2>
            <SiteBans />
          </section>
          <section aria-labelledby="admin-audit">
            <h2 id="admin-audit">Audit log</h2>
            <AuditLog />
          </section>
        </main>
      )}
    </div>
  );
}
