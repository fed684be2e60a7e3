/** The room itself, live: a `room_updated` frame (the host changed a setting or closed the room)
 * applies at once, and every reconnect reads the room again, in case such a frame was missed while
 * the connection was away. */
import type { Room } from "./api";
import { frameHandlers, type ChatSession } from "./chat";
import { fetchRoom } from "./rooms";

function isRoom(value: unknown): value is Room {
  if (typeof value !== "object" || value === null) return false;
  const room = value as Partial<Room>;
  return typeof room.id === "string" && typeof room.code === "string" && typeof room.name === "string";
}

frameHandlers.set("room_updated", (chat, frame) => {
  if (isRoom(frame.room)) chat.applyRoom(frame.room);
});

const followed = new WeakSet<ChatSession>();

/** Read the room again whenever the chat's connection comes back (not on the first connection: the
 * page has just read it). Returns a function that stops following. */
export function followRoom(chat: ChatSession): () => void {
  if (followed.has(chat)) return () => undefined;
  followed.add(chat);
  let connectedBefore = false;
  let wasLive = false;
  const unsubscribe = chat.subscribe(() => {
    const live = chat.state.kind === "live";
    if (live && !wasLive) {
      if (connectedBefore) {
        fetchRoom(chat.code).then(
          (room) => chat.applyRoom(room),
          () => undefined, // The next reconnect or room_updated frame brings it.
        );
      }
      connectedBefore = true;
    }
    wasLive = live;
  });
  return () => {
    followed.delete(chat);
    unsubscribe();
  };
}
