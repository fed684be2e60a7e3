import type { ComponentChildren } from "preact";
import { useEffect, useLayoutEffect, useMemo, useRef, useState } from "preact/hooks";
import type { Media, Message, Room } from "../api";
import { ChatSession, MAX_MESSAGE_CHARS, type AttachedMedia, type PendingSend } from "../chat";
import type { ConnectionState } from "../realtime";
import type { RoomSession } from "../rooms";
import { isMuted, setMuted } from "../sound";
import { followRoom } from "../liveRoom";
import { typingText } from "../typing";
import { AddReactionIcon, BellIcon, CheckIcon, GearIcon, LinkIcon, NotifyIcon, SendIcon, ShieldIcon } from "../components/Icons";
import { DeleteMessageDialog } from "../components/DeleteMessage";
import { MessageText } from "../components/MessageText";
import { ReactionBar, ReactionPicker, useLongPress } from "../components/Reactions";
import { PeopleButton } from "../components/People";
import { RoomHeader } from "../components/RoomHeader";
import { RoomSettings } from "../components/RoomSettings";
import { notificationState, notifyMessage, setNotifications, type NotificationState } from "../notifications";
import { slowModeWords } from "../roomChoices";
import { pendingReactions, removeMessage, toggleReaction } from "../roomEvents";
import { ban, boardOf, mute, pin, pinnedMessages, report } from "../moderation";
import { BanDialog, ModerationPanel, MoreMenu, ReportDialog, RoomEnded, type MenuAction } from "../components/Moderation";
import { RemovePaidPinDialog, RoomMoneySettings, RoomPaidPins, RoomPinDialog, RoomTipDialog, SalesHint, TipButton, TipEvent, useRoomSales } from "../components/RoomMoney";
import type { ShownPaidPin } from "../components/PaidPins";
import { BackRoomCard, BackRoomMembers, DoorIcon, SeatDialog, useMySeat } from "../components/BackRoom";
import { navigate } from "../router";
import type { PinTarget } from "../components/PinDialog";
import { shownPaidPins } from "../paidPins";
import { AttachButton, AttachmentStrip, MessageMediaView, VoiceRecorder, useAttachment } from "../components/Media";
import { mediaWords, pendingRecord } from "../media";
import "../components/moderation.css";

// Within this many pixels of the bottom counts as "reading the newest": new messages scroll in.
const STICKY_PX = 80;
const LOAD_OLDER_PX = 240;

function useSession(session: ChatSession): number {
  const [version, setVersion] = useState(session.version);
  useEffect(() => session.subscribe(() => setVersion(session.version)), [session]);
  return version;
}

function timeOf(iso: string | null): { short: string; full: string; iso: string } | null {
  if (!iso) return null;
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return null;
  return {
    short: date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }),
    full: date.toLocaleString(),
    iso: date.toISOString(),
  };
}

function snippet(text: string, length = 80): string {
  const flat = text.replace(/\s+/g, " ").trim();
  return flat.length > length ? `${flat.slice(0, length - 1)}…` : flat;
}

// --- header pieces ---------------------------------------------------------------------------

function useNow(active: boolean): number {
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    if (!active) return;
    const timer = window.setInterval(() => setNow(Date.now()), 1000);
    return () => window.clearInterval(timer);
  }, [active]);
  return now;
}

export function ConnectionStatus({ state, onRetry }: { state: ConnectionState; onRetry: () => void }) {
  const now = useNow(state.kind === "waiting");
  let label: string;
  let detail = "";
  switch (state.kind) {
    case "live":
      label = "Live";
      break;
    case "connecting":
      label = state.attempt === 0 ? "Connecting…" : "Connection lost — reconnecting…";
      break;
    case "waiting":
      label = "Connection lost — reconnecting…";
      detail = `in ${Math.max(1, Math.ceil((state.retryAt - now) / 1000))} s`;
      break;
    case "offline":
      label = "Offline";
      detail = "waiting for the network";
      break;
    case "ended":
      label = "Disconnected";
      break;
  }
  return (
    <div class="connection" data-state={state.kind}>
      <span class="dot" aria-hidden="true" />
      <span role="status" aria-live="polite" class="connection-label">
        {label}
      </span>
      {detail && (
        <span class="connection-detail" aria-hidden="true">
          {" "}
          {detail}
        </span>
      )}
      {(state.kind === "waiting" || state.kind === "offline") && (
        <button type="button" class="link-button" onClick={onRetry}>
          Retry now
        </button>
      )}
    </div>
  );
}

function ShareButton({ room, onCopied }: { room: Room; onCopied: (text: string) => void }) {
  const share = async (): Promise<void> => {
    // The address this page was reached by is the one others can reach too.
    const url = `${window.location.origin}/c/${room.code}`;
    if (navigator.share && window.matchMedia("(pointer: coarse)").matches) {
      try {
        await navigator.share({ title: room.name, text: `Join ${room.name} on ChatPop`, url });
        return;
      } catch (error) {
        if (error instanceof DOMException && error.name === "AbortError") return;
      }
    }
    try {
      await navigator.clipboard.writeText(url);
      onCopied(`Link copied: ${url}`);
    } catch {
      window.prompt("Copy this link to share the room:", url);
    }
  };
  return (
    <button type="button" class="button small" onClick={() => void share()} aria-label="Copy link to this room">
      <LinkIcon />
      <span class="label-text">Share</span>
    </button>
  );
}

