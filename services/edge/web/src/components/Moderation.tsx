/** The host's and everyone's safety tools: banning someone, reporting a message, the host's panel
 * (sticky message, reports queue, bans) and the list of people this person muted. */
import { useEffect, useLayoutEffect, useRef, useState } from "preact/hooks";
import { agoWords, type Ban, type BanTier, type Message, type Mute, type ReportedMessage, type ReportReason } from "../api";
import { forgetDeletedAccount } from "../auth";
import type { ChatSession, Ending } from "../chat";
import { messageFrom } from "../messageState";
import { actionError, boardOf, mute, resolve, sticky } from "../moderation";
import { listBans, listMutes, listReports, unbanParticipant } from "../rooms";
import { navigate } from "../router";
import { mediaWords } from "../media";
import { Modal } from "./Modal";
import "./room-settings.css";
import "./moderation.css";

const TIERS: Array<{ value: BanTier; label: string; hint: string }> = [
  { value: "session", label: "This session", hint: "They can't come back under any name from this session or account." },
  { value: "device", label: "This device and network", hint: "Also refuses new anonymous sessions from their network." },
  { value: "ip", label: "This network", hint: "Refuses anyone from their network, signed in or not." },
];

export const REASONS: Array<{ value: ReportReason; label: string }> = [
  { value: "spam", label: "Spam" },
  { value: "harassment", label: "Harassment" },
  { value: "hate", label: "Hate" },
  { value: "sexual", label: "Sexual content" },
  { value: "violence", label: "Violence" },
  { value: "other", label: "Something else" },
];

function reasonLabel(reason: string): string {
  return REASONS.find((r) => r.value === reason)?.label ?? reason;
}

export function BanDialog({
  username,
  onConfirm,
  onDismiss,
}: {
  username: string;
  onConfirm: (tier: BanTier, reason: string) => Promise<void>;
  onDismiss: () => void;
}) {
  const [tier, setTier] = useState<BanTier>("session");
  const [reason, setReason] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const submit = async (event: Event): Promise<void> => {
    event.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await onConfirm(tier, reason.trim());
      onDismiss();
    } catch (failure) {
      setError(actionError(failure, "ban"));
      setBusy(false);
    }
  };
  return (
    <Modal title={`Ban ${username}?`} titleId="ban-title" describedBy="ban-description" onDismiss={busy ? undefined : onDismiss}>
      <form class="form" onSubmit={(e) => void submit(e)}>
        <p id="ban-description">They leave the room at once and can't join it again. Their messages stay.</p>
        <fieldset class="choices">
          <legend>Ban</legend>
          {TIERS.map((t) => (
            <label key={t.value} class="choice">
              <input type="radio" name="ban-tier" value={t.value} checked={tier === t.value} onChange={() => setTier(t.value)} />
              <span>
                <strong>{t.label}</strong>
                <span class="choice-hint">{t.hint}</span>
              </span>
            </label>
          ))}
        </fieldset>
        <label for="ban-reason">Reason (only you see it)</label>
        <textarea id="ban-reason" rows={2} maxLength={500} value={reason} onInput={(e) => setReason(e.currentTarget.value)} />
        {error && (
          <p class="field-error" role="alert">
            {error}
          </p>
        )}
        <div class="modal-actions">
          <button type="button" class="button" onClick={onDismiss} disabled={busy}>
            Cancel
          </button>
          <button type="submit" class="button danger" disabled={busy}>
            {busy ? "Banning…" : `Ban ${username}`}
          </button>
        </div>
      </form>
    </Modal>
  );
}

