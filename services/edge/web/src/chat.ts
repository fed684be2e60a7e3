/** One room's conversation on this device: history, live frames, the outbox, and the connection.
 *
 * A room's log is one gap-free sequence of entries: messages, and changes to what the room shows
 * (reactions, deletions, and kinds added later). Messages are keyed by seq, so whatever path delivers
 * one (history page, resume, live frame) it is shown once and in order; a change applies to its
 * message when it is newer than the state the message holds (messageState.ts). Which seqs are
 * accounted for is kept apart from the messages (seqs.ts): `top` is the highest seq up to which
 * nothing is missing, messages or not, and reconnecting asks the edge for exactly what follows it
 * (`after_seq`). A frame of a kind this client does not know still counts, by its seq, so an older
 * client never sees a gap that is not there. Sends carry a client message id; an unacked
 * send is retried with the same id (the server never stores it twice) and shown as pending until the
 * message itself arrives. One send is in flight at a time, so a person's messages keep their order.
 */
import { ApiError, waitWords, type MediaKind, type Message, type MessagePage, type Participant, type Room } from "./api";
import { newClientMsgId } from "./ids";
import { asForgotten, mergeMessage, messageFrom, seqOf } from "./messageState";
import { ReconnectingSocket, StopError, type CloseDecision, type ConnectionState, type Frame } from "./realtime";
import { canonicalCode, fetchMessages, markRead, markReadOnLeave, roomToken } from "./rooms";
import { playNewMessage } from "./sound";
import { SeqLedger } from "./seqs";
import { readJson, remove, writeJson } from "./storage";
import { applyTheme, rememberRoomTheme } from "./themes";

export const MAX_MESSAGE_CHARS = 4000;
const PAGE_SIZE = 50;
const ACK_TIMEOUT_MS = 15_000;
const TYPING_SHOWN_MS = 4_000;
const TYPING_SEND_EVERY_MS = 2_500;
const GAP_FILL_ROUNDS = 5;
// After a hole with changes in it, the state of at most this many pages of older messages is read again.
const REFRESH_ROUNDS = 20;
// Errors that mean "your room token is no longer good", not "this message is wrong".
const AUTH_CODES = new Set(["unauthenticated", "invalid_token", "token_expired", "token_revoked"]);
const MAX_RENEWALS = 3;
// A notice that withdraws itself stays at least this long, so it can be read.
const NOTICE_MIN_MS = 4_000;
// Read positions go to the server at most this often (the newest one wins).
const READ_EVERY_MS = 1_500;
// Retryable refusals that deserve a word to the person, beyond the "waiting to send" mark.
const WAIT_NOTICES = new Set(["rate_limited", "slow_mode", "service_unavailable"]);
// Frames whose `seq` names something other than an entry of the log (an ack names the message it
// acknowledges, which still comes as its own frame). Every other frame with a seq is an entry.
const NOT_ENTRIES = new Set(["ack"]);
// Changes to messages not loaded (yet) are held for when they are; at most this many messages' worth.
const HELD_CHANGES = 500;

export type SendStatus = "queued" | "sending" | "waiting" | "sent" | "failed";

/** Media uploaded for a send (media.ts): the message names it by id. */
export interface AttachedMedia {
  id: string;
  kind: MediaKind;
  width: number;
  height: number;
  duration_ms: number;
}

export interface PendingSend {
  client_msg_id: string;
  text: string;
  reply_to_seq: number | null;
  media?: AttachedMedia;
  created_at: number;
  status: SendStatus;
  error?: string;
  retry_at?: number;
  seq?: number;
}

export interface Notice {
  id: number;
  kind: "error" | "info";
  text: string;
  /** What the notice is about, so it can be withdrawn when that is over. */
  topic?: string;
  shown_at: number;
}

/** Frames added by later features (pins, tips, reactions…) register a handler here. A frame with a
 * `seq` is an entry of the room's log and is accounted for by the session whatever its handler does;
 * a change to a message goes through `ChatSession.changeMessage`. */
export type FrameHandler = (chat: ChatSession, frame: Frame) => void;
export const frameHandlers = new Map<string, FrameHandler>();

/** Called with every newest history page (first load and reloads): it carries the room's `board`. */
export const newestPageHandlers = new Set<(chat: ChatSession, page: MessagePage) => void>();

