/** What the host and the room's safety tools change on screen: bans, hidden and restored messages,
 * the host's pins and sticky message (the room's board), and this person's mutes.
 *
 * Bans, hides, restores, pins and the sticky message are entries of the room's log (ChatSession
 * accounts for their seqs). Pins and the sticky message are absolute and versioned like a message's
 * state: a `pinned`/`unpinned` frame replaces the list when its `pins_state_seq` is above the one
 * held, a `sticky` frame when its `sticky_seq` is; the newest history page's `board` (as of its
 * `last_seq`) applies when it is not older. The `mutes` frame is not an entry: it is the whole list,
 * sent after `ready` and after every change. */
import { ApiError, waitWords, type Message, type MessagePage, type ReportReason } from "./api";
import { frameHandlers, newestPageHandlers, type ChatSession } from "./chat";
import { asDeleted, messageFrom, seqOf, withHidden } from "./messageState";
import type { Frame } from "./realtime";
import { readJson, writeJson } from "./storage";
import { banParticipant, reportMessage, resolveReports, setMute, setPin, setSticky } from "./rooms";

export interface Board {
  /** The host's pins, newest first. */
  pinnedSeqs: number[];
  pinsStateSeq: number;
  /** Pinned messages as they stood when pinned, for the ones not loaded in the chat. */
  pinned: Map<number, Message>;
  sticky: string;
  stickySeq: number;
  /** "X was removed from the room" notes, by the seq of their entry. */
  removals: Map<number, string>;
  /** Seqs this person reported (one report per message). */
  reported: Set<number>;
}

const boards = new WeakMap<ChatSession, Board>();

export function boardOf(chat: ChatSession): Board {
  let board = boards.get(chat);
  if (!board) {
    const reported = readJson<number[]>(reportedKey(chat)) ?? [];
    board = { pinnedSeqs: [], pinsStateSeq: 0, pinned: new Map(), sticky: "", stickySeq: 0, removals: new Map(), reported: new Set(reported) };
    boards.set(chat, board);
  }
  return board;
}

function reportedKey(chat: ChatSession): string {
  return `chatpop.reported.${chat.me.id}`;
}

function seqList(value: unknown): number[] {
  return Array.isArray(value) ? value.map(seqOf).filter((n): n is number => n !== null) : [];
}

function applyPins(chat: ChatSession, seqs: number[], stateSeq: number, messages: Message[], orEqual: boolean): void {
  const board = boardOf(chat);
  if (stateSeq < board.pinsStateSeq || (!orEqual && stateSeq === board.pinsStateSeq)) return;
  board.pinnedSeqs = seqs;
  board.pinsStateSeq = stateSeq;
  for (const message of messages) board.pinned.set(message.seq, message);
  for (const seq of [...board.pinned.keys()]) if (!seqs.includes(seq)) board.pinned.delete(seq);
  chat.changed();
}

function applySticky(chat: ChatSession, text: string, stickySeq: number, orEqual: boolean): void {
  const board = boardOf(chat);
  if (stickySeq < board.stickySeq || (!orEqual && stickySeq === board.stickySeq)) return;
  board.sticky = text;
  board.stickySeq = stickySeq;
  chat.changed();
}

newestPageHandlers.add((chat: ChatSession, page: MessagePage) => {
  const raw = page.board;
  if (typeof raw !== "object" || raw === null) return;
  const wire = raw as Record<string, unknown>;
  const pins = Array.isArray(wire.pins) ? wire.pins : [];
  const messages: Message[] = [];
  const seqs: number[] = [];
  for (const pin of pins) {
    if (typeof pin !== "object" || pin === null) continue;
    const entry = pin as Record<string, unknown>;
    // Host pins sit above paid ones; only the host's are shown here.
    if (entry.source !== undefined && entry.source !== "host") continue;
    const message = messageFrom(entry.message);
    if (!message) continue;
    messages.push(message);
    seqs.push(message.seq);
  }
  applyPins(chat, seqs, seqOf(wire.pins_state_seq) ?? 0, messages, true);
  applySticky(chat, typeof wire.sticky_text === "string" ? wire.sticky_text : "", seqOf(wire.sticky_seq) ?? 0, true);
});

frameHandlers.set("banned", (chat, frame) => {
  const who = typeof frame.participant_id === "string" ? frame.participant_id : "";
  if (who === chat.me.id) {
    chat.end("banned");
    return;
  }
  const seq = seqOf(frame.seq);
  const name = typeof frame.username === "string" && frame.username ? frame.username : "Someone";
  if (seq !== null) boardOf(chat).removals.set(seq, name);
  chat.changed();
});