export function ReportDialog({
  message,
  onConfirm,
  onDismiss,
}: {
  message: Message;
  onConfirm: (reason: ReportReason, text: string) => Promise<void>;
  onDismiss: () => void;
}) {
  const [reason, setReason] = useState<ReportReason | null>(null);
  const [text, setText] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const submit = async (event: Event): Promise<void> => {
    event.preventDefault();
    if (!reason) {
      setError("Choose what is wrong with the message.");
      return;
    }
    setBusy(true);
    setError(null);
    try {
      await onConfirm(reason, text.trim());
      onDismiss();
    } catch (failure) {
      setError(actionError(failure, "report that message"));
      setBusy(false);
    }
  };
  return (
    <Modal title={`Report ${message.sender.username}'s message`} titleId="report-title" describedBy="report-description" onDismiss={busy ? undefined : onDismiss}>
      <form class="form" onSubmit={(e) => void submit(e)}>
        <p id="report-description">The host reviews reports. Enough of them hide the message until then.</p>
        <blockquote class="delete-preview">{message.text || mediaWords(message.media)}</blockquote>
        <fieldset class="choices" aria-describedby={error ? "report-error" : undefined}>
          <legend>What's wrong with it?</legend>
          {REASONS.map((r) => (
            <label key={r.value} class="choice">
              <input type="radio" name="report-reason" value={r.value} checked={reason === r.value} onChange={() => setReason(r.value)} />
              <span>{r.label}</span>
            </label>
          ))}
        </fieldset>
        <label for="report-text">Anything to add? (optional)</label>
        <textarea id="report-text" rows={2} maxLength={500} value={text} onInput={(e) => setText(e.currentTarget.value)} />
        {error && (
          <p class="field-error" id="report-error" role="alert">
            {error}
          </p>
        )}
        <div class="modal-actions">
          <button type="button" class="button" onClick={onDismiss} disabled={busy}>
            Cancel
          </button>
          <button type="submit" class="button danger" disabled={busy}>
            {busy ? "Reporting…" : "Report"}
          </button>
        </div>
      </form>
    </Modal>
  );
}

/** A list read over REST when shown, with a retry on failure. */
function useLoaded<T>(load: () => Promise<T>): { value: T | null; error: string | null; reload: () => void } {
  const [value, setValue] = useState<T | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [round, setRound] = useState(0);
  useEffect(() => {
    let live = true;
    setError(null);
    load().then(
      (v) => live && setValue(v),
      (e: unknown) => live && setError(actionError(e, "load this list")),
    );
    return () => {
      live = false;
    };
  }, [round]);
  return { value, error, reload: () => setRound((n) => n + 1) };
}

function ListState({ error, loading, onRetry }: { error: string | null; loading: boolean; onRetry: () => void }) {
  if (error) {
    return (
      <div role="alert" class="mod-state">
        <p>{error}</p>
        <button type="button" class="button small" onClick={onRetry}>
          Try again
        </button>
      </div>
    );
  }
  return loading ? (
    <p role="status" class="mod-state">
      Loading…
    </p>
  ) : null;
}

function StickyForm({ chat, onSaid }: { chat: ChatSession; onSaid: (text: string) => void }) {
  const board = boardOf(chat);
  const [text, setText] = useState(board.sticky);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const save = async (value: string): Promise<void> => {
    setBusy(true);
    setError(null);
    try {
      await sticky(chat, value);
      setText(value.trim());
      onSaid(value.trim() ? "Sticky message set." : "Sticky message cleared.");
    } catch (failure) {
      setError(actionError(failure, "set the sticky message"));
    } finally {
      setBusy(false);
    }
  };
  return (
    <form
      class="form"
      onSubmit={(e) => {
        e.preventDefault();
        void save(text);
      }}
    >
      <label for="sticky-text">Shown to everyone above the chat</label>
      <textarea id="sticky-text" rows={2} maxLength={4000} value={text} onInput={(e) => setText(e.currentTarget.value)} />
      {error && (
        <p class="field-error" role="alert">
          {error}
        </p>
      )}
      <div class="modal-actions">
        {board.sticky && (
          <button type="button" class="button" disabled={busy} onClick={() => void save("")}>
            Clear
          </button>
        )}
        <button type="submit" class="button primary" disabled={busy || !text.trim()}>
          {busy ? "Saving…" : "Set sticky message"}
        </button>
      </div>
    </form>
  );
}

interface QueueItem {
  message: Message;
  reports: ReportedMessage["reports"];
}

/** Reported messages loaded so far, and where the next older page starts (null: none left). */
interface ReportPages {
  items: QueueItem[];
  before: number | null;
}

function pagesAfter(held: ReportPages, page: { items: ReportedMessage[]; has_more: boolean }): ReportPages {
  const seen = new Set(held.items.map((item) => item.message.seq));
  const fresh = page.items
    .map((item) => ({ message: messageFrom(item.message), reports: item.reports }))
    .filter((item): item is QueueItem => item.message !== null);
  const last = fresh[fresh.length - 1];
  return {
    items: [...held.items, ...fresh.filter((item) => !seen.has(item.message.seq))],
    // A page that reaches no lower ends the queue, whatever it says: no endless asking.
    before: page.has_more && last && (held.before === null || last.message.seq < held.before) ? last.message.seq : null,
  };
}