/** Why this room ended for this person for good: banned by the host, banned from ChatPop by its
 * moderators, the room taken down by ChatPop, (in a Back Room) the host removed their seat, their
 * account was deleted, or the host closed the room and deleted everything in it. */
export type Ending = "banned" | "site_banned" | "taken_down" | "seat_removed" | "account_deleted" | "erased";

const ENDING_WORDS: Record<Ending, string> = {
  banned: "You were removed from this room.",
  site_banned: "You were banned from ChatPop.",
  taken_down: "This room was taken down.",
  seat_removed: "Your seat in the Back Room was removed.",
  account_deleted: "Your account was deleted.",
  erased: "This room was closed and its history deleted.",
};

/** A participant whose account was deleted: the neutral name they read under, whether their messages
 * were erased, and the seq of the entry that said so. */
export interface Forgotten {
  username: string;
  erased: boolean;
  seq: number;
}

function endingOf(error: unknown): Ending | null {
  if (!(error instanceof ApiError)) return null;
  if (error.code === "banned") return "banned";
  if (error.code === "site_banned") return "site_banned";
  if (error.code === "room_taken_down") return "taken_down";
  if (error.code === "account_deleted") return "account_deleted";
  // Entering a Back Room again without a seat (only a Back Room's token is renewed that way).
  if (error.code === "seat_removed" || error.code === "no_seat") return "seat_removed";
  return null;
}

/** A change to one message: returns the message as changed, or the same object when the change is
 * not newer than what the message holds. */
export type MessageChange = (message: Message) => Message;

export function messageError(text: string, withMedia = false): string | null {
  const trimmed = text.trim();
  if (!trimmed && !withMedia) return "Write a message first.";
  if ([...trimmed].length > MAX_MESSAGE_CHARS) {
    return `A message can have at most ${MAX_MESSAGE_CHARS.toLocaleString()} characters.`;
  }
  return null;
}

export class ChatSession {
  readonly code: string;
  readonly me: Participant;
  /** The room as last seen: its settings change while people chat (theme, slow mode, closed…). */
  room: Room;
  /** Called with every live message from someone else (sound is handled here already). */
  readonly incoming = new Set<(message: Message) => void>();
  readonly messages = new Map<number, Message>();
  readonly outbox = new Map<string, PendingSend>();
  /** participant id → (username, shown until) */
  readonly typing = new Map<string, { username: string; until: number }>();
  state: ConnectionState = { kind: "connecting", attempt: 0 };
  notice: Notice | null = null;
  hasOlder = false;
  loadingOlder = false;
  /** Set once the history reached the room's retention floor (older messages were deleted, not
   * missing): the view says so instead of offering older pages. */
  trimmedAt: number | null = null;
  loaded = false;
  /** Bumped on every change; the view re-renders when it moves. */
  version = 0;
  /** Set once this person was banned (from the room or from ChatPop) or the room was taken down:
   * nothing reconnects. */
  ending: Ending | null = null;
  /** Participants this person muted: their messages and typing are not shown (their seqs still count). */
  readonly muted = new Set<string>();
  /** Participants whose accounts were deleted (`participant_forgotten`), by id. For good: whatever
   * brings one of their messages later (an older page read before the entry) shows it as forgotten. */
  readonly forgotten = new Map<string, Forgotten>();

  /** The seqs accounted for: `top` is where a reconnect resumes. */
  private readonly ledger = new SeqLedger();
  /** The lowest seq a history page or message covered: older pages are read from below it. */
  private oldest: number | null = null;
  /** target seq → changes that arrived before their message was loaded, in arrival order. */
  private readonly heldChanges = new Map<number, MessageChange[]>();
  private sortedCache: Message[] | null = null;
  private readonly names = new Map<string, string>();
  private readonly listeners = new Set<() => void>();
  private socket: ReconnectingSocket | null = null;
  private inFlight: string | null = null;
  private ackTimer: number | undefined;
  private holdTimer: number | undefined;
  private typingTimer: number | undefined;
  private lastTypingSent = 0;
  private noticeSeq = 0;
  private filling = false;
  /** Token renewals since the last acknowledged send: a bound, so a refused token cannot loop. */
  private renewals = 0;
  private reloading = false;
  private stopped = false;
  private readonly outboxKey: string;
  private readSent = 0;
  private readWanted = 0;
  private readTimer: number | undefined;

