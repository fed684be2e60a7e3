/** Reactions and deletions: their live frames, and this person's own taps; and a deleted account's
 * participant forgotten (`participant_forgotten`: renamed, and with its messages erased, deleted).
 *
 * Both are entries of the room's log (ChatSession accounts for their seqs); here they change the
 * message they target, each only when newer than the state the message holds (messageState.ts).
 * Putting an emoji on a message shows at once, counted in and highlighted, until the server answers
 * with the message's state; a refusal takes it back and says why in the chat's notice. */
import { ApiError, waitWords } from "./api";
import { frameHandlers, type ChatSession } from "./chat";
import { asDeleted, emojisFrom, reactionsFrom, seqOf, withOwnReactions, withReaction } from "./messageState";
import type { Frame } from "./realtime";
import { deleteMessage, setReaction } from "./rooms";

/** The seq of the state a change leaves its message in: the change's own seq. */
function stateSeqOf(frame: Frame): number | null {
  return seqOf(frame.state_seq) ?? seqOf(frame.seq);
}

frameHandlers.set("reaction", (chat, frame) => {
  const target = seqOf(frame.target_seq);
  const stateSeq = stateSeqOf(frame);
  if (target === null || stateSeq === null || typeof frame.emoji !== "string") return;
  const change = {
    stateSeq,
    reactions: reactionsFrom(frame.reactions),
    emoji: frame.emoji,
    added: frame.added === true,
    mine: frame.participant_id === chat.me.id,
  };
  chat.changeMessage(target, (message) => withReaction(message, change));
});

frameHandlers.set("deleted", (chat, frame) => {
  const target = seqOf(frame.target_seq);
  const stateSeq = stateSeqOf(frame);
  if (target === null || stateSeq === null) return;
  const byHost = frame.by_host === true;
  chat.changeMessage(target, (message) => asDeleted(message, byHost, stateSeq));
  reactionTaps.get(chat)?.delete(target);
});

// Every message of the participant reads under the neutral name from now on; with `messages_erased`
// each is deleted too, as a `deleted` frame per message would have (none comes).
frameHandlers.set("participant_forgotten", (chat, frame) => {
  const who = typeof frame.participant_id === "string" ? frame.participant_id : "";
  const name = typeof frame.username === "string" ? frame.username : "";
  const seq = seqOf(frame.seq);
  if (!who || !name || seq === null) return;
  const erased = frame.messages_erased === true;
  chat.forgetParticipant(who, name, erased, seq);
  if (!erased) return;
  const taps = reactionTaps.get(chat);
  for (const target of [...(taps?.keys() ?? [])]) {
    if (chat.message(target)?.sender.participant_id === who) taps?.delete(target);
  }
});

// --- this person's taps ------------------------------------------------------------------------

/** chat → message seq → emoji → on/off asked for and not yet answered. */
const reactionTaps = new WeakMap<ChatSession, Map<number, Map<string, boolean>>>();

/** This person's taps on message `seq` still waiting for the server (emoji → on). */
export function pendingReactions(chat: ChatSession, seq: number): ReadonlyMap<string, boolean> | undefined {
  return reactionTaps.get(chat)?.get(seq);
}

function reactionError(error: unknown): string {
  if (!(error instanceof ApiError)) return "Could not react to that message. Please try again.";
  if (error.code === "rate_limited") return `You're reacting too fast. Try again ${waitWords(error.retryAfter)}.`;
  if (error.code === "message_deleted") return "That message was deleted.";
  if (error.code === "message_not_found") return "That message is no longer available.";
  return error.message;
}

/** Put `emoji` on message `seq` (`on`) or take it off. A tap on an emoji still on its way is ignored. */
export async function toggleReaction(chat: ChatSession, seq: number, emoji: string, on: boolean): Promise<void> {
  let taps = reactionTaps.get(chat);
  if (!taps) reactionTaps.set(chat, (taps = new Map()));
  let forMessage = taps.get(seq);
  if (forMessage?.has(emoji)) return;
  if (!forMessage) taps.set(seq, (forMessage = new Map()));
  forMessage.set(emoji, on);
  chat.changed();
  try {
    const result = await setReaction(chat.code, seq, emoji, on);
    const stateSeq = typeof result.state_seq === "number" ? result.state_seq : 0;
    const reactions = reactionsFrom(result.reactions);
    const mine = emojisFrom(result.my_reactions);
    chat.changeMessage(seq, (message) => withOwnReactions(message, stateSeq, reactions, mine));
    // Reacting works again: a notice about an earlier refusal has done its job.
    if (chat.notice?.topic === "reaction") chat.dismissNotice();
  } catch (error) {
    chat.setNotice("error", reactionError(error), "reaction");
  } finally {
    const still = taps.get(seq);
    still?.delete(emoji);
    if (still && still.size === 0) taps.delete(seq);
    chat.changed();
  }
}

function deletionError(error: unknown): string {
  if (!(error instanceof ApiError)) return "Could not delete that message. Please try again.";
  if (error.code === "forbidden") return "You can only delete your own messages.";
  if (error.code === "message_not_found") return "That message is no longer available.";
  if (error.code === "rate_limited") return `Too many deletions at once. Try again ${waitWords(error.retryAfter)}.`;
  return error.message;
}

/** Delete message `seq` for everyone; true when it is gone. Its `deleted` frame follows for every
 * screen; this one shows it at once. */
export async function removeMessage(chat: ChatSession, seq: number): Promise<boolean> {
  try {
    await deleteMessage(chat.code, seq);
  } catch (error) {
    chat.setNotice("error", deletionError(error), "deletion");
    return false;
  }
  // Deletion is final, so it may show before its entry's seq is known; the entry still applies.
  chat.changeMessage(seq, (message) => asDeleted(message, message.sender.participant_id !== chat.me.id, 0));
  return true;
}
