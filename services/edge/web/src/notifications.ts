/** Browser notifications for new messages: asked for only on a tap (browsers require a gesture and
 * people dislike unprompted asks), shown only while the tab is hidden, one per room at a time. */
import type { Message } from "./api";
import { mediaWords } from "./media";
import { readJson, writeJson } from "./storage";

const WANTED_KEY = "chatpop.notifications";
const BODY_CHARS = 140;

export type NotificationState = "on" | "off" | "blocked" | "unsupported";

function supported(): boolean {
  return typeof window !== "undefined" && "Notification" in window;
}

export function notificationState(): NotificationState {
  if (!supported()) return "unsupported";
  if (Notification.permission === "denied") return "blocked";
  return Notification.permission === "granted" && readJson<boolean>(WANTED_KEY) === true ? "on" : "off";
}

/** Turn notifications on (asking the browser's permission first if needed) or off. Call from a tap. */
export async function setNotifications(on: boolean): Promise<NotificationState> {
  if (!supported()) return "unsupported";
  if (!on) {
    writeJson(WANTED_KEY, false);
    return notificationState();
  }
  const permission = Notification.permission === "default" ? await Notification.requestPermission() : Notification.permission;
  writeJson(WANTED_KEY, permission === "granted");
  return notificationState();
}

/** Tell about a message from someone else, if notifications are on and this tab is out of sight. */
export function notifyMessage(roomName: string, roomCode: string, message: Message): void {
  if (notificationState() !== "on" || document.visibilityState !== "hidden") return;
  const text = (message.text || mediaWords(message.media)).replace(/\s+/g, " ").trim();
  try {
    const shown = new Notification(`${message.sender.username} in ${roomName}`, {
      body: text.length > BODY_CHARS ? `${text.slice(0, BODY_CHARS - 1)}…` : text,
      // One notification per room, replaced by the newest, rather than a pile.
      tag: `chatpop-${roomCode}`,
    });
    shown.onclick = () => {
      window.focus();
      shown.close();
    };
  } catch {
    // Some browsers (Android Chrome) only notify through a service worker; the title count remains.
  }
}