/** The reports queue, newest reported message first: the newest 50, then older pages on request
 * (`before_seq` = the last seq of the page before). A resolved message leaves the list at once and
 * the older pages loaded stay. */
function ReportsQueue({ chat, onSaid }: { chat: ChatSession; onSaid: (text: string) => void }) {
  const [queue, setQueue] = useState<ReportPages | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [olderError, setOlderError] = useState<string | null>(null);
  const [loadingOlder, setLoadingOlder] = useState(false);
  const [round, setRound] = useState(0);
  useEffect(() => {
    let live = true;
    setError(null);
    listReports(chat.code).then(
      (page) => live && setQueue(pagesAfter({ items: [], before: null }, page)),
      (e: unknown) => live && setError(actionError(e, "load this list")),
    );
    return () => {
      live = false;
    };
  }, [round]);
  const loadOlder = async (): Promise<void> => {
    if (queue?.before == null) return;
    setLoadingOlder(true);
    setOlderError(null);
    try {
      const page = await listReports(chat.code, queue.before);
      setQueue((held) => held && pagesAfter(held, page));
    } catch (failure) {
      setOlderError(actionError(failure, "load older reports"));
    } finally {
      setLoadingOlder(false);
    }
  };
  const [busy, setBusy] = useState<number | null>(null);
  const act = async (seq: number, action: "restore" | "delete" | "dismiss"): Promise<void> => {
    setBusy(seq);
    try {
      await resolve(chat, seq, action);
      onSaid(action === "restore" ? "Message restored." : action === "delete" ? "Message deleted." : "Reports dismissed.");
      // Its reports are closed: it leaves the queue (reading the first page again would drop older ones).
      setQueue((held) => held && { ...held, items: held.items.filter((item) => item.message.seq !== seq) });
    } catch (failure) {
      onSaid(actionError(failure, "resolve those reports"));
    } finally {
      setBusy(null);
    }
  };
  const items = queue?.items ?? [];
  return (
    <>
      <ListState error={error} loading={queue === null} onRetry={() => setRound((n) => n + 1)} />
      {queue && !items.length && queue.before === null && <p class="mod-none">No reports waiting.</p>}
      <ul class="mod-list">
        {items.map(({ message, reports }) => (
          <li key={message.seq} class="mod-item" data-seq={message.seq}>
            <p class="mod-item-head">
              <strong>{message.sender.username}</strong>
              {message.hidden && <span class="badge hidden-badge">Hidden</span>}
              {message.deleted && <span class="badge">Deleted</span>}
            </p>
            <blockquote class="delete-preview">{message.deleted ? "Message deleted" : message.text || mediaWords(message.media)}</blockquote>
            <ul class="mod-reasons" aria-label="Reports">
              {reports.map((r, i) => (
                <li key={i}>
                  {reasonLabel(r.reason)} · {r.reporter.username}
                  {r.text && <span class="mod-report-text">: {r.text}</span>}
                </li>
              ))}
            </ul>
            <div class="mod-actions">
              {message.hidden && (
                <button type="button" class="button small" disabled={busy !== null} onClick={() => void act(message.seq, "restore")}>
                  Restore
                </button>
              )}
              {!message.deleted && (
                <button type="button" class="button small danger" disabled={busy !== null} onClick={() => void act(message.seq, "delete")}>
                  Delete
                </button>
              )}
              <button type="button" class="button small" disabled={busy !== null} onClick={() => void act(message.seq, "dismiss")}>
                Dismiss
              </button>
            </div>
          </li>
        ))}
      </ul>
      {olderError && (
        <p class="field-error" role="alert">
          {olderError}
        </p>
      )}
      {queue?.before != null && (
        <button type="button" class="button small mod-more" disabled={loadingOlder} onClick={() => void loadOlder()}>
          {loadingOlder ? "Loading older reports…" : "Load older reports"}
        </button>
      )}
    </>
  );
}