frameHandlers.set("hidden", (chat, frame) => {
  const target = seqOf(frame.target_seq);
  const stateSeq = seqOf(frame.state_seq) ?? seqOf(frame.seq);
  if (target === null || stateSeq === null) return;
  chat.changeMessage(target, (message) => withHidden(message, true, stateSeq));
});

frameHandlers.set("restored", (chat, frame) => {
  const target = seqOf(frame.target_seq);
  const stateSeq = seqOf(frame.state_seq) ?? seqOf(frame.seq);
  if (target === null || stateSeq === null) return;
  const text = typeof frame.text === "string" ? frame.text : undefined;
  chat.changeMessage(target, (message) => withHidden(message, false, stateSeq, text));
});

function onPins(chat: ChatSession, frame: Frame): void {
  const stateSeq = seqOf(frame.pins_state_seq) ?? seqOf(frame.seq);
  if (stateSeq === null) return;
  const message = frame.type === "pinned" ? messageFrom(frame.message) : null;
  applyPins(chat, seqList(frame.pinned_seqs), stateSeq, message ? [message] : [], false);
}
frameHandlers.set("pinned", onPins);
frameHandlers.set("unpinned", onPins);

frameHandlers.set("sticky", (chat, frame) => {
  const stickySeq = seqOf(frame.sticky_seq) ?? seqOf(frame.seq);
  if (stickySeq === null) return;
  applySticky(chat, typeof frame.text === "string" ? frame.text : "", stickySeq, false);
});

// The list changes from any of this person's devices: an unmute made elsewhere reads history again too.
frameHandlers.set("mutes", (chat, frame) => {
  const ids = Array.isArray(frame.participant_ids) ? frame.participant_ids.filter((id): id is string => typeof id === "string") : [];
  if (chat.setMuted(ids)) void chat.reloadHistory();
});

/** The host's pins as they stand now: the loaded message when there is one, else the pinned copy. */
export function pinnedMessages(chat: ChatSession): Message[] {
  const board = boardOf(chat);
  const shown: Message[] = [];
  for (const seq of board.pinnedSeqs) {
    const copy = board.pinned.get(seq);
    // A copy names its sender as pinned: one whose account was deleted since reads as forgotten.
    const message = chat.message(seq) ?? (copy && chat.asKnown(copy));
    if (message && !message.deleted) shown.push(message);
  }
  return shown;
}

// --- actions ------------------------------------------------------------------------------------

export function actionError(error: unknown, what: string): string {
  if (!(error instanceof ApiError)) return `Could not ${what}. Please try again.`;
  if (error.code === "rate_limited") return `Too many at once. Try again ${waitWords(error.retryAfter)}.`;
  if (error.code === "forbidden") return "Only the host can do that.";
  if (error.code === "message_not_found") return "That message is no longer available.";
  return error.message;
}

export async function ban(chat: ChatSession, participantId: string, tier: "session" | "device" | "ip", reason: string): Promise<void> {
  await banParticipant(chat.code, participantId, tier, reason);
}

export async function report(chat: ChatSession, seq: number, reason: ReportReason, text: string): Promise<void> {
  await reportMessage(chat.code, seq, reason, text);
  const board = boardOf(chat);
  board.reported.add(seq);
  writeJson(reportedKey(chat), [...board.reported].slice(-500));
  chat.changed();
}

export async function resolve(chat: ChatSession, seq: number, action: "restore" | "delete" | "dismiss"): Promise<void> {
  await resolveReports(chat.code, seq, action);
  if (action === "delete") chat.changeMessage(seq, (message) => asDeleted(message, true, 0));
}

export async function pin(chat: ChatSession, seq: number, on: boolean): Promise<void> {
  try {
    const state = await setPin(chat.code, seq, on);
    const message = chat.message(seq);
    applyPins(chat, seqList(state.pinned_seqs), state.pins_state_seq, on && message ? [message] : [], true);
  } catch (error) {
    chat.setNotice("error", actionError(error, on ? "pin that message" : "unpin that message"), "pin");
  }
}

export async function sticky(chat: ChatSession, text: string): Promise<void> {
  const state = await setSticky(chat.code, text.trim());
  applySticky(chat, state.text, state.sticky_seq, true);
}

/** Mute or unmute; an unmute reads history again, since its pages left that person's messages out. */
export async function mute(chat: ChatSession, participantId: string, on: boolean): Promise<void> {
  try {
    const result = await setMute(chat.code, participantId, on);
    // The socket's `mutes` frame may have brought the same list first (and read history then).
    if (chat.setMuted(result.mutes.map((m) => m.participant_id))) await chat.reloadHistory();
  } catch (error) {
    chat.setNotice("error", actionError(error, on ? "mute" : "unmute"), "mute");
  }
}
