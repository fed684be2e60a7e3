/** What later entries of a room's log changed about a message (reactions, deletion), and how such
 * changes apply.
 *
 * State is absolute and versioned: every message carries the seq of the last entry that changed it
 * (`state_seq`, 0 for none), and a change applies only when it is newer than what the message holds.
 * A history page (state as of its read) and a live change can therefore arrive in any order and the
 * screen ends up the same. A deletion is final: once a message is known to be deleted, nothing
 * brings its text or reactions back. */
import type { MediaKind, MediaState, Message, MessageMedia, Reactions, Sender, Tip } from "./api";

/** The reactions a person can put on a message, in the order they are offered and shown. */
export const EMOJIS = ["👍", "❤️", "😂", "😮", "😢", "😡"] as const;

export const EMOJI_NAMES: Record<string, string> = {
  "👍": "thumbs up",
  "❤️": "heart",
  "😂": "laughing",
  "😮": "surprised",
  "😢": "sad",
  "😡": "angry",
};

/** A seq (or count) as the edge sends it: a positive whole number, else null. */
export function seqOf(value: unknown): number | null {
  return typeof value === "number" && Number.isInteger(value) && value > 0 ? value : null;
}

/** Counts above zero only; anything else the server might send is ignored. */
export function reactionsFrom(value: unknown): Reactions {
  const counts: Reactions = {};
  if (typeof value !== "object" || value === null || Array.isArray(value)) return counts;
  for (const [emoji, count] of Object.entries(value as Record<string, unknown>)) {
    const n = seqOf(count);
    if (n !== null) counts[emoji] = n;
  }
  return counts;
}

export function emojisFrom(value: unknown): string[] {
  return Array.isArray(value) ? [...new Set(value.filter((e): e is string => typeof e === "string"))] : [];
}

function isSender(value: unknown): value is Sender {
  if (typeof value !== "object" || value === null) return false;
  const sender = value as Partial<Sender>;
  return typeof sender.participant_id === "string" && typeof sender.username === "string";
}

/** A tip's details from a `tip` frame or a history item of `kind: "tip"`; null for anything else. */
export function tipFrom(wire: Record<string, unknown>): Tip | null {
  if (wire.type !== "tip" && wire.kind !== "tip") return null;
  const tip = wire.tip;
  if (typeof tip !== "object" || tip === null) return null;
  const fields = tip as Record<string, unknown>;
  const amount = seqOf(fields.amount_cents);
  if (amount === null) return null;
  return {
    order_id: typeof fields.order_id === "string" ? fields.order_id : "",
    amount_cents: amount,
    currency: typeof fields.currency === "string" ? fields.currency : "",
    note: typeof fields.note === "string" ? fields.note : "",
  };
}

const MEDIA_KINDS: readonly MediaKind[] = ["photo", "voice", "video"];
const MEDIA_STATES: readonly MediaState[] = ["PENDING", "READY", "DELETING", "DELETED"];

function wholeOf(value: unknown): number {
  return typeof value === "number" && Number.isFinite(value) && value > 0 ? Math.round(value) : 0;
}

/** A media kind or state however the edge spells it ("photo", "MEDIA_KIND_PHOTO", "ready"…). */
function enumOf<T extends string>(value: unknown, prefix: string, known: readonly T[], upper: boolean): T | null {
  if (typeof value !== "string") return null;
  const bare = value.toUpperCase().replace(prefix, "");
  const named = (upper ? bare : bare.toLowerCase()) as T;
  return known.includes(named) ? named : null;
}

export function mediaKindOf(value: unknown): MediaKind | null {
  return enumOf(value, "MEDIA_KIND_", MEDIA_KINDS, false);
}

export function mediaStateOf(value: unknown): MediaState | null {
  return enumOf(value, "MEDIA_STATE_", MEDIA_STATES, true);
}

