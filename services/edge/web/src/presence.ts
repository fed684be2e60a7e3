/** Who is in the room and who is online now: a snapshot from the server kept up to date by `presence`
 * frames.
 *
 * The snapshot (`GET …/participants`) carries a `presence_version`; each frame says who came online
 * and who went offline at the next version. A frame one above the version held applies on top; a
 * jump means one was missed (a frame is lost when a connection drops), and so does a participant
 * nobody knew yet (they just joined): both read the snapshot again. Frames arriving while a snapshot
 * is on its way wait for it and apply above its version, so "snapshot + frames" always equals a fresh
 * snapshot. The snapshot is read again after every reconnect, never per change. */
import { ApiError, request, type Participant } from "./api";
import { frameHandlers, type ChatSession } from "./chat";
import type { Frame } from "./realtime";
import { canonicalCode, roomToken } from "./rooms";

export interface Person extends Participant {
  online: boolean;
}

interface Snapshot {
  participants: Person[];
  presence_version: number;
}

interface PresenceChange {
  online: string[];
  offline: string[];
  version: number;
}

// Re-reads are spread out a little: when many people join a big room at once, every client would
// otherwise ask at the same moment.
const REFETCH_DELAY_MS = 400;
const REFETCH_JITTER_MS = 1_200;

function ids(value: unknown): string[] | null {
  return Array.isArray(value) && value.every((id) => typeof id === "string") ? (value as string[]) : null;
}

function asChange(frame: Frame): PresenceChange | null {
  const online = ids(frame.online);
  const offline = ids(frame.offline);
  const version = frame.version;
  if (!online || !offline || typeof version !== "number" || !Number.isInteger(version)) return null;
  return { online, offline, version };
}

async function fetchSnapshot(code: string): Promise<Snapshot> {
  const path = `/api/v1/rooms/${encodeURIComponent(canonicalCode(code))}/participants`;
  try {
    return await request<Snapshot>("GET", path, { token: await roomToken(code), retries: 3 });
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) {
      return request<Snapshot>("GET", path, { token: await roomToken(code, true), retries: 3 });
    }
    throw error;
  }
}

export class RoomPeople {
  readonly people = new Map<string, Person>();
  /** The snapshot's version plus the frames applied on top; -1 before the first snapshot. */
  version = -1;
  loaded = false;
  error: string | null = null;

  private readonly listeners = new Set<() => void>();
  private fetching = false;
  private fetchAgain = false;
  private refetchTimer: number | undefined;
  private waiting: PresenceChange[] = [];
  private wasLive = false;
  private stopped = false;
  private readonly unsubscribe: () => void;

  constructor(private readonly chat: ChatSession) {
    // Every (re)connection reads the snapshot: frames sent while the socket was away are lost.
    this.unsubscribe = chat.subscribe(() => {
      const live = chat.state.kind === "live";
      if (live && !this.wasLive) void this.refresh();
      this.wasLive = live;
      this.changed();
    });
  }

  subscribe(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private changed(): void {
    for (const listener of this.listeners) listener();
  }

  stop(): void {
    this.stopped = true;
    window.clearTimeout(this.refetchTimer);
    this.unsubscribe();
    this.listeners.clear();
  }

  /** This person is online while their own connection is live, whatever the last frame said. */
  isOnline(id: string): boolean {
    if (id === this.chat.me.id) return this.chat.state.kind === "live";
    return this.people.get(id)?.online ?? false;
  }

  /** Online people first, then the host, then by name. */
  sorted(): Person[] {
    const everyone = [...this.people.values()].map((person) => {
      // Someone whose account was deleted reads under the neutral name, as the next snapshot has it.
      const forgotten = this.chat.forgottenName(person.id);
      const named = forgotten === null ? person : { ...person, username: forgotten, verified: false };
      return { ...named, online: this.isOnline(person.id) };
    });
    if (!this.people.has(this.chat.me.id) && this.loaded) {
      everyone.push({ ...this.chat.me, online: this.isOnline(this.chat.me.id) });
    }
    return everyone.sort(
      (a, b) =>
        Number(b.online) - Number(a.online) ||
        Number(b.is_host) - Number(a.is_host) ||
        a.username.localeCompare(b.username, undefined, { sensitivity: "base" }),
    );
  }

  onlineCount(): number {
    return this.sorted().filter((person) => person.online).length;
  }

  /** Read the snapshot now (again after the current read, if one is under way). */
  async refresh(): Promise<void> {
    if (this.stopped) return;
    if (this.fetching) {
      this.fetchAgain = true;
      return;
    }
    this.fetching = true;
    try {
      do {
        this.fetchAgain = false;
        const snapshot = await fetchSnapshot(this.chat.code);
        if (this.stopped) return;
        this.people.clear();
        for (const person of snapshot.participants) this.people.set(person.id, { ...person });
        // Authoritative even when lower than what we had: presence may have started over.
        this.version = snapshot.presence_version;
        this.loaded = true;
        this.error = null;
        const waiting = this.waiting.sort((a, b) => a.version - b.version);
        this.waiting = [];
        for (const change of waiting) {
          if (change.version > this.version) this.apply(change);
        }
      } while (this.fetchAgain);
    } catch (error) {
      this.error = error instanceof ApiError ? error.message : "Could not load the people in this room.";
    } finally {
      this.fetching = false;
      this.changed();
    }
  }

  private refreshSoon(): void {
    if (this.fetching) {
      this.fetchAgain = true;
      return;
    }
    if (this.refetchTimer !== undefined) return;
    const delay = REFETCH_DELAY_MS + Math.random() * REFETCH_JITTER_MS;
    this.refetchTimer = window.setTimeout(() => {
      this.refetchTimer = undefined;
      void this.refresh();
    }, delay);
  }

  onFrame(frame: Frame): void {
    const change = asChange(frame);
    if (!change) return;
    if (this.fetching || !this.loaded) {
      this.waiting.push(change);
      return;
    }
    this.apply(change);
    this.changed();
  }

  private apply(change: PresenceChange): void {
    if (change.version === this.version) return;
    if (change.version < this.version) {
      // Older than what we hold (reordered, or presence started over): only a snapshot can tell.
      this.refreshSoon();
      return;
    }
    const gap = change.version > this.version + 1;
    this.version = change.version;
    let stranger = false;
    for (const id of change.online) {
      const person = this.people.get(id);
      if (person) person.online = true;
      else stranger = true;
    }
    for (const id of change.offline) {
      const person = this.people.get(id);
      if (person) person.online = false;
    }
    if (gap || stranger) this.refreshSoon();
  }
}

const stores = new WeakMap<ChatSession, RoomPeople>();

/** The people of a chat session's room, made on first use and kept for the session's life. */
export function peopleOf(chat: ChatSession): RoomPeople {
  let store = stores.get(chat);
  if (!store) {
    store = new RoomPeople(chat);
    stores.set(chat, store);
  }
  return store;
}

frameHandlers.set("presence", (chat, frame) => stores.get(chat)?.onFrame(frame));