function BansList({ chat, onSaid }: { chat: ChatSession; onSaid: (text: string) => void }) {
  const { value, error, reload } = useLoaded(() => listBans(chat.code));
  const [busy, setBusy] = useState(false);
  const unban = async (ban: Ban): Promise<void> => {
    setBusy(true);
    try {
      await unbanParticipant(chat.code, ban.id);
      onSaid(`${ban.username} may join again.`);
      reload();
    } catch (failure) {
      onSaid(actionError(failure, "lift that ban"));
    } finally {
      setBusy(false);
    }
  };
  return (
    <>
      <ListState error={error} loading={value === null} onRetry={reload} />
      {value && !value.length && <p class="mod-none">Nobody is banned.</p>}
      <ul class="mod-list">
        {(value ?? []).map((b) => (
          <li key={b.id} class="mod-item mod-row">
            <span>
              <strong>{b.username}</strong> · {TIERS.find((t) => t.value === b.tier)?.label ?? b.tier}
              {b.reason && <span class="mod-report-text"> · {b.reason}</span>}
              <span class="mod-when"> · {agoWords(b.created_at)}</span>
            </span>
            <button type="button" class="button small" disabled={busy} onClick={() => void unban(b)} aria-label={`Unban ${b.username}`}>
              Unban
            </button>
          </li>
        ))}
      </ul>
    </>
  );
}