function SoundToggle() {
  const [muted, setMutedState] = useState(isMuted);
  return (
    <button
      type="button"
      class="icon-button"
      aria-pressed={!muted}
      aria-label="Sound for new messages"
      title={muted ? "Sound is off" : "Sound is on"}
      onClick={() => {
        setMuted(!muted);
        setMutedState(!muted);
      }}
    >
      <BellIcon off={muted} />
    </button>
  );
}

function NotifyToggle({ onSaid }: { onSaid: (text: string) => void }) {
  const [state, setState] = useState<NotificationState>(notificationState);
  if (state === "unsupported") return null;
  const toggle = async (): Promise<void> => {
    // The click is the gesture browsers require before asking for permission.
    const next = await setNotifications(state !== "on");
    setState(next);
    if (next === "on") onSaid("You'll be notified of new messages while this tab is in the background.");
    else if (next === "blocked") onSaid("Notifications are blocked for this site in your browser's settings.");
    else onSaid("Notifications are off.");
  };
  return (
    <button
      type="button"
      class="icon-button"
      aria-pressed={state === "on"}
      aria-label="Notifications for new messages"
      title={state === "on" ? "Notifications are on" : state === "blocked" ? "Notifications are blocked" : "Notifications are off"}
      onClick={() => void toggle()}
    >
      <NotifyIcon on={state === "on"} />
    </button>
  );
}

// --- messages --------------------------------------------------------------------------------

function SenderLine({ message, mine }: { message: Message; mine: boolean }) {
  const time = timeOf(message.created_at);
  return (
    <div class="msg-head">
      <span class="sender">{message.sender.username}</span>
      {message.sender.verified && (
        <span class="badge verified" title="Verified username">
          <CheckIcon />
          <span class="sr-only"> verified</span>
        </span>
      )}
      {message.sender.is_host && <span class="badge host">Host</span>}
      {mine && <span class="sr-only"> (you)</span>}
      {time && (
        <time dateTime={time.iso} title={time.full}>
          {time.short}
        </time>
      )}
    </div>
  );
}

function Quote({ seq, target, onJump }: { seq: number; target: Message | undefined; onJump: (seq: number) => void }) {
  const who = target?.sender.username ?? "an earlier message";
  const text = !target ? `Message #${seq}` : target.deleted ? "deleted" : snippet(target.text || mediaWords(target.media), 90);
  return (
    <button type="button" class="quote" onClick={() => onJump(seq)} aria-label={`Reply to ${who}: ${target?.deleted ? "deleted message" : text}. Show that message`}>
      <span class="quote-sender">{target ? target.sender.username : "Earlier message"}</span>
      <span class={`quote-text ${target?.deleted ? "quote-deleted" : ""}`}>{text}</span>
    </button>
  );
}