/** The media a message carries (null for none, or for anything that is not a media record). */
export function mediaFrom(value: unknown): MessageMedia | null {
  if (typeof value !== "object" || value === null) return null;
  const wire = value as Record<string, unknown>;
  const kind = mediaKindOf(wire.kind);
  if (typeof wire.id !== "string" || !wire.id || kind === null) return null;
  return {
    id: wire.id,
    kind,
    state: mediaStateOf(wire.state) ?? "READY",
    content_type: typeof wire.content_type === "string" ? wire.content_type : "",
    width: wholeOf(wire.width),
    height: wholeOf(wire.height),
    duration_ms: wholeOf(wire.duration_ms),
    variants: Array.isArray(wire.variants) ? wire.variants.filter((v): v is string => typeof v === "string") : [],
  };
}

/** Media once removed stays removed, whatever older news says; otherwise the newer record wins. */
function newerMedia(current: MessageMedia | null | undefined, incoming: MessageMedia | null | undefined): MessageMedia | null {
  if (!current) return incoming ?? null;
  if (!incoming || incoming.id !== current.id) return current;
  const gone = (m: MessageMedia): boolean => m.state === "DELETED" || m.state === "DELETING";
  if (gone(current) && !gone(incoming)) return current;
  return incoming;
}

/** A message as the client keeps it, from a `message` frame or a history page; null when it is not
 * one. Servers that predate reactions and deletion send no state: it reads as "unchanged". A tip
 * (a `tip` frame, or a history item of `kind: "tip"`) is kept the same way, with its `tip`. */
export function messageFrom(raw: unknown): Message | null {
  if (typeof raw !== "object" || raw === null) return null;
  const wire = raw as Record<string, unknown>;
  const seq = seqOf(wire.seq);
  if (seq === null || !isSender(wire.sender)) return null;
  const deleted = wire.deleted === true;
  const tip = tipFrom(wire);
  const media = deleted ? null : mediaFrom(wire.media);
  return {
    ...(tip ? { tip } : {}),
    ...(media ? { media } : {}),
    seq,
    id: typeof wire.id === "string" ? wire.id : "",
    room_id: typeof wire.room_id === "string" ? wire.room_id : "",
    sender: {
      participant_id: wire.sender.participant_id,
      username: wire.sender.username,
      is_host: wire.sender.is_host === true,
      verified: wire.sender.verified === true,
    },
    text: deleted || typeof wire.text !== "string" ? "" : wire.text,
    reply_to_seq: seqOf(wire.reply_to_seq),
    client_msg_id: typeof wire.client_msg_id === "string" ? wire.client_msg_id : "",
    created_at: typeof wire.created_at === "string" ? wire.created_at : null,
    deleted,
    deleted_by_host: deleted && wire.deleted_by_host === true,
    hidden: !deleted && wire.hidden === true,
    reactions: deleted ? {} : reactionsFrom(wire.reactions),
    my_reactions: deleted ? [] : emojisFrom(wire.my_reactions),
    state_seq: seqOf(wire.state_seq) ?? 0,
  };
}

/** Marks a message deleted for good: its text and reactions go, its place stays. */
export function asDeleted(message: Message, byHost: boolean, stateSeq: number): Message {
  if (message.deleted && message.state_seq >= stateSeq) return message;
  return {
    ...message,
    text: "",
    media: null,
    deleted: true,
    deleted_by_host: message.deleted ? message.deleted_by_host : byHost,
    hidden: false,
    reactions: {},
    my_reactions: [],
    state_seq: Math.max(message.state_seq, stateSeq),
  };
}

/** The sender's account was deleted (a `participant_forgotten` entry): the message reads under the
 * neutral name from now on, without a badge, and when their messages were erased it is deleted as
 * well (not a tip: tips stay, renamed). The same object when nothing changes. */
export function asForgotten(message: Message, username: string, erased: boolean, stateSeq: number): Message {
  const renamed =
    message.sender.username === username && !message.sender.verified
      ? message
      : { ...message, sender: { ...message.sender, username, verified: false } };
  return erased && !renamed.tip ? asDeleted(renamed, false, stateSeq) : renamed;
}