  constructor(room: Room, me: Participant) {
    this.code = canonicalCode(room.code);
    this.room = room;
    this.me = me;
    this.outboxKey = `chatpop.outbox.${me.id}`;
    window.addEventListener("pagehide", this.onPageHide);
    for (const saved of readJson<PendingSend[]>(this.outboxKey) ?? []) {
      // Sends left over from an earlier visit go out again with their ids: none is lost or doubled.
      this.outbox.set(saved.client_msg_id, { ...saved, status: saved.status === "failed" ? "failed" : "queued" });
    }
  }

  // --- view side ------------------------------------------------------------------------------

  subscribe(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Tell the view something changed (room-event modules call it for their own state too). */
  changed(): void {
    this.version += 1;
    for (const listener of this.listeners) listener();
  }

  sorted(): Message[] {
    if (this.sortedCache === null) {
      this.sortedCache = [...this.messages.values()]
        .filter((m) => !this.muted.has(m.sender.participant_id))
        .sort((a, b) => a.seq - b.seq);
    }
    return this.sortedCache;
  }

  /** Sends not yet seen as messages, oldest first. */
  pending(): PendingSend[] {
    return [...this.outbox.values()];
  }

  usernameOf(participantId: string): string | null {
    return this.names.get(participantId) ?? null;
  }

  typingNames(): string[] {
    const now = Date.now();
    return [...this.typing.entries()]
      .filter(([who, t]) => t.until > now && !this.muted.has(who))
      .map(([, t]) => t.username);
  }

  /** The room's settings changed: show them (theme included) from now on. */
  applyRoom(room: Room): void {
    if (room.id !== this.room.id) return;
    this.room = room;
    applyTheme(room.theme);
    rememberRoomTheme(room.code, room.theme);
    // Closed with "delete everything": there is no history left to show anyone.
    if (room.erased === true) this.end("erased");
    this.changed();
  }

  /** A participant's account was deleted: every message of theirs held here (and any that arrives
   * later) reads under `username`, and is deleted too when `erased`: what a fresh load shows. */
  forgetParticipant(participantId: string, username: string, erased: boolean, seq: number): void {
    this.forgotten.set(participantId, { username, erased, seq });
    this.names.set(participantId, username);
    this.typing.delete(participantId);
    for (const message of this.messages.values()) {
      if (message.sender.participant_id !== participantId) continue;
      const next = asForgotten(message, username, erased, seq);
      if (next !== message) this.store(next);
    }
    this.changed();
  }

  /** A message (or a copy of one: a pinned message) as it reads now that its sender may be forgotten. */
  asKnown(message: Message): Message {
    const gone = this.forgotten.get(message.sender.participant_id);
    return gone ? asForgotten(message, gone.username, gone.erased, gone.seq) : message;
  }

  /** The neutral name of a participant whose account was deleted; null for anyone else. */
  forgottenName(participantId: string): string | null {
    return this.forgotten.get(participantId)?.username ?? null;
  }

  /** The newest seq this person has seen on screen; the server keeps it for unread counts. */
  markSeen(seq: number): void {
    if (seq <= this.readWanted) return;
    this.readWanted = seq;
    if (this.readTimer !== undefined) return;
    this.readTimer = window.setTimeout(() => void this.sendRead(), READ_EVERY_MS);
  }

  /** Leaving the page (closing the tab, following a link out): what was seen still counts as read. */
  private readonly onPageHide = (): void => {
    if (this.readWanted <= this.readSent) return;
    window.clearTimeout(this.readTimer);
    this.readTimer = undefined;
    this.readSent = this.readWanted;
    markReadOnLeave(this.code, this.readWanted);
  };

  private async sendRead(): Promise<void> {
    this.readTimer = undefined;
    const seq = this.readWanted;
    if (seq <= this.readSent || this.stopped) return;
    try {
      await markRead(this.code, seq);
      this.readSent = Math.max(this.readSent, seq);
    } catch {
      // Only an unread count is at stake: the next seen message tries again.
      this.readWanted = this.readSent;
    }
  }

  setNotice(kind: Notice["kind"], text: string, topic?: string): void {
    this.noticeSeq += 1;
    this.notice = { id: this.noticeSeq, kind, text, topic, shown_at: Date.now() };
    this.changed();
  }

  dismissNotice(): void {
    this.notice = null;
    this.changed();
  }

  /** Replace the muted set (a `mutes` frame, or this person's own mute or unmute); true when someone
   * left it, whose messages history pages left out until now. */
  setMuted(ids: Iterable<string>): boolean {
    const next = new Set(ids);
    const unmuted = [...this.muted].some((id) => !next.has(id));
    this.muted.clear();
    for (const id of next) this.muted.add(id);
    this.sortedCache = null;
    this.changed();
    return unmuted;
  }

  /** Read history again from the newest page (after an unmute: pages left those messages out). */
  reloadHistory(): Promise<void> {
    return this.reload();
  }

  /** The room is over for this person (banned, or taken down): stop at once and never reconnect. */
  end(ending: Ending): void {
    if (this.ending) return;
    this.ending = ending;
    this.socket?.stop();
    this.stopInFlight();
    this.state = { kind: "ended", reason: ENDING_WORDS[ending] };
    this.changed();
  }

  // --- lifecycle ------------------------------------------------------------------------------

  async start(): Promise<void> {
    try {
      await this.loadLatest();
    } catch (error) {
      if (this.stopped) return;
      const ending = endingOf(error);
      if (ending) {
        this.end(ending);
        return;
      }
      if (error instanceof ApiError && (error.status === 403 || error.status === 404)) {
        this.state = { kind: "ended", reason: error.message };
        this.changed();
        return;
      }
      // History comes again with the first resume; the socket below keeps trying.
      this.setNotice("error", error instanceof ApiError ? error.message : "Could not load the messages.");
    }
    if (this.stopped) return;
    this.socket = new ReconnectingSocket({
      url: (renew) => this.socketUrl(renew),
      onReady: () => this.onReady(),
      onFrame: (frame) => this.onFrame(frame),
      onClose: (code, reason) => this.onClose(code, reason),
      onState: (state) => {
        this.state = state;
        if (state.kind !== "live") this.stopInFlight();
        this.changed();
      },
    });
    this.socket.start();
  }

  stop(): void {
    if (this.readTimer !== undefined) {
      // Leaving the room inside the app: what was seen goes out now (before `stopped` would skip it).
      window.clearTimeout(this.readTimer);
      void this.sendRead();
    }
    this.stopped = true;
    this.socket?.stop();
    window.clearTimeout(this.ackTimer);
    window.clearTimeout(this.holdTimer);
    window.clearTimeout(this.typingTimer);
    window.removeEventListener("pagehide", this.onPageHide);
    this.listeners.clear();
    this.incoming.clear();
  }

  reconnectNow(): void {
    this.socket?.reconnectNow();
  }

  private async socketUrl(renew: boolean): Promise<string> {
    let token: string;
    try {
      token = await roomToken(this.code, renew);
    } catch (error) {
      const ending = endingOf(error);
      if (ending) {
        this.end(ending);
        throw new StopError(ENDING_WORDS[ending]);
      }
      if (error instanceof ApiError && (error.status === 403 || error.status === 404)) {
        throw new StopError(error.message);
      }
      throw error;
    }
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const query = new URLSearchParams({ token, after_seq: String(this.ledger.top) });
    return `${scheme}//${location.host}/ws/v1/rooms/${encodeURIComponent(this.code)}?${query}`;
  }

  private onClose(code: number, reason: string): CloseDecision {
    if (
      code === 4403 &&
      (reason === "banned" || reason === "site_banned" || reason === "seat_removed" || reason === "account_deleted")
    ) {
      this.end(reason);
      return { action: "stop", reason: ENDING_WORDS[reason] };
    }
    if (code === 4410) {
      this.end("taken_down");
      return { action: "stop", reason: "This room was taken down." };
    }
    switch (code) {
      case 4401:
      case 4403:
        // Expired or revoked token: join again (idempotent) for a fresh one. A ban fails that join.
        return { action: "renew" };
      case 4404:
        return { action: "stop", reason: "This ChatPop no longer exists." };
      case 4400:
        // Our resume point was refused: start over from the newest page.
        void this.reload();
        return { action: "retry" };
      default:
        return { action: "retry" };
    }
  }

  // --- history --------------------------------------------------------------------------------

  /** Adds a page's messages and marks the seqs it accounts for: from its `low_seq` up to `before - 1`
   * (the room's newest entry for the newest page), changes in that range being folded into the
   * messages. An edge older than room events sends no `low_seq`; its pages hold messages only, so
   * the lowest message stands in. */
  private addPage(page: MessagePage, before: number | null): { low: number | null; seqs: Set<number> } {
    let lowest: number | null = null;
    const seqs = new Set<number>();
    for (const raw of page.messages) {
      const message = messageFrom(raw);
      if (!message) continue;
      this.add(message, false);
      seqs.add(message.seq);
      lowest = lowest === null ? message.seq : Math.min(lowest, message.seq);
    }
    const low = seqOf(page.low_seq) ?? lowest;
    const floor = seqOf(page.floor_seq);
    if (floor !== null && floor > 1) {
      // Below the floor the room's retention deleted every entry: accounted for, never a gap.
      this.ledger.add(1, floor - 1);
      if (!page.has_more && low !== null && low <= floor) {
        this.trimmedAt = floor;
      }
    }
    if (before === null) {
      this.ledger.raiseTo(typeof page.last_seq === "number" ? page.last_seq : 0);
    } else if (low !== null) {
      this.ledger.add(low, before - 1);
    }
    if (low !== null && (this.oldest === null || low < this.oldest)) this.oldest = low;
    return { low, seqs };
  }

  private async loadLatest(): Promise<void> {
    const page = await fetchMessages(this.code, null, PAGE_SIZE);
    this.addPage(page, null);
    for (const handler of newestPageHandlers) handler(this, page);
    this.hasOlder = page.has_more;
    this.loaded = true;
    this.changed();
    // Live frames beyond the page while it was read (a reload on a live socket) may leave a hole.
    if (this.ledger.firstAboveHole() !== null && this.socket) void this.fillGap();
  }

  /** The edge could not fill a gap (or we lost track): start again from the newest page. */
  private async reload(): Promise<void> {
    if (this.reloading) return;
    this.reloading = true;
    try {
      this.messages.clear();
      this.heldChanges.clear();
      this.sortedCache = null;
      this.oldest = null;
      this.trimmedAt = null;
      this.ledger.reset();
      await this.loadLatest();
    } catch (error) {
      this.setNotice("error", error instanceof ApiError ? error.message : "Could not reload the messages.");
    } finally {
      this.reloading = false;
    }
  }

  async loadOlder(): Promise<void> {
    const before = this.oldest;
    if (this.loadingOlder || !this.hasOlder || before === null) return;
    this.loadingOlder = true;
    this.changed();
    try {
      const page = await fetchMessages(this.code, before, PAGE_SIZE);
      this.addPage(page, before);
      // A page that reached no lower ends the history, whatever it says: no endless asking.
      this.hasOlder = page.has_more && this.oldest !== null && this.oldest < before;
    } catch (error) {
      this.setNotice("error", error instanceof ApiError ? error.message : "Could not load older messages.");
    } finally {
      this.loadingOlder = false;
      this.changed();
    }
  }

  /** Load older pages until `seq` is here (to jump to a replied-to message). */
  async ensureLoaded(seq: number): Promise<boolean> {
    for (let round = 0; round < 40 && !this.messages.has(seq); round++) {
      if (!this.hasOlder || (this.oldest !== null && this.oldest <= seq)) break;
      await this.loadOlder();
    }
    return this.messages.has(seq);
  }

  // --- incoming -------------------------------------------------------------------------------

  /** A message from a page or a frame. One already here keeps its place and takes the newer state. */
  private add(message: Message, live: boolean): boolean {
    const current = this.messages.get(message.seq);
    if (current) {
      const merged = this.asKnown(mergeMessage(current, message));
      if (merged !== current) this.store(merged);
      return false;
    }
    const held = this.heldChanges.get(message.seq);
    this.heldChanges.delete(message.seq);
    const known = this.asKnown(held ? held.reduce((m, change) => change(m), message) : message);
    this.store(known);
    this.names.set(message.sender.participant_id, known.sender.username);
    if (this.oldest === null || message.seq < this.oldest) this.oldest = message.seq;
    const mine = message.sender.participant_id === this.me.id;
    if (mine && this.dropSent(message)) this.saveOutbox();
    this.typing.delete(message.sender.participant_id);
    if (live && !mine && !message.deleted && !this.muted.has(message.sender.participant_id)) {
      playNewMessage();
      for (const listener of this.incoming) listener(message);
    }
    return true;
  }

  private store(message: Message): void {
    this.messages.set(message.seq, message);
    this.sortedCache = null;
  }

  /** This person's send is here as a message: it leaves the outbox (found by its id, or by the seq
   * its ack named when the message comes without its id, deleted in the meantime). */
  private dropSent(message: Message): boolean {
    if (this.outbox.delete(message.client_msg_id)) return true;
    for (const [id, item] of this.outbox) {
      if (item.status === "sent" && item.seq === message.seq) return this.outbox.delete(id);
    }
    return false;
  }

  /** Apply a change to message `target`; a change to a message not loaded is held until it is (a
   * history page read before the change may bring it after the change arrived). */
  changeMessage(target: number, change: MessageChange): void {
    const current = this.messages.get(target);
    if (!current) {
      const held = this.heldChanges.get(target);
      if (held) held.push(change);
      else {
        if (this.heldChanges.size >= HELD_CHANGES) {
          const first = this.heldChanges.keys().next();
          if (!first.done) this.heldChanges.delete(first.value);
        }
        this.heldChanges.set(target, [change]);
      }
      return;
    }
    const next = change(current);
    if (next === current) return;
    this.store(next);
    this.changed();
  }

  /** The message with this seq as it stands now. */
  message(seq: number): Message | undefined {
    return this.messages.get(seq);
  }

  private onReady(): void {
    this.state = { kind: "live" };
    this.pump();
    this.changed();
  }

  private onFrame(frame: Frame): void {
    switch (frame.type) {
      // A tip is shown among the messages, in seq order, like one.
      case "message":
      case "tip": {
        const message = messageFrom(frame);
        if (message) this.add(message, true);
        break;
      }
      case "ack":
        this.onAck(frame);
        return;
      case "error":
        this.onError(frame);
        return;
      case "reload":
        void this.reload();
        return;
      case "trimmed":
        this.onTrimmed(seqOf(frame.floor_seq));
        return;
      case "typing":
        this.onTyping(frame);
        return;
      case "pong":
        return;
      default:
        frameHandlers.get(frame.type)?.(this, frame);
    }
    if (!NOT_ENTRIES.has(frame.type)) this.account(seqOf(frame.seq));
  }

  /** A resume from below the room's retention floor: the seqs below it were deleted, not lost. What is
   * shown stays; there is nothing older to load. */
  private onTrimmed(floor: number | null): void {
    if (floor === null || floor <= 1) return;
    this.ledger.add(1, floor - 1);
    this.trimmedAt = floor;
    if (this.oldest === null || this.oldest <= floor) this.hasOlder = false;
    this.changed();
  }

  /** A live entry (of any kind, known or not) is accounted for; one beyond a hole fills the hole. */
  private account(seq: number | null): void {
    if (seq === null) return;
    this.ledger.add(seq);
    if (this.ledger.firstAboveHole() !== null && !this.reloading) void this.fillGap();
    this.changed();
  }

  /** An entry arrived beyond a hole: fetch the hole over REST (the edge should never leave one). A
   * page accounts for the changes in its range too, folded into the state of the messages it holds;
   * a change in the hole may have been to an older message, though, so when the hole held anything
   * but messages, the state of the older messages held here is read again. */
  private async fillGap(): Promise<void> {
    if (this.filling) return;
    this.filling = true;
    let again = false;
    try {
      let changedBelow: number | null = null;
      for (let round = 0; round < GAP_FILL_ROUNDS; round++) {
        const above = this.ledger.firstAboveHole();
        if (above === null) break;
        const top = this.ledger.top;
        const page = await fetchMessages(this.code, above, Math.min(100, above - top - 1));
        const { low, seqs } = this.addPage(page, above);
        if (low !== null) {
          for (let seq = Math.max(low, top + 1); seq < above; seq++) {
            if (!seqs.has(seq)) {
              changedBelow = Math.min(changedBelow ?? low, low);
              break;
            }
          }
        }
        this.changed();
      }
      if (this.ledger.firstAboveHole() !== null) {
        await this.reload();
        return;
      }
      if (changedBelow !== null) await this.refreshBelow(changedBelow);
      // A hole that opened meanwhile found this fill busy: it is filled next.
      again = this.ledger.firstAboveHole() !== null;
    } catch {
      // The next reconnect resumes from `top` and fills it.
    } finally {
      this.filling = false;
    }
    if (again && !this.reloading) void this.fillGap();
  }

  /** Read the current state of the messages held below `seq` again, newest first. */
  private async refreshBelow(seq: number): Promise<void> {
    let before = seq;
    for (let round = 0; round < REFRESH_ROUNDS; round++) {
      if (this.oldest === null || before <= this.oldest) return;
      const { low } = this.addPage(await fetchMessages(this.code, before, PAGE_SIZE), before);
      this.changed();
      if (low === null || low >= before) return;
      before = low;
    }
  }

  private onTyping(frame: Frame): void {
    const who = typeof frame.participant_id === "string" ? frame.participant_id : null;
    if (!who || who === this.me.id) return;
    // The frame names the typist; older edges did not, so a name seen on a message stands in.
    const named = typeof frame.username === "string" && frame.username ? frame.username : null;
    this.typing.set(who, { username: named ?? this.names.get(who) ?? "Someone", until: Date.now() + TYPING_SHOWN_MS });
    window.clearTimeout(this.typingTimer);
    this.typingTimer = window.setTimeout(() => this.changed(), TYPING_SHOWN_MS + 50);
    this.changed();
  }

  // --- outgoing -------------------------------------------------------------------------------

  /** Queue a message; it shows at once as pending and is sent as soon as the connection allows.
   * With `media` (already uploaded) the text is its caption and may be empty. */
  send(text: string, replyTo: number | null, media?: AttachedMedia): string | null {
    const problem = messageError(text, media !== undefined);
    if (problem) {
      this.setNotice("error", problem);
      return null;
    }
    const id = newClientMsgId();
    this.outbox.set(id, {
      client_msg_id: id,
      text: text.trim(),
      reply_to_seq: replyTo,
      ...(media ? { media } : {}),
      created_at: Date.now(),
      status: "queued",
    });
    this.saveOutbox();
    // Others stop showing "typing" when the message arrives; the next keystroke may say so again.
    this.lastTypingSent = 0;
    this.pump();
    this.changed();
    return id;
  }

  retry(clientMsgId: string): void {
    const item = this.outbox.get(clientMsgId);
    if (!item || item.status !== "failed") return;
    item.status = "queued";
    delete item.error;
    this.saveOutbox();
    this.pump();
    this.changed();
  }

  discard(clientMsgId: string): void {
    const item = this.outbox.get(clientMsgId);
    if (!item || item.status === "sent" || item.client_msg_id === this.inFlight) return;
    this.outbox.delete(clientMsgId);
    this.saveOutbox();
    this.changed();
  }

  sendTyping(): void {
    const now = Date.now();
    if (now - this.lastTypingSent < TYPING_SEND_EVERY_MS) return;
    if (this.socket?.send({ type: "typing" })) this.lastTypingSent = now;
  }

  private saveOutbox(): void {
    const unsent = [...this.outbox.values()].filter((item) => item.status !== "sent");
    if (unsent.length) writeJson(this.outboxKey, unsent);
    else remove(this.outboxKey);
  }

  /** Send the oldest unsent message if nothing is in flight and the connection is live. */
  private pump(): void {
    if (this.inFlight !== null || !this.socket?.live) return;
    const now = Date.now();
    for (const item of this.outbox.values()) {
      if (item.status === "failed" || item.status === "sent") continue;
      if (item.status === "waiting" && (item.retry_at ?? 0) > now) {
        // The oldest one waits out a rate limit; later ones wait behind it to keep the order.
        window.clearTimeout(this.holdTimer);
        this.holdTimer = window.setTimeout(() => this.pump(), (item.retry_at ?? now) - now);
        return;
      }
      this.transmit(item);
      return;
    }
  }

  private transmit(item: PendingSend): void {
    const frame: Frame = { type: "send", client_msg_id: item.client_msg_id, text: item.text };
    if (item.reply_to_seq !== null) frame.reply_to_seq = item.reply_to_seq;
    if (item.media) frame.media_id = item.media.id;
    if (!this.socket?.send(frame)) return;
    item.status = "sending";
    this.inFlight = item.client_msg_id;
    window.clearTimeout(this.ackTimer);
    // No answer in time on a live socket: send again with the same id (never stored twice).
    this.ackTimer = window.setTimeout(() => {
      if (this.inFlight === item.client_msg_id) {
        this.inFlight = null;
        this.pump();
      }
    }, ACK_TIMEOUT_MS);
  }

  private stopInFlight(): void {
    // The socket went away: whatever was in flight is sent again on the next connection.
    window.clearTimeout(this.ackTimer);
    if (this.inFlight !== null) {
      const item = this.outbox.get(this.inFlight);
      if (item && item.status === "sending") item.status = "queued";
      this.inFlight = null;
    }
  }

  private onAck(frame: Frame): void {
    const id = typeof frame.client_msg_id === "string" ? frame.client_msg_id : "";
    const seq = seqOf(frame.seq);
    const item = this.outbox.get(id);
    if (item && seq !== null) {
      // Already shown, or older than anything loaded (a send retried long after): nothing to wait for.
      if (this.messages.has(seq) || (this.oldest !== null && seq < this.oldest)) this.outbox.delete(id);
      else {
        item.status = "sent";
        item.seq = seq;
      }
      this.saveOutbox();
    }
    if (this.inFlight === id) {
      this.inFlight = null;
      window.clearTimeout(this.ackTimer);
    }
    this.renewals = 0;
    // Sends go through again: the "too fast" notice has done its job (after people could read it).
    const notice = this.notice;
    if (notice?.topic && WAIT_NOTICES.has(notice.topic)) {
      window.setTimeout(
        () => {
          if (this.notice?.id === notice.id) this.dismissNotice();
        },
        Math.max(0, notice.shown_at + NOTICE_MIN_MS - Date.now()),
      );
    }
    this.pump();
    this.changed();
  }

  private onError(frame: Frame): void {
    const message = typeof frame.message === "string" ? frame.message : "Something went wrong.";
    const code = typeof frame.code === "string" ? frame.code : "error";
    const id = typeof frame.client_msg_id === "string" ? frame.client_msg_id : null;
    if (code === "account_deleted") {
      // This person's own account was deleted (here or on another device): the socket closes next.
      this.end("account_deleted");
      return;
    }
    const item = id ? this.outbox.get(id) : undefined;
    if (!item) {
      this.setNotice("error", message);
      return;
    }
    if (this.inFlight === id) {
      this.inFlight = null;
      window.clearTimeout(this.ackTimer);
    }
    if (AUTH_CODES.has(code) && this.renewals < MAX_RENEWALS) {
      this.renewals += 1;
      // The room token expired or was revoked: join again for a fresh one on a new socket; the send
      // goes out once more with the same id.
      item.status = "queued";
      this.saveOutbox();
      this.socket?.renew();
      this.changed();
      return;
    } else if (frame.retryable === true) {
      const seconds = typeof frame.retry_after === "number" ? frame.retry_after : 2;
      // `overloaded` waits less than a second: its milliseconds say how long exactly.
      const waitMs = typeof frame.retry_after_ms === "number" ? frame.retry_after_ms : seconds * 1000;
      item.status = "waiting";
      item.retry_at = Date.now() + waitMs;
      if (code === "rate_limited") {
        this.setNotice("error", `You're sending messages too fast. Sending again ${waitWords(seconds)}.`, code);
      } else if (code === "slow_mode") {
        this.setNotice("info", `Slow mode is on. Your message goes out ${waitWords(seconds)}.`, code);
      } else if (code === "service_unavailable") {
        this.setNotice("info", `ChatPop is briefly unavailable. Sending again ${waitWords(seconds)}.`, code);
      }
    } else {
      item.status = "failed";
      item.error = message;
    }
    this.saveOutbox();
    this.pump();
    this.changed();
  }
}