function MessageItem({
  code,
  message,
  mine,
  canDelete,
  canReact,
  target,
  pending,
  onReply,
  onJump,
  onReact,
  onDelete,
  viewerIsHost,
  more,
}: {
  /** The room's code: media is shown from addresses signed for it. */
  code: string;
  message: Message;
  mine: boolean;
  /** The person looking hosts the room: hidden messages show their text to them, marked. */
  viewerIsHost: boolean;
  /** Report, mute, pin, ban: what this person may do to the message beyond replying and reacting. */
  more: MenuAction[];
  /** Its author, or the room's host. */
  canDelete: boolean;
  /** False when the room is closed or the connection has ended for good. */
  canReact: boolean;
  target: Message | undefined;
  /** This person's reaction taps on it that the server has not answered yet. */
  pending: ReadonlyMap<string, boolean> | undefined;
  onReply: (message: Message) => void;
  onJump: (seq: number) => void;
  onReact: (seq: number, emoji: string, on: boolean) => void;
  onDelete: (message: Message) => void;
}) {
  const [picking, setPicking] = useState(false);
  const reactButton = useRef<HTMLButtonElement>(null);
  const longPress = useLongPress(() => {
    if (canReact && !message.deleted) setPicking(true);
  });
  if (message.deleted) {
    return (
      <article
        class={`msg deleted ${mine ? "own" : ""}`}
        id={`msg-${message.seq}`}
        data-seq={message.seq}
        data-deleted="true"
        tabIndex={-1}
        aria-label={`${message.sender.username}, deleted message`}
      >
        <SenderLine message={message} mine={mine} />
        <p class="msg-text msg-deleted-text">{message.deleted_by_host ? "Deleted by the host" : "Message deleted"}</p>
      </article>
    );
  }
  if (message.hidden && !viewerIsHost) {
    return (
      <article
        class={`msg deleted hidden-msg ${mine ? "own" : ""}`}
        id={`msg-${message.seq}`}
        data-seq={message.seq}
        data-hidden="true"
        tabIndex={-1}
        aria-label={`${message.sender.username}, message hidden pending review`}
      >
        <SenderLine message={message} mine={mine} />
        <p class="msg-text msg-deleted-text">Hidden pending review</p>
      </article>
    );
  }
  const classes = ["msg", mine ? "own" : "", message.sender.is_host ? "host" : "", message.hidden ? "hidden-msg" : ""]
    .filter(Boolean)
    .join(" ");
  // This person's emojis as the picker shows them: taps on their way count already.
  const mineNow = message.my_reactions.filter((emoji) => pending?.get(emoji) !== false);
  for (const [emoji, on] of pending ?? []) if (on && !mineNow.includes(emoji)) mineNow.push(emoji);
  return (
    <article
      class={classes}
      id={`msg-${message.seq}`}
      data-seq={message.seq}
      data-hidden={message.hidden ? "true" : undefined}
      tabIndex={-1}
      aria-label={`${message.sender.username}`}
      {...longPress}
    >
      <SenderLine message={message} mine={mine} />
      {message.reply_to_seq !== null && <Quote seq={message.reply_to_seq} target={target} onJump={onJump} />}
      {message.media && <MessageMediaView code={code} media={message.media} username={message.sender.username} />}
      <MessageText text={message.text} />
      {message.hidden && <p class="msg-hidden-note">Hidden pending review: only you, the host, see it.</p>}
      <ReactionBar message={message} pending={pending} disabled={!canReact} onToggle={(emoji, on) => onReact(message.seq, emoji, on)} />
      <div class="msg-actions">
        {canReact && (
          <button
            type="button"
            ref={reactButton}
            class="msg-action react"
            aria-label={`Add a reaction to ${message.sender.username}'s message`}
            title="Add a reaction"
            aria-expanded={picking}
            aria-controls={picking ? `picker-${message.seq}` : undefined}
            onClick={() => setPicking(!picking)}
          >
            <AddReactionIcon />
          </button>
        )}
        <button type="button" class="msg-action" onClick={() => onReply(message)} aria-label={`Reply to ${message.sender.username}`}>
          Reply
        </button>
        {canDelete && (
          <button
            type="button"
            class="msg-action"
            onClick={() => onDelete(message)}
            aria-label={mine ? "Delete your message" : `Delete ${message.sender.username}'s message`}
          >
            Delete
          </button>
        )}
        <MoreMenu id={`more-${message.seq}`} label={`More actions on ${message.sender.username}'s message`} actions={more} />
      </div>
      {picking && (
        <ReactionPicker
          id={`picker-${message.seq}`}
          mine={mineNow}
          opener={reactButton}
          onPick={(emoji) => onReact(message.seq, emoji, !mineNow.includes(emoji))}
          onClose={() => setPicking(false)}
        />
      )}
    </article>
  );
}

const PENDING_LABELS: Record<PendingSend["status"], string> = {
  queued: "Waiting to send…",
  sending: "Sending…",
  waiting: "Waiting to send…",
  sent: "Sent",
  failed: "Not sent",
};

function PendingItem({
  code,
  item,
  me,
  target,
  onRetry,
  onDiscard,
  onJump,
}: {
  code: string;
  item: PendingSend;
  me: string;
  target: Message | undefined;
  onRetry: (id: string) => void;
  onDiscard: (id: string) => void;
  onJump: (seq: number) => void;
}) {
  return (
    <article class={`msg own pending ${item.status === "failed" ? "failed" : ""}`} data-client-msg-id={item.client_msg_id} data-status={item.status}>
      <div class="msg-head">
        <span class="sender">{me}</span>
        <span class="msg-status">{PENDING_LABELS[item.status]}</span>
      </div>
      {item.reply_to_seq !== null && <Quote seq={item.reply_to_seq} target={target} onJump={onJump} />}
      {item.media && <MessageMediaView code={code} media={pendingRecord(item.media)} username={me} />}
      <p class="msg-text">{item.text}</p>
      {item.status === "failed" && (
        <div class="msg-failure" role="alert">
          <span>{item.error ?? "The message was refused."}</span>
          <button type="button" class="link-button" onClick={() => onRetry(item.client_msg_id)}>
            Try again
          </button>
          <button type="button" class="link-button" onClick={() => onDiscard(item.client_msg_id)}>
            Delete
          </button>
        </div>
      )}
    </article>
  );
}

/** What sits above the messages: the host's latest message today; paid pins slot in here later. */
export interface PinnedItem {
  key: string;
  label: string;
  seq: number;
  text: string;
  by: string;
}

function StickyBanner({ text }: { text: string }) {
  if (!text) return null;
  return (
    <p class="sticky-banner" role="note" aria-label="Message from the host">
      <strong>From the host</strong>
      <span class="sticky-text">{text}</span>
    </p>
  );
}

function PinnedBar({ items, onJump }: { items: PinnedItem[]; onJump: (seq: number) => void }) {
  if (!items.length) return null;
  return (
    <section class="pinned" aria-label="Pinned messages">
      {items.map((item) => (
        <button type="button" key={item.key} class="pinned-item" data-seq={item.seq} data-kind={item.key.split("-")[0]} onClick={() => onJump(item.seq)}>
          <span class="badge host">{item.label}</span>
          <span class="pinned-by">{item.by}</span>
          <span class="pinned-text">{snippet(item.text, 120)}</span>
        </button>
      ))}
    </section>
  );
}