/** The same message seen again (a page after a live frame, a resume after a page): the newer state
 * wins, and a deletion seen either way stays. */
export function mergeMessage(current: Message, incoming: Message): Message {
  if (incoming.sender.username !== current.sender.username) {
    // Names change only when the sender's account is deleted (the session holds on to that, so an
    // older page cannot bring the old name back): the page names them as they are now.
    return mergeMessage({ ...current, sender: { ...current.sender, ...incoming.sender } }, incoming);
  }
  if (incoming.deleted && !current.deleted) {
    return asDeleted(current, incoming.deleted_by_host, incoming.state_seq);
  }
  // Media is removed apart from the message's versioned state (a room closed, its retention ran out).
  const media = current.deleted ? null : newerMedia(current.media, incoming.media);
  const base = media !== (current.media ?? null) && media?.state !== current.media?.state ? { ...current, media } : current;
  if (incoming.state_seq <= base.state_seq) return base;
  if (base.deleted) return { ...base, state_seq: incoming.state_seq };
  return {
    ...base,
    hidden: incoming.hidden,
    // A page gives a hidden message's text to the host alone: what is held stays for everyone else.
    text: incoming.text || base.text,
    reactions: incoming.reactions,
    my_reactions: incoming.my_reactions,
    state_seq: incoming.state_seq,
  };
}

/** A reaction entry: the target's counts after it, and (when it was this person's) their own set. */
export function withReaction(
  message: Message,
  change: { stateSeq: number; reactions: Reactions; emoji: string; added: boolean; mine: boolean },
): Message {
  if (message.deleted || change.stateSeq <= message.state_seq) return message;
  let mineNow = message.my_reactions;
  if (change.mine) {
    mineNow = change.added
      ? [...new Set([...mineNow, change.emoji])]
      : mineNow.filter((emoji) => emoji !== change.emoji);
  }
  return { ...message, reactions: change.reactions, my_reactions: mineNow, state_seq: change.stateSeq };
}

/** The answer to this person's own reaction request: absolute, so the same state (equal seq) applies
 * as well as a newer one. */
export function withOwnReactions(message: Message, stateSeq: number, reactions: Reactions, mine: string[]): Message {
  if (message.deleted || stateSeq < message.state_seq) return message;
  return { ...message, reactions, my_reactions: mine, state_seq: stateSeq };
}

export interface ShownReaction {
  emoji: string;
  count: number;
  mine: boolean;
  /** Waiting for the server to confirm this person's tap. */
  busy: boolean;
}

/** The reactions to show under a message: known emojis in their order, then any others the server
 * sends, each with this person's own taps (not yet confirmed) already counted in. */
export function shownReactions(message: Message, pending: ReadonlyMap<string, boolean> | undefined): ShownReaction[] {
  if (message.deleted) return [];
  const order = [...EMOJIS, ...Object.keys(message.reactions).filter((e) => !(EMOJIS as readonly string[]).includes(e))];
  const shown: ShownReaction[] = [];
  for (const emoji of order) {
    const held = message.my_reactions.includes(emoji);
    const wanted = pending?.get(emoji);
    const mine = wanted ?? held;
    let count = message.reactions[emoji] ?? 0;
    if (mine && !held) count += 1;
    else if (!mine && held) count = Math.max(0, count - 1);
    if (count > 0 || mine) shown.push({ emoji, count: Math.max(count, mine ? 1 : 0), mine, busy: wanted !== undefined });
  }
  return shown;
}

/** Reports hid the message pending review (`hidden`), or the host restored it with its `text`. */
export function withHidden(message: Message, hidden: boolean, stateSeq: number, text?: string): Message {
  if (message.deleted || stateSeq <= message.state_seq) return message;
  return { ...message, hidden, text: text !== undefined && text !== "" ? text : message.text, state_seq: stateSeq };
}
