/** Rooms over REST, and this device's place in each room (its username and room token). */
import {
  ApiError,
  request,
  type CreateRoomBody,
  type DeleteResult,
  type JoinResponse,
  type MessagePage,
  type MyRoom,
  type Participant,
  type ReactionResult,
  type Room,
  type RoomChanges,
  type Suggestion,
  type UsernameAvailability,
  type BackRoomInfo,
  type Ban,
  type BanTier,
  type Mute,
  type PinsState,
  type ReportedMessage,
  type ReportReason,
  type StickyState,
} from "./api";
import { account, accessSession, activeIdentity, existingDeviceSession, type StoredSession, withAccess } from "./auth";
import { readJson, writeJson } from "./storage";

export interface RoomSession {
  username: string;
  participant: Participant;
  room_token: string;
  expires_at: number;
}

// Renew a room token this long before it expires (joining again is idempotent).
const TOKEN_MARGIN_MS = 60_000;
const HOSTED_KEY = "chatpop.hosted";

export function canonicalCode(code: string): string {
  return code.trim().toUpperCase();
}

function sessionKey(code: string): string | null {
  const identity = activeIdentity();
  return identity ? `chatpop.room.${identity.id}.${canonicalCode(code)}` : null;
}

export function savedRoomSession(code: string): RoomSession | null {
  const key = sessionKey(code);
  return key ? readJson<RoomSession>(key) : null;
}

function saveRoomSession(code: string, joined: JoinResponse, username: string): RoomSession {
  const session: RoomSession = {
    username: joined.participant.username || username,
    participant: joined.participant,
    room_token: joined.room_token,
    expires_at: Date.now() + joined.room_token_expires_in * 1000,
  };
  const key = sessionKey(code);
  if (key) writeJson(key, session);
  return session;
}

/** Rooms this browser created: their host needs no access code, so the join form hides the field. */
export function hostsRoom(code: string): boolean {
  const identity = activeIdentity();
  const hosted = readJson<Record<string, string[]>>(HOSTED_KEY) ?? {};
  return identity ? (hosted[identity.id] ?? []).includes(canonicalCode(code)) : false;
}

function rememberHosted(code: string): void {
  const identity = activeIdentity();
  if (!identity) return;
  const hosted = readJson<Record<string, string[]>>(HOSTED_KEY) ?? {};
  hosted[identity.id] = [...new Set([...(hosted[identity.id] ?? []), canonicalCode(code)])].slice(-50);
  writeJson(HOSTED_KEY, hosted);
}

export function fetchRoom(code: string, signal?: AbortSignal): Promise<Room> {
  return request<Room>("GET", `/api/v1/rooms/${encodeURIComponent(canonicalCode(code))}`, { retries: 3, signal });
}

export async function createRoom(body: CreateRoomBody): Promise<Room> {
  const room = await withAccess((token) => request<Room>("POST", "/api/v1/rooms", { body, token }));
  rememberHosted(room.code);
  return room;
}

export async function joinRoom(code: string, username: string, accessCode: string | null): Promise<RoomSession> {
  const body: Record<string, string> = { username };
  if (accessCode) body.access_code = accessCode;
  const joined = await withAccess((token) =>
    request<JoinResponse>("POST", `/api/v1/rooms/${encodeURIComponent(canonicalCode(code))}/join`, {
      body,
      token,
    }),
  );
  return saveRoomSession(code, joined, username);
}

/** The room token for `code`, joining again (same username, idempotent) when it is about to expire
 * or `force` says the server refused it. */
export async function roomToken(code: string, force = false): Promise<string> {
  const saved = savedRoomSession(code);
  const mainCode = backRoomParent(code);
  if (!saved && !mainCode) throw new ApiError(401, "not_joined", "Join the room first.");
  if (saved && !force && saved.expires_at - Date.now() > TOKEN_MARGIN_MS) return saved.room_token;
  // A Back Room is never joined by its code: its token comes from entering it from the main room.
  if (mainCode) return (await enterBackRoom(mainCode)).session.room_token;
  if (!saved) throw new ApiError(401, "not_joined", "Join the room first.");
  const joined = await withAccess((token) =>
    request<JoinResponse>("POST", `/api/v1/rooms/${encodeURIComponent(canonicalCode(code))}/join`, {
      body: { username: saved.username },
      token,
      retries: 5,
    }),
  );
  return saveRoomSession(code, joined, saved.username).room_token;
}