// --- composer --------------------------------------------------------------------------------

/** "12 characters left" near the limit, "37 characters too long" past it. */
export function counterWords(remaining: number): string {
  if (remaining < 0) return `${(-remaining).toLocaleString()} ${remaining === -1 ? "character" : "characters"} too long`;
  return `${remaining.toLocaleString()} ${remaining === 1 ? "character" : "characters"} left`;
}

function Composer({
  code,
  allowed,
  disabled,
  disabledText,
  slowMode,
  replyTo,
  onCancelReply,
  onSend,
  onTyping,
  tools,
}: {
  /** Buttons before the text box (tipping the host). */
  tools?: ComponentChildren;
  code: string;
  /** The media the room allows now (the host may change it while people chat). */
  allowed: Media;
  disabled: boolean;
  disabledText: string;
  /** Seconds between messages for this person; 0 when slow mode is off or they host the room. */
  slowMode: number;
  replyTo: Message | null;
  onCancelReply: () => void;
  onSend: (text: string, media?: AttachedMedia) => boolean;
  onTyping: () => void;
}) {
  const [text, setText] = useState("");
  const attachment = useAttachment(code, (caption, media) => onSend(caption, media));
  const staged = attachment.staged;
  const mediaAllowed = !disabled && (allowed.photo || allowed.video);
  const input = useRef<HTMLTextAreaElement>(null);
  const length = useMemo(() => [...text.trim()].length, [text]);
  const remaining = MAX_MESSAGE_CHARS - length;

  const resize = (): void => {
    const area = input.current;
    if (!area) return;
    // CSSOM writes are allowed by the CSP (style attributes in markup are not).
    area.style.height = "auto";
    area.style.height = `${Math.min(area.scrollHeight, 160)}px`;
  };

  useEffect(() => {
    if (replyTo) input.current?.focus();
  }, [replyTo?.seq]);

  const canSend = !disabled && remaining >= 0 && (staged ? !attachment.busy && allowed[staged.kind] : !!text.trim());

  const submit = (): void => {
    if (!canSend) return;
    if (staged) {
      // The media goes up first; the message (the text as its caption) follows once it is stored.
      attachment.send(text, () => {
        setText("");
        requestAnimationFrame(resize);
      });
      return;
    }
    if (onSend(text)) {
      setText("");
      requestAnimationFrame(resize);
    }
  };

  return (
    <form
      class="composer"
      onSubmit={(e) => {
        e.preventDefault();
        submit();
      }}
    >
      {replyTo && (
        <div class="replying">
          <span>
            Replying to <strong>{replyTo.sender.username}</strong>:{" "}
            {replyTo.deleted ? (
              <span class="replying-text quote-deleted">deleted</span>
            ) : (
              <span class="replying-text">{snippet(replyTo.text || mediaWords(replyTo.media), 60)}</span>
            )}
          </span>
          <button type="button" class="icon-button" aria-label="Cancel reply" onClick={onCancelReply}>
            ×
          </button>
        </div>
      )}
      <AttachmentStrip attachment={attachment} allowed={allowed} />
      <div class="composer-row">
        {tools}
        {mediaAllowed && <AttachButton allowed={allowed} disabled={attachment.busy} onPick={attachment.pick} />}
        <label for="composer-input" class="sr-only">
          Message
        </label>
        <textarea
          id="composer-input"
          ref={input}
          rows={1}
          placeholder={disabled ? disabledText : staged ? "Add a caption" : "Message"}
          enterkeyhint="send"
          disabled={disabled}
          readOnly={attachment.busy}
          value={text}
          aria-describedby={remaining < 200 ? "composer-counter" : undefined}
          onInput={(e) => {
            setText(e.currentTarget.value);
            resize();
            onTyping();
          }}
          onKeyDown={(e) => {
            if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
              e.preventDefault();
              submit();
            } else if (e.key === "Escape" && replyTo) {
              onCancelReply();
            }
          }}
        />
        {!disabled && allowed.voice && (
          <VoiceRecorder disabled={attachment.busy || staged !== null} onRecorded={attachment.sendRecording} onProblem={attachment.report} />
        )}
        <button
          type="submit"
          class="send-button"
          aria-label={staged ? `Send ${staged.kind === "voice" ? "voice note" : staged.kind}` : "Send"}
          disabled={!canSend}
          // Keep focus (and the phone's keyboard) in the text box when the button is tapped.
          onPointerDown={(e) => e.preventDefault()}
        >
          <SendIcon />
        </button>
      </div>
      {remaining < 200 && (
        <p id="composer-counter" class={`counter ${remaining < 0 ? "over" : ""}`} aria-live="polite">
          {counterWords(remaining)}
        </p>
      )}
      {slowMode > 0 && !disabled && (
        <p class="slow-mode-note" id="slow-mode-note">
          Slow mode: {slowModeWords(slowMode)}.
        </p>
      )}
    </form>
  );
}

// --- the chat screen -------------------------------------------------------------------------

/** Where a Back Room belongs: the chat view shows it as the Back Room of its main room. */
export interface BackRoomPlace {
  mainCode: string;
  mainName: string;
}