function MutedList({ chat, onSaid }: { chat: ChatSession; onSaid: (text: string) => void }) {
  const { value, error, reload } = useLoaded<Mute[]>(() => listMutes(chat.code));
  const unmute = async (m: Mute): Promise<void> => {
    await mute(chat, m.participant_id, false);
    onSaid(`${m.username} is unmuted.`);
    reload();
  };
  return (
    <>
      <ListState error={error} loading={value === null} onRetry={reload} />
      {value && !value.length && <p class="mod-none">You haven't muted anyone.</p>}
      <ul class="mod-list">
        {(value ?? []).map((m) => (
          <li key={m.participant_id} class="mod-item mod-row">
            <strong>{m.username}</strong>
            <button type="button" class="button small" onClick={() => void unmute(m)} aria-label={`Unmute ${m.username}`}>
              Unmute
            </button>
          </li>
        ))}
      </ul>
    </>
  );
}

/** The host's panel (sticky message, reports, bans, muted people); for everyone else, muted people. */
export function ModerationPanel({ chat, isHost, onSaid, onDismiss }: { chat: ChatSession; isHost: boolean; onSaid: (text: string) => void; onDismiss: () => void }) {
  return (
    <Modal title={isHost ? "Moderation" : "Muted people"} titleId="moderation-title" onDismiss={onDismiss} class="moderation-modal">
      <div class="moderation">
        {isHost && (
          <>
            <section aria-labelledby="mod-sticky">
              <h3 id="mod-sticky">Sticky message</h3>
              <StickyForm chat={chat} onSaid={onSaid} />
            </section>
            <section aria-labelledby="mod-reports">
              <h3 id="mod-reports">Reported messages</h3>
              <ReportsQueue chat={chat} onSaid={onSaid} />
            </section>
            <section aria-labelledby="mod-bans">
              <h3 id="mod-bans">Bans</h3>
              <BansList chat={chat} onSaid={onSaid} />
            </section>
          </>
        )}
        <section aria-labelledby="mod-muted">
          {isHost && <h3 id="mod-muted">Muted people</h3>}
          {!isHost && <p id="mod-muted">Their messages are hidden from you alone. Nobody is told.</p>}
          <MutedList chat={chat} onSaid={onSaid} />
        </section>
      </div>
    </Modal>
  );
}

export interface MenuAction {
  label: string;
  /** Read by screen readers instead of the label, when the label alone is ambiguous. */
  aria?: string;
  danger?: boolean;
  run: () => void;
}

/** The part of the screen an element can show in: the viewport, cut by every scrolling ancestor. */
function visibleArea(element: HTMLElement): { top: number; bottom: number; left: number; right: number } {
  const area = { top: 0, bottom: window.innerHeight, left: 0, right: window.innerWidth };
  for (let node = element.parentElement; node; node = node.parentElement) {
    const style = getComputedStyle(node);
    if (!/(auto|scroll|hidden|clip)/.test(style.overflowX + style.overflowY)) continue;
    const rect = node.getBoundingClientRect();
    area.top = Math.max(area.top, rect.top);
    area.bottom = Math.min(area.bottom, rect.bottom);
    area.left = Math.max(area.left, rect.left);
    area.right = Math.min(area.right, rect.right);
  }
  return area;
}

/** "More" on a message or a person: a button that shows a short list of actions below it (above
 * it when there is no room below, and from its left edge when there is no room to its left). Escape
 * or choosing closes it and focus goes back to the button. */
export function MoreMenu({ id, label, actions }: { id: string; label: string; actions: MenuAction[] }) {
  const [open, setOpen] = useState(false);
  const [placement, setPlacement] = useState("");
  const button = useRef<HTMLButtonElement>(null);
  const list = useRef<HTMLDivElement>(null);
  useLayoutEffect(() => {
    const menu = list.current;
    const anchor = button.current;
    if (!open || !menu || !anchor) {
      setPlacement("");
      return;
    }
    const area = visibleArea(menu);
    const box = menu.getBoundingClientRect();
    const at = anchor.getBoundingClientRect();
    const up = box.bottom > area.bottom && at.top - area.top > area.bottom - at.bottom;
    const start = box.left < area.left;
    setPlacement(`${up ? " up" : ""}${start ? " start" : ""}`);
  }, [open]);
  useEffect(() => {
    if (!open) return;
    list.current?.querySelector("button")?.focus();
    const onDown = (event: PointerEvent): void => {
      const target = event.target as Node;
      if (!list.current?.contains(target) && !button.current?.contains(target)) setOpen(false);
    };
    document.addEventListener("pointerdown", onDown);
    return () => document.removeEventListener("pointerdown", onDown);
  }, [open]);
  if (!actions.length) return null;
  const close = (): void => {
    setOpen(false);
    button.current?.focus();
  };
  return (
    <span class="more">
      <button
        ref={button}
        type="button"
        class="msg-action"
        aria-label={label}
        title="More actions"
        aria-expanded={open}
        aria-controls={open ? id : undefined}
        onClick={() => setOpen(!open)}
      >
        <span aria-hidden="true">⋯</span>
      </button>
      {open && (
        <div
          ref={list}
          id={id}
          class={`more-list${placement}`}
          role="group"
          aria-label={label}
          onKeyDown={(event) => {
            if (event.key === "Escape") {
              event.preventDefault();
              event.stopPropagation();
              close();
            }
          }}
        >
          {actions.map((action) => (
            <button
              key={action.label}
              type="button"
              class={`more-item ${action.danger ? "danger" : ""}`}
              aria-label={action.aria}
              onClick={() => {
                setOpen(false);
                action.run();
              }}
            >
              {action.label}
            </button>
          ))}
        </div>
      )}
    </span>
  );
}

const ENDINGS: Record<Ending, { title: string; text: (roomName: string) => string }> = {
  banned: {
    title: "You were removed from this room",
    text: (roomName) => `The host of ${roomName} removed you. You can't send or read messages here any more.`,
  },
  site_banned: {
    title: "You were banned from ChatPop",
    text: () => "ChatPop's moderators banned you from the whole site. You can't join rooms or send or read messages any more.",
  },
  taken_down: {
    title: "This room was taken down",
    text: (roomName) => `ChatPop's moderators took ${roomName} down. Nobody can read or send messages in it any more.`,
  },
  seat_removed: {
    title: "Your seat was removed",
    text: (roomName) => `The host removed your seat in the Back Room of ${roomName}. You can't read or send messages there any more.`,
  },
  account_deleted: {
    title: "Your account was deleted",
    text: () => "This device is signed out of it.",
  },
  erased: {
    title: "This room was closed and its history deleted",
    text: (roomName) => `The host closed ${roomName} and deleted everything in it. Nobody can read or send messages in it any more.`,
  },
};

/** The full-screen end of a room for this person: banned from it or from ChatPop, or the room taken down. */
export function RoomEnded({ kind, roomName, back }: { kind: Ending; roomName: string; back?: { href: string; label: string } }) {
  const heading = useRef<HTMLHeadingElement>(null);
  useEffect(() => heading.current?.focus(), []);
  useEffect(() => {
    // This person's account was deleted (here or on another device): sign out of it and go home,
    // where a notice says so.
    if (kind !== "account_deleted") return;
    navigate("/", true);
    forgetDeletedAccount();
  }, [kind]);
  const ending = ENDINGS[kind];
  return (
    <main class="room-ended narrow" data-ending={kind}>
      <h1 ref={heading} tabIndex={-1}>
        {ending.title}
      </h1>
      <p role="alert">{ending.text(roomName)}</p>
      <p class="room-ended-actions">
        {back && (
          <a href={back.href} class="button primary">
            {back.label}
          </a>
        )}
        <a href="/" class={back ? "button" : "button primary"}>
          Go to ChatPop's home
        </a>
      </p>
    </main>
  );
}