/** A call made with this device's room token, renewed once (joining again) if the server refuses it. */
export async function withRoomToken<T>(code: string, call: (token: string) => Promise<T>): Promise<T> {
  const token = await roomToken(code);
  try {
    return await call(token);
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) return call(await roomToken(code, true));
    throw error;
  }
}

function messagesPath(code: string): string {
  return `/api/v1/rooms/${encodeURIComponent(canonicalCode(code))}/messages`;
}

/** A page of history, newest first (room token, renewed once if refused). */
export function fetchMessages(
  code: string,
  beforeSeq: number | null,
  limit = 50,
  signal?: AbortSignal,
): Promise<MessagePage> {
  const params = new URLSearchParams({ limit: String(limit) });
  if (beforeSeq !== null) params.set("before_seq", String(beforeSeq));
  const path = `${messagesPath(code)}?${params}`;
  return withRoomToken(code, (token) => request<MessagePage>("GET", path, { token, retries: 5, signal }));
}

/** Put this person's `emoji` on message `seq` (`on`) or take it off. Idempotent, so retried. */
export function setReaction(code: string, seq: number, emoji: string, on: boolean): Promise<ReactionResult> {
  const path = `${messagesPath(code)}/${seq}/reactions`;
  return withRoomToken(code, (token) => request<ReactionResult>("POST", path, { body: { emoji, on }, token, retries: 2 }));
}

/** Delete message `seq` (one's own, or any as the host). Idempotent, so retried. */
export function deleteMessage(code: string, seq: number): Promise<DeleteResult> {
  const path = `${messagesPath(code)}/${seq}`;
  return withRoomToken(code, (token) => request<DeleteResult>("DELETE", path, { token, retries: 2 }));
}

export class SuggestError extends ApiError {}

/** A dice-rolled username, or null when this edge has no dice yet (plain username field instead).
 * Failures of the roll itself are SuggestErrors; others (no session could be made) are ApiErrors. */
export async function suggestUsername(code: string): Promise<Suggestion | null> {
  const path = `/api/v1/rooms/${encodeURIComponent(canonicalCode(code))}/usernames/suggest`;
  try {
    return await withAccess((token) => request<Suggestion>("POST", path, { token, body: {} }).catch(asSuggestError));
  } catch (error) {
    if (error instanceof SuggestError && (error.status === 404 || error.status === 405 || error.status === 501)) {
      return null;
    }
    throw error;
  }
}

function asSuggestError(error: unknown): never {
  if (error instanceof ApiError && !(error instanceof SuggestError)) {
    // 401 stays a plain ApiError so withAccess renews the token and rolls once more.
    if (error.status !== 401) throw new SuggestError(error.status, error.code, error.message, error.retryAfter);
  }
  throw error;
}

/** Whether a username can be reserved, or null when this edge cannot tell. */
export async function usernameAvailability(name: string, signal?: AbortSignal): Promise<UsernameAvailability | null> {
  try {
    const answer = await request<UsernameAvailability>(
      "GET",
      `/api/v1/auth/usernames/${encodeURIComponent(name)}`,
      { signal },
    );
    return typeof answer.available === "boolean" ? answer : null;
  } catch (error) {
    if (error instanceof ApiError) {
      if (error.status === 409) return { available: false, reason: error.code, message: error.message };
      if (error.status === 422 || error.status === 400) {
        return { available: false, reason: error.code, message: error.message };
      }
      return null;
    }
    throw error;
  }
}

function roomPath(code: string, rest = ""): string {
  return `/api/v1/rooms/${encodeURIComponent(canonicalCode(code))}${rest}`;
}

/** The host edits the room (their access token); returns the room as it is now. */
export function updateRoom(code: string, changes: RoomChanges): Promise<Room> {
  return withAccess((token) => request<Room>("PATCH", roomPath(code), { body: changes, token }));
}

/** The host closes the room for good; with `erase`, delete everything in it too (history, media: cannot be undone). */
export function closeRoom(code: string, erase = false): Promise<Room> {
  return withAccess((token) => request<Room>("POST", roomPath(code, "/close"), { token, body: { erase }, retries: 2 }));
}