export function ChatView({ room: initialRoom, joined, backRoom }: { room: Room; joined: RoomSession; backRoom?: BackRoomPlace }) {
  const session = useMemo(() => new ChatSession(initialRoom, joined.participant), [initialRoom.code, joined.participant.id]);
  useSession(session);
  const room = session.room;
  // What the room is called here: a Back Room by its main room's name.
  const roomTitle = backRoom ? `Back Room · ${backRoom.mainName}` : room.name;
  const isHost = joined.participant.is_host;
  const [settingsOpen, setSettingsOpen] = useState(false);
  // Messages from others that arrived while the tab was hidden or scrolled away from the newest.
  const [titleUnread, setTitleUnread] = useState(0);
  const [replyToSeq, setReplyToSeq] = useState<number | null>(null);
  const [deleting, setDeleting] = useState<Message | null>(null);
  const [reporting, setReporting] = useState<Message | null>(null);
  const [banning, setBanning] = useState<{ id: string; username: string } | null>(null);
  const [moderating, setModerating] = useState(false);
  const [unseen, setUnseen] = useState(0);
  const [toast, setToast] = useState<string | null>(null);
  const [removingPin, setRemovingPin] = useState<ShownPaidPin | null>(null);
  // Paid pins and tips: what the room sells (nothing when its host cannot receive money).
  // A Back Room sells nothing of its own: its seats are sold in the main room.
  const { sales, shop } = useRoomSales(session, !backRoom);
  const mySeat = useMySeat(session, isHost);
  const [buyingSeat, setBuyingSeat] = useState(false);
  const [membersOpen, setMembersOpen] = useState(false);
  const [pinning, setPinning] = useState<PinTarget | null>(null);
  const [tipping, setTipping] = useState(false);
  const scroller = useRef<HTMLDivElement>(null);
  const atBottom = useRef(true);
  const lastHeight = useRef(0);
  const firstSeq = useRef<number | null>(null);
  const lastSeq = useRef<number | null>(null);
  const forceBottom = useRef(true);

  useEffect(() => {
    void session.start();
    return () => session.stop();
  }, [session]);
  // The Back Room is read only through its main room: its own settings come in its frames.
  useEffect(() => (backRoom ? undefined : followRoom(session)), [session]);

  useEffect(() => {
    if (!toast) return;
    const timer = window.setTimeout(() => setToast(null), 3500);
    return () => window.clearTimeout(timer);
  }, [toast]);

  const messages = session.sorted();
  // The message being replied to as it stands now (its reactions or deletion may change meanwhile).
  const replyTo = replyToSeq === null ? null : (session.message(replyToSeq) ?? null);
  const setReplyTo = (message: Message | null): void => setReplyToSeq(message?.seq ?? null);
  const pending = session.pending();
  const ended = session.state.kind === "ended";
  const newestSeq = messages[messages.length - 1]?.seq ?? 0;

  // What the person has seen: the newest message, while the tab is visible and the list is at the
  // bottom. It clears the count in the tab title and goes to the server for "my rooms".
  const markSeen = (): void => {
    if (document.visibilityState !== "visible" || !atBottom.current) return;
    setTitleUnread(0);
    if (newestSeq) session.markSeen(newestSeq);
  };
  useEffect(markSeen, [newestSeq]);
  useEffect(() => {
    const onVisible = (): void => markSeen();
    document.addEventListener("visibilitychange", onVisible);
    return () => document.removeEventListener("visibilitychange", onVisible);
  });

  useEffect(() => {
    const onIncoming = (message: Message): void => {
      if (document.visibilityState !== "visible" || !atBottom.current) setTitleUnread((n) => n + 1);
      if (!message.tip) notifyMessage(backRoom ? `the Back Room of ${backRoom.mainName}` : session.room.name, session.code, message);
    };
    session.incoming.add(onIncoming);
    return () => {
      session.incoming.delete(onIncoming);
    };
  }, [session]);

  useEffect(() => {
    document.title = `${titleUnread ? `(${titleUnread > 99 ? "99+" : titleUnread}) ` : ""}${roomTitle} · ChatPop`;
  }, [titleUnread, roomTitle]);

  // Keep the reading position: stick to the newest, or hold still while older pages load above.
  useLayoutEffect(() => {
    const el = scroller.current;
    if (!el) return;
    const first = messages[0]?.seq ?? null;
    const last = messages[messages.length - 1]?.seq ?? null;
    if (forceBottom.current || atBottom.current) {
      el.scrollTop = el.scrollHeight;
      forceBottom.current = false;
      setUnseen(0);
    } else {
      if (first !== null && firstSeq.current !== null && first < firstSeq.current) {
        el.scrollTop += el.scrollHeight - lastHeight.current;
      }
      if (last !== null && lastSeq.current !== null && last > lastSeq.current) {
        setUnseen((n) => n + messages.filter((m) => m.seq > (lastSeq.current ?? 0)).length);
      }
    }
    firstSeq.current = first;
    lastSeq.current = last;
    lastHeight.current = el.scrollHeight;
    // A short history that does not fill the screen: fetch more right away.
    if (session.hasOlder && !session.loadingOlder && el.scrollHeight <= el.clientHeight + LOAD_OLDER_PX) {
      void session.loadOlder();
    }
  });

  // The keyboard opening (or rotating the phone) resizes the list: stay on the newest if we were.
  useEffect(() => {
    const el = scroller.current;
    if (!el || typeof ResizeObserver === "undefined") return;
    const observer = new ResizeObserver(() => {
      if (atBottom.current) el.scrollTop = el.scrollHeight;
    });
    observer.observe(el);
    return () => observer.disconnect();
  }, []);

  const onScroll = (): void => {
    const el = scroller.current;
    if (!el) return;
    atBottom.current = el.scrollHeight - el.scrollTop - el.clientHeight < STICKY_PX;
    if (atBottom.current) {
      setUnseen(0);
      markSeen();
    }
    lastHeight.current = el.scrollHeight;
    if (el.scrollTop < LOAD_OLDER_PX) void session.loadOlder();
  };

  const toBottom = (): void => {
    const el = scroller.current;
    if (el) el.scrollTop = el.scrollHeight;
    atBottom.current = true;
    setUnseen(0);
  };

  const jumpTo = async (seq: number): Promise<void> => {
    if (!(await session.ensureLoaded(seq))) {
      setToast("That message is no longer available.");
      return;
    }
    requestAnimationFrame(() => {
      const target = document.getElementById(`msg-${seq}`);
      if (!target) return;
      atBottom.current = false;
      target.scrollIntoView({ block: "center" });
      target.classList.remove("flash");
      void target.offsetWidth;
      target.classList.add("flash");
      target.focus({ preventScroll: true });
    });
  };

  const send = (text: string, media?: AttachedMedia): boolean => {
    const id = session.send(text, replyTo?.seq ?? null, media);
    if (id === null) return false;
    setReplyTo(null);
    forceBottom.current = true;
    return true;
  };

  const bySeq = session.messages;
  const board = boardOf(session);
  const hostMessages = messages.filter((m) => m.sender.is_host && !m.tip && !m.deleted && !m.hidden);
  const latestHost = hostMessages[hostMessages.length - 1];
  // The host's pins sit above everything, then the host's latest message.
  const pinned: PinnedItem[] = pinnedMessages(session).map((m) => ({
    key: `pin-${m.seq}`,
    label: "Pinned",
    seq: m.seq,
    text: m.hidden && !isHost ? "Hidden pending review" : m.text || mediaWords(m.media),
    by: m.sender.username,
  }));
  if (latestHost && !board.pinnedSeqs.includes(latestHost.seq)) {
    pinned.push({ key: `host-${latestHost.seq}`, label: "Host", seq: latestHost.seq, text: latestHost.text || mediaWords(latestHost.media), by: latestHost.sender.username });
  }
  const typing = session.typingNames();

  if (session.ending) {
    return (
      <RoomEnded
        kind={session.ending}
        roomName={backRoom ? backRoom.mainName : room.name}
        back={backRoom && session.ending === "seat_removed" ? { href: `/c/${backRoom.mainCode}`, label: `Back to ${backRoom.mainName}` } : undefined}
      />
    );
  }

  const canAct = !ended && !room.closed;
  // The host neither tips nor pays to pin in their own room.
  const buying = canAct && !isHost && shop !== null && sales !== null;
  const paidPins = shownPaidPins(session, isHost);
  const personActions = (person: { id: string; username: string; is_host: boolean }): MenuAction[] => {
    if (person.id === joined.participant.id) return [];
    const actions: MenuAction[] = [];
    const muted = session.muted.has(person.id);
    actions.push({
      label: muted ? `Unmute ${person.username}` : `Mute ${person.username}`,
      run: () => void mute(session, person.id, !muted).then(() => setToast(muted ? `${person.username} is unmuted.` : `${person.username} is muted: you won't see their messages.`)),
    });
    if (isHost && !person.is_host && canAct) {
      actions.push({ label: `Ban ${person.username}…`, danger: true, run: () => setBanning({ id: person.id, username: person.username }) });
    }
    return actions;
  };
  const messageActions = (message: Message, mine: boolean): MenuAction[] => {
    if (message.deleted) return [];
    const actions: MenuAction[] = [];
    if (isHost && canAct) {
      const isPinned = board.pinnedSeqs.includes(message.seq);
      actions.push({ label: isPinned ? "Unpin" : "Pin", aria: `${isPinned ? "Unpin" : "Pin"} ${message.sender.username}'s message`, run: () => void pin(session, message.seq, !isPinned) });
    }
    if (buying && !message.hidden) {
      actions.push({ label: "Pay to pin…", aria: `Pay to pin ${message.sender.username}'s message`, run: () => setPinning({ kind: "pin", message }) });
    }
    if (!mine && canAct && !board.reported.has(message.seq) && !(message.hidden && !isHost)) {
      actions.push({ label: "Report…", aria: `Report ${message.sender.username}'s message`, run: () => setReporting(message) });
    }
    const sender = { id: message.sender.participant_id, username: message.sender.username, is_host: message.sender.is_host };
    return [...actions, ...personActions(sender)];
  };
  // "X was removed from the room" notes sit among the messages by the seq of their entry.
  const notes = [...board.removals.entries()];

  return (
    <div class="chat-screen">
      <RoomHeader
        title={roomTitle}
        status={
          <div class="room-status">
            <ConnectionStatus state={session.state} onRetry={() => session.reconnectNow()} />
            <PeopleButton chat={session} personActions={personActions} />
          </div>
        }
        actions={
          <>
            {/* A Back Room is never shared: its way in is a seat. */}
            {!backRoom && <ShareButton room={room} onCopied={setToast} />}
            <SoundToggle />
            <NotifyToggle onSaid={setToast} />
            <button
              type="button"
              class="icon-button"
              aria-label={isHost ? "Moderation" : "Muted people"}
              title={isHost ? "Moderation" : "Muted people"}
              onClick={() => setModerating(true)}
            >
              <ShieldIcon />
            </button>
            {isHost && !room.closed && !backRoom && (
              <button type="button" class="icon-button" aria-label="Room settings" title="Room settings" onClick={() => setSettingsOpen(true)}>
                <GearIcon />
              </button>
            )}
          </>
        }
      />
      {backRoom && (
        <div class="back-room-strip">
          <span class="back-room-icon" aria-hidden="true">
            <DoorIcon />
          </span>
          <p role="note">
            <strong>Back Room</strong> of {backRoom.mainName}. Host and seat holders only.
          </p>
          <button type="button" class="button small" aria-label="Back Room members" onClick={() => setMembersOpen(true)}>
            Members
          </button>
          <button type="button" class="button small" aria-label={`Leave the Back Room for ${backRoom.mainName}`} onClick={() => navigate(`/c/${backRoom.mainCode}`)}>
            Leave
          </button>
        </div>
      )}
      <StickyBanner text={board.sticky} />
      <PinnedBar items={pinned} onJump={(seq) => void jumpTo(seq)} />
      {/* Paid pins sit below the host's; extending one is bought through the pin dialog. */}
      <RoomPaidPins
        pins={paidPins}
        me={joined.participant.id}
        isHost={isHost}
        canExtend={buying}
        canRemove={isHost && canAct}
        onJump={(seq) => void jumpTo(seq)}
        onExtend={(paid) => setPinning({ kind: "extension", pin: paid })}
        onRemove={setRemovingPin}
      />
      {!backRoom && room.back_room && (room.back_room.enabled || (room.back_room.seats_taken > 0 && (isHost || mySeat.held === true))) && (
        <BackRoomCard
          info={room.back_room}
          mainCode={session.code}
          isHost={isHost}
          held={mySeat.held}
          sales={sales}
          canAct={canAct}
          onBuy={() => setBuyingSeat(true)}
        />
      )}
      {isHost && canAct && <SalesHint sales={sales} code={session.code} />}
      <div class="messages-wrap">
        <div class="messages-bg" aria-hidden="true" />
        <div class="messages" ref={scroller} onScroll={onScroll} role="log" aria-label={`Messages in ${roomTitle}`} tabIndex={0}>
          {session.hasOlder ? (
            <div class="history-edge">
              {session.loadingOlder ? (
                <span role="status">Loading earlier messages…</span>
              ) : (
                <button type="button" class="link-button" onClick={() => void session.loadOlder()}>
                  Load earlier messages
                </button>
              )}
            </div>
          ) : session.loaded && session.trimmedAt !== null ? (
            <div class="history-edge start" role="note">
              <strong>
                {room.retention_days > 0
                  ? `Older messages were deleted after ${room.retention_days} ${room.retention_days === 1 ? "day" : "days"}, as this room's retention says.`
                  : "Older messages were deleted by this room's retention."}
              </strong>
            </div>
          ) : (
            session.loaded && (
              <div class="history-edge start">
                <strong>This is the start of {backRoom ? `the Back Room of ${backRoom.mainName}` : room.name}.</strong>
                {room.description && !backRoom && <p>{room.description}</p>}
              </div>
            )
          )}
          {messages.map((message, index) => {
            const mine = message.sender.participant_id === joined.participant.id;
            const before = messages[index - 1]?.seq ?? 0;
            const last = index === messages.length - 1;
            const here = notes.filter(([seq]) => seq > before && (seq < message.seq || (last && seq > message.seq)));
            const noteItems = here.map(([seq, name]) => (
              <p key={`note-${seq}`} class="room-note" data-seq={seq} role="note">
                {name} was removed from the room
              </p>
            ));
            const item = message.tip ? (
              <TipEvent
                key={message.seq}
                seq={message.seq}
                username={message.sender.username}
                amountCents={message.tip.amount_cents}
                currency={message.tip.currency}
                note={message.tip.note}
                createdAt={message.created_at}
                mine={mine}
              />
            ) : (
              <MessageItem
                key={message.seq}
                code={session.code}
                message={message}
                mine={mine}
                canDelete={mine || isHost}
                canReact={!ended && !room.closed}
                target={message.reply_to_seq !== null ? bySeq.get(message.reply_to_seq) : undefined}
                pending={pendingReactions(session, message.seq)}
                onReply={setReplyTo}
                onJump={(seq) => void jumpTo(seq)}
                onReact={(seq, emoji, on) => void toggleReaction(session, seq, emoji, on)}
                onDelete={setDeleting}
                viewerIsHost={isHost}
                more={messageActions(message, mine)}
              />
            );
            if (!noteItems.length) return item;
            const earlier = noteItems.filter((_, i) => here[i]![0] < message.seq);
            const later = noteItems.filter((_, i) => here[i]![0] > message.seq);
            return [...earlier, item, ...later];
          })}
          {!messages.length &&
            notes.map(([seq, name]) => (
              <p key={`note-${seq}`} class="room-note" data-seq={seq} role="note">
                {name} was removed from the room
              </p>
            ))}
          {pending.map((item) => (
            <PendingItem
              key={item.client_msg_id}
              code={session.code}
              item={item}
              me={joined.participant.username}
              target={item.reply_to_seq !== null ? bySeq.get(item.reply_to_seq) : undefined}
              onRetry={(id) => session.retry(id)}
              onDiscard={(id) => session.discard(id)}
              onJump={(seq) => void jumpTo(seq)}
            />
          ))}
        </div>
        {unseen > 0 && (
          <button type="button" class="jump-latest" onClick={toBottom}>
            <span aria-hidden="true">↓ </span>
            {unseen} new {unseen === 1 ? "message" : "messages"}
          </button>
        )}
      </div>
      <div class="typing" aria-live="polite">
        {typingText(typing)}
      </div>
      {(session.notice || toast || ended) && (
        <div class="notices">
          {ended && session.state.kind === "ended" && (
            <p class="notice error" role="alert">
              {session.state.reason}
            </p>
          )}
          {session.notice && (
            <p class={`notice ${session.notice.kind}`} role="alert" key={session.notice.id}>
              {session.notice.text}
              <button type="button" class="icon-button" aria-label="Dismiss" onClick={() => session.dismissNotice()}>
                ×
              </button>
            </p>
          )}
          {toast && (
            <p class="notice info" role="status">
              {toast}
            </p>
          )}
        </div>
      )}
      {room.closed && (
        <p class="room-closed-banner" role="status">
          The host closed this room. You can still read it, but nobody can send messages any more.
        </p>
      )}
      {pinning && shop && sales && (
        <RoomPinDialog chat={session} shop={shop} sales={sales} pins={paidPins} target={pinning} onDismiss={() => setPinning(null)} />
      )}
      {tipping && shop && sales && (
        <RoomTipDialog shop={shop} sales={sales} hostName={latestHost?.sender.username ?? null} onDismiss={() => setTipping(false)} />
      )}
      {buyingSeat && shop && sales && room.back_room && (
        <SeatDialog
          shop={shop}
          info={room.back_room}
          currency={sales.currency}
          mainCode={session.code}
          onSeated={mySeat.seated}
          onDismiss={() => setBuyingSeat(false)}
        />
      )}
      {membersOpen && backRoom && (
        <BackRoomMembers
          mainCode={backRoom.mainCode}
          isHost={isHost}
          hostName={messages.find((m) => m.sender.is_host)?.sender.username ?? null}
          me={joined.participant.username}
          onSaid={setToast}
          onDismiss={() => setMembersOpen(false)}
        />
      )}
      {removingPin && (
        <RemovePaidPinDialog chat={session} pin={removingPin} onDone={setToast} onDismiss={() => setRemovingPin(null)} />
      )}
      {deleting && (
        <DeleteMessageDialog
          message={deleting}
          mine={deleting.sender.participant_id === joined.participant.id}
          onConfirm={() => removeMessage(session, deleting.seq)}
          onDismiss={() => setDeleting(null)}
        />
      )}
      {reporting && (
        <ReportDialog
          message={reporting}
          onConfirm={async (reason, text) => {
            await report(session, reporting.seq, reason, text);
            setToast("Thanks. The host will review your report.");
          }}
          onDismiss={() => setReporting(null)}
        />
      )}
      {banning && (
        <BanDialog
          username={banning.username}
          onConfirm={async (tier, reason) => {
            await ban(session, banning.id, tier, reason);
            setToast(`${banning.username} was removed from the room.`);
          }}
          onDismiss={() => setBanning(null)}
        />
      )}
      {moderating && <ModerationPanel chat={session} isHost={isHost} onSaid={setToast} onDismiss={() => setModerating(false)} />}
      {settingsOpen && (
        <RoomSettings
          room={room}
          extra={<RoomMoneySettings sales={sales} />}
          selling={sales ? { can: sales.enabled, reason: sales.disabled_reason, currency: sales.currency, testMode: sales.mode === "test" } : null}
          onSaved={(saved) => {
            session.applyRoom(saved);
            setSettingsOpen(false);
            setToast(saved.closed ? "The room is closed." : "Settings saved.");
          }}
          onDismiss={() => setSettingsOpen(false)}
        />
      )}
      <Composer
        disabled={ended || room.closed}
        disabledText={room.closed ? "This room is closed" : "You can't send messages here"}
        slowMode={isHost ? 0 : room.slow_mode_seconds}
        replyTo={replyTo}
        onCancelReply={() => setReplyTo(null)}
        onSend={send}
        code={session.code}
        allowed={room.media}
        onTyping={() => session.sendTyping()}
        tools={buying && <TipButton onTip={() => setTipping(true)} />}
      />
    </div>
  );
}