/** A private room's access code, for its host; null when it was set before codes could be shown. */
export async function fetchAccessCode(code: string): Promise<string | null> {
  const shown = await withAccess((token) =>
    request<{ access_code: string | null }>("GET", roomPath(code, "/access-code"), { token, retries: 2 }),
  );
  return shown.access_code;
}

/** Tell the server how far this person has read the room (for unread counts on every device). */
export async function markRead(code: string, seq: number): Promise<void> {
  const token = await roomToken(code);
  await request<{ read_seq: number }>("POST", roomPath(code, "/read"), { body: { seq }, token, retries: 1 });
}

/** The same as markRead, for a page that is going away: no waiting for a token, and the request
 * outlives the page (`keepalive`). Best effort: nothing but an unread count depends on it. */
export function markReadOnLeave(code: string, seq: number): void {
  const token = savedRoomSession(code)?.room_token;
  if (!token) return;
  void fetch(roomPath(code, "/read"), {
    method: "POST",
    keepalive: true,
    credentials: "omit",
    headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}` },
    body: JSON.stringify({ seq }),
  }).catch(() => undefined);
}

async function listMyRooms(session: StoredSession): Promise<MyRoom[]> {
  const mine = await request<{ rooms: MyRoom[] }>("GET", "/api/v1/me/rooms", {
    token: session.access_token,
    retries: 2,
  });
  return mine.rooms;
}

export interface MyRoomLists {
  /** The signed-in account's rooms (on every device), or null when nobody is signed in. */
  account: MyRoom[] | null;
  /** This device's rooms without an account (empty when it never had a session). */
  device: MyRoom[];
}

/** Rooms I host or joined: the account's everywhere, and this device's anonymous ones. */
export async function fetchMyRooms(): Promise<MyRoomLists> {
  const signedIn = account() ? await accessSession() : null;
  const device = await existingDeviceSession();
  const [accountRooms, deviceRooms] = await Promise.all([
    signedIn && signedIn.identity.kind === "user" ? listMyRooms(signedIn) : Promise.resolve(null),
    device ? listMyRooms(device) : Promise.resolve([]),
  ]);
  return { account: accountRooms, device: deviceRooms };
}

// --- moderation (room token; the host's for everything but reports and mutes) -------------------

export function banParticipant(code: string, participantId: string, tier: BanTier, reason: string): Promise<{ ban: Ban }> {
  const body = { participant_id: participantId, tier, reason };
  return withRoomToken(code, (token) => request<{ ban: Ban }>("POST", roomPath(code, "/bans"), { body, token, retries: 2 }));
}

export function unbanParticipant(code: string, banId: string): Promise<{ ban: Ban }> {
  const path = roomPath(code, `/bans/${encodeURIComponent(banId)}`);
  return withRoomToken(code, (token) => request<{ ban: Ban }>("DELETE", path, { token, retries: 2 }));
}

export async function listBans(code: string): Promise<Ban[]> {
  const list = await withRoomToken(code, (token) => request<{ bans: Ban[] }>("GET", roomPath(code, "/bans"), { token, retries: 2 }));
  return list.bans;
}

export function reportMessage(code: string, seq: number, reason: ReportReason, text: string): Promise<{ created: boolean; hidden: boolean }> {
  const path = `${messagesPath(code)}/${seq}/reports`;
  return withRoomToken(code, (token) => request("POST", path, { body: { reason, text }, token, retries: 2 }));
}

export function listReports(code: string, beforeSeq: number | null = null): Promise<{ items: ReportedMessage[]; has_more: boolean }> {
  const params = new URLSearchParams({ limit: "50" });
  if (beforeSeq !== null) params.set("before_seq", String(beforeSeq));
  return withRoomToken(code, (token) => request("GET", roomPath(code, `/reports?${params}`), { token, retries: 2 }));
}

export function resolveReports(code: string, seq: number, action: "restore" | "delete" | "dismiss"): Promise<unknown> {
  return withRoomToken(code, (token) =>
    request("POST", roomPath(code, `/reports/${seq}/resolution`), { body: { action }, token, retries: 2 }),
  );
}

export function setPin(code: string, seq: number, pinned: boolean): Promise<PinsState> {
  return withRoomToken(code, (token) => request<PinsState>(pinned ? "PUT" : "DELETE", roomPath(code, `/pins/${seq}`), { token, retries: 2 }));
}

export function setSticky(code: string, text: string): Promise<StickyState> {
  return withRoomToken(code, (token) =>
    text ? request<StickyState>("PUT", roomPath(code, "/sticky"), { body: { text }, token, retries: 2 })
      : request<StickyState>("DELETE", roomPath(code, "/sticky"), { token, retries: 2 }),
  );
}

export function setMute(code: string, participantId: string, muted: boolean): Promise<{ mutes: Mute[] }> {
  const path = roomPath(code, `/mutes/${encodeURIComponent(participantId)}`);
  return withRoomToken(code, (token) => request<{ mutes: Mute[] }>(muted ? "PUT" : "DELETE", path, { token, retries: 2 }));
}

export async function listMutes(code: string): Promise<Mute[]> {
  const list = await withRoomToken(code, (token) => request<{ mutes: Mute[] }>("GET", roomPath(code, "/mutes"), { token, retries: 2 }));
  return list.mutes;
}

// --- the Back Room (paid seats) -------------------------------------------------------------------

/** A Back Room seat as its host and holders see it. */
export interface Seat {
  /** The holder's participant in the main room. */
  participant_id: string;
  username: string;
  granted_at: string | null;
}

export interface SeatList {
  seats: Seat[];
  back_room: BackRoomInfo | null;
}

interface EnterAnswer {
  back_room: Room;
  participant: Participant;
  room_token: string;
  room_token_expires_in: number;
}

export interface BackRoomEntry {
  /** The Back Room: a room of its own, with its own code, reached only through its main room. */
  room: Room;
  session: RoomSession;
}

// Back Room code → its main room's code, so the Back Room's token is renewed by entering again.
const BACK_ROOMS_KEY = "chatpop.backRooms";

export function backRoomParent(code: string): string | null {
  return (readJson<Record<string, string>>(BACK_ROOMS_KEY) ?? {})[canonicalCode(code)] ?? null;
}

/** This device entered the Back Room of `mainCode` before (as the person now signed in). */
export function enteredBackRoomOf(mainCode: string): boolean {
  const main = canonicalCode(mainCode);
  const known = readJson<Record<string, string>>(BACK_ROOMS_KEY) ?? {};
  return Object.entries(known).some(([backCode, parent]) => parent === main && savedRoomSession(backCode) !== null);
}

function rememberBackRoom(backCode: string, mainCode: string): void {
  const known = readJson<Record<string, string>>(BACK_ROOMS_KEY) ?? {};
  delete known[canonicalCode(backCode)];
  known[canonicalCode(backCode)] = canonicalCode(mainCode);
  // The most recent few are plenty: entering again writes it back.
  writeJson(BACK_ROOMS_KEY, Object.fromEntries(Object.entries(known).slice(-50)));
}

/** Enter the Back Room of `mainCode` (its host, or a seat holder) with the main room's token: the
 * answer is the Back Room and a token for it, kept like any room's so the chat works there as in any
 * room. Others are refused (403 `no_seat`, or `seat_removed` once the host took their seat). */
export async function enterBackRoom(mainCode: string): Promise<BackRoomEntry> {
  const answer = await withRoomToken(mainCode, (token) =>
    request<EnterAnswer>("POST", roomPath(mainCode, "/back-room/enter"), { token, retries: 2 }),
  );
  rememberBackRoom(answer.back_room.code, mainCode);
  const joined: JoinResponse = {
    participant: answer.participant,
    room_token: answer.room_token,
    room_token_expires_in: answer.room_token_expires_in,
    room: answer.back_room,
  };
  return { room: answer.back_room, session: saveRoomSession(answer.back_room.code, joined, answer.participant.username) };
}

/** The Back Room's seat holders (its host and its holders may ask), with the main room's token. */
export function listSeats(mainCode: string, signal?: AbortSignal): Promise<SeatList> {
  return withRoomToken(mainCode, (token) => request<SeatList>("GET", roomPath(mainCode, "/back-room/seats"), { token, retries: 2, signal }));
}

/** The host takes a holder's seat away, with a refund or (abuse) without one. */
export function removeSeat(mainCode: string, participantId: string, refund: boolean): Promise<{ changed: boolean; refunded: boolean }> {
  const path = roomPath(mainCode, `/back-room/seats/${encodeURIComponent(participantId)}?refund=${refund ? "true" : "false"}`);
  return withRoomToken(mainCode, (token) => request("DELETE", path, { token, retries: 2 }));
}
