/** REST v1 of the edge. Every failure becomes an ApiError with the server's stable code and message. */

export class ApiError extends Error {
  readonly status: number;
  readonly code: string;
  readonly retryAfter: number | null;

  constructor(status: number, code: string, message: string, retryAfter: number | null = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }

  /** Worth trying again as is: the network or a service was briefly away. */
  get transient(): boolean {
    return this.status === 0 || this.status === 502 || this.status === 503 || this.status === 504;
  }
}

export interface RequestOptions {
  body?: unknown;
  token?: string | null;
  /** Extra attempts on network errors and 502/503/504 (services restarting); only for idempotent calls. */
  retries?: number;
  signal?: AbortSignal;
  /** Cookies are left out unless a call needs one stored (signed media URLs' binding cookie). */
  credentials?: RequestCredentials;
}

const FALLBACK_MESSAGES: Record<number, string> = {
  0: "Can't reach ChatPop. Check your connection and try again.",
  401: "Your session has expired. Please try again.",
  403: "You may not do this.",
  404: "Not found.",
  409: "That conflicts with the current state.",
  413: "That is too large.",
  422: "That is not valid.",
  429: "Too many attempts. Please wait a moment.",
  500: "Something went wrong on our side.",
  503: "ChatPop is briefly unavailable. Please try again.",
};

function fallback(status: number): string {
  return FALLBACK_MESSAGES[status] ?? FALLBACK_MESSAGES[500]!;
}

export async function toError(response: Response): Promise<ApiError> {
  let code = `http_${response.status}`;
  let message = fallback(response.status);
  let retryAfter: number | null = null;
  try {
    const body = (await response.json()) as { error?: { code?: string; message?: string; retry_after?: number } };
    if (body.error?.code) code = body.error.code;
    if (body.error?.message) message = body.error.message;
    if (typeof body.error?.retry_after === "number") retryAfter = body.error.retry_after;
  } catch {
    // Not our JSON (a proxy's page): keep the fallback.
  }
  const header = Number(response.headers.get("Retry-After"));
  if (retryAfter === null && Number.isFinite(header) && header > 0) retryAfter = header;
  return new ApiError(response.status, code, message, retryAfter);
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => {
      clearTimeout(timer);
      reject(new DOMException("aborted", "AbortError"));
    });
  });
}

export async function request<T>(method: string, path: string, options: RequestOptions = {}): Promise<T> {
  const headers: Record<string, string> = { Accept: "application/json" };
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  if (options.token) headers.Authorization = `Bearer ${options.token}`;
  const attempts = 1 + (options.retries ?? 0);
  let last: ApiError | null = null;
  for (let attempt = 0; attempt < attempts; attempt++) {
    if (attempt > 0) await sleep(Math.min(4000, 250 * 2 ** attempt) * (0.5 + Math.random() / 2), options.signal);
    let response: Response;
    try {
      response = await fetch(path, {
        method,
        headers,
        body: options.body === undefined ? undefined : JSON.stringify(options.body),
        signal: options.signal,
        credentials: options.credentials ?? "omit",
      });
    } catch (error) {
      if (error instanceof DOMException && error.name === "AbortError") throw error;
      last = new ApiError(0, "network_error", fallback(0));
      continue;
    }
    if (response.ok) {
      if (response.status === 204) return undefined as T;
      return (await response.json()) as T;
    }
    last = await toError(response);
    if (!last.transient) throw last;
  }
  throw last ?? new ApiError(0, "network_error", fallback(0));
}

function countWords(count: number, unit: string): string {
  if (count !== 1) return `${count} ${unit}s`;
  return unit === "hour" ? "an hour" : `a ${unit}`;
}

/** "in 12 seconds", "in 53 minutes", "in 2 hours" for Retry-After seconds (as the server words it). */
export function waitWords(seconds: number | null): string {
  if (!seconds || seconds <= 1) return "in a moment";
  if (seconds < 60) return `in ${Math.ceil(seconds)} seconds`;
  if (seconds < 90 * 60) return `in ${countWords(Math.ceil(seconds / 60), "minute")}`;
  if (seconds < 48 * 3600) return `in ${countWords(Math.ceil(seconds / 3600), "hour")}`;
  return `in ${countWords(Math.ceil(seconds / 86400), "day")}`;
}

/** "just now", "5 minutes ago", "yesterday", or a date: how long ago something happened. */
export function agoWords(iso: string | null | undefined, now: number = Date.now()): string {
  if (!iso) return "";
  const then = new Date(iso).getTime();
  if (Number.isNaN(then)) return "";
  const seconds = Math.max(0, (now - then) / 1000);
  if (seconds < 60) return "just now";
  if (seconds < 3600) return `${countWords(Math.floor(seconds / 60), "minute")} ago`;
  if (seconds < 86400) return `${countWords(Math.floor(seconds / 3600), "hour")} ago`;
  if (seconds < 2 * 86400) return "yesterday";
  return new Date(then).toLocaleDateString([], { day: "numeric", month: "short", year: "numeric" });
}

// --- shapes of the edge's JSON ---------------------------------------------------------------

export type ThemeName = "purple-dream" | "ocean-blue" | "dark-mode";

export interface Identity {
  id: string;
  kind: "anonymous" | "user";
  email?: string | null;
  reserved_username?: string | null;
}

/** `GET /api/v1/auth/me`: the identity, and whether its access token carries the admin role. */
export interface MeResponse {
  identity: Identity;
  is_admin: boolean;
}

export interface TokenResponse {
  identity: Identity;
  access_token: string;
  refresh_token: string;
  expires_in: number;
  refresh_expires_in: number;
}

export interface Media {
  photo: boolean;
  voice: boolean;
  video: boolean;
}

export interface Room {
  id: string;
  code: string;
  url: string;
  name: string;
  description: string;
  visibility: "public" | "private";
  media: Media;
  theme: ThemeName;
  retention_days: number;
  /** Seconds each participant waits between messages; 0 is off (hosts never wait). */
  slow_mode_seconds: number;
  /** New usernames people without an account may take per hour from one network. */
  anonymous_names_per_network: number;
  closed: boolean;
  /** Closed with "delete everything": its history and media are gone for good. */
  erased?: boolean;
  /** The room's paid Back Room (absent when it never had one; never on a Back Room itself). */
  back_room?: BackRoomInfo | null;
}

/** A room's paid Back Room as everyone sees it on the main room. */
export interface BackRoomInfo {
  enabled: boolean;
  /** Price of a seat for the next buyer. */
  seat_price_cents: number;
  seat_limit: number;
  seats_taken: number;
  seats_left: number;
  full: boolean;
  /** Only for its members. */
  back_room_id?: string;
}

/** What a host sets on the Back Room; only the fields present change. */
export interface BackRoomSettings {
  enabled?: boolean;
  seat_price_cents?: number;
  seat_limit?: number;
}

/** Changes a host makes to a room; only the fields present change. */
export interface RoomChanges {
  name?: string;
  description?: string;
  visibility?: "public" | "private";
  access_code?: string;
  media?: Media;
  theme?: ThemeName;
  retention_days?: number;
  slow_mode_seconds?: number;
  /** 0 goes back to the platform's default. */
  anonymous_names_per_network?: number;
  back_room?: BackRoomSettings;
}

export interface MyRoom {
  room: Room;
  participant: Participant | null;
  is_host: boolean;
  last_seq: number;
  last_activity_at: string | null;
  unread: number;
  unread_more: boolean;
}

export interface Participant {
  id: string;
  room_id: string;
  username: string;
  is_host: boolean;
  verified: boolean;
}

export interface JoinResponse {
  participant: Participant;
  room_token: string;
  room_token_expires_in: number;
  room: Room;
}

export interface Sender {
  participant_id: string;
  username: string;
  is_host: boolean;
  verified: boolean;
}

/** Emoji → how many people put it on a message (only counts above zero). */
export type Reactions = Record<string, number>;

export interface Message {
  seq: number;
  id: string;
  room_id: string;
  sender: Sender;
  text: string;
  reply_to_seq: number | null;
  client_msg_id: string;
  created_at: string | null;
  /** Deleted by its author or the host: the text is gone, the message keeps its place. */
  deleted: boolean;
  deleted_by_host: boolean;
  /** Hidden pending the host's review after reports: others see a placeholder, the host the text. */
  hidden: boolean;
  reactions: Reactions;
  /** The emojis this person has on the message. */
  my_reactions: string[];
  /** Seq of the last entry that changed this message (0: none); a change applies only above it. */
  state_seq: number;
  /** Set for a paid tip to the host: an entry shown among the messages (its `text` is empty). */
  tip?: Tip;
  /** A photo, voice note or video the platform stored for the room (the text may then be empty). */
  media?: MessageMedia | null;
}

export type MediaKind = "photo" | "voice" | "video";
export type MediaState = "PENDING" | "READY" | "DELETING" | "DELETED";

/** Media as a message carries it: the record, no addresses (those are signed per person, media.ts). */
export interface MessageMedia {
  id: string;
  kind: MediaKind;
  state: MediaState;
  content_type: string;
  width: number;
  height: number;
  duration_ms: number;
  /** The stored variants' names: `full`, and `thumb` (photo) or `poster` (video). */
  variants: string[];
}

/** Signed addresses of one medium's variants, as `POST …/media/urls` and the upload answer give them. */
export interface SignedMedia {
  id: string;
  state: MediaState;
  kind: MediaKind;
  content_type: string;
  width: number;
  height: number;
  duration_ms: number;
  urls: Partial<Record<"full" | "thumb" | "poster", string>>;
}

export interface MediaUrlsResponse {
  expires_at: string;
  media: SignedMedia[];
}

/** A paid tip to the room's host, as a `tip` frame or a history item (`kind: "tip"`) carries it. */
export interface Tip {
  order_id: string;
  amount_cents: number;
  currency: string;
  note: string;
}

/** A history page as the edge sends it; messages are read through `messageFrom` (messageState.ts). */
export interface MessagePage {
  messages: unknown[];
  has_more: boolean;
  /** The room's newest entry. */
  last_seq: number;
  /** The page accounts for every seq from here up to before_seq - 1 (last_seq on the newest page):
   * changes in that range are folded into its messages. Absent from edges older than room events. */
  low_seq?: number;
  /** The newest page only: the host's pins, the live paid pins and the sticky message as of `last_seq`. */
  board?: unknown;
  /** The lowest seq the room's retention kept (1 when it deleted nothing): no history below it. */
  floor_seq?: number;
}

/** The answer to putting an emoji on a message or taking it off. */
export interface ReactionResult {
  target_seq: number;
  reactions: Reactions;
  my_reactions: string[];
  state_seq: number;
}

export interface DeleteResult {
  target_seq: number;
  deleted: boolean;
}

export interface CreateRoomBody {
  name: string;
  description: string;
  visibility: "public" | "private";
  access_code?: string;
  media: Media;
  theme: ThemeName;
  retention_days: number;
  slow_mode_seconds?: number;
  back_room?: BackRoomSettings;
}

export interface Suggestion {
  username: string;
  remaining: number;
}

export interface UsernameAvailability {
  available?: boolean;
  reason?: string | null;
  message?: string | null;
}

// --- moderation ------------------------------------------------------------------------------

export type BanTier = "session" | "device" | "ip";

export interface Ban {
  id: string;
  participant_id: string;
  username: string;
  tier: BanTier;
  reason: string;
  banned_by: string;
  created_at: string | null;
}

export type ReportReason = "spam" | "harassment" | "hate" | "sexual" | "violence" | "other";

export interface Report {
  reporter: Sender;
  reason: ReportReason;
  text: string;
  created_at: string | null;
}

export interface ReportedMessage {
  /** Raw, read through `messageFrom`. */
  message: unknown;
  reports: Report[];
}

export interface PinsState {
  target_seq: number;
  pinned_seqs: number[];
  pins_state_seq: number;
  changed: boolean;
}

export interface StickyState {
  text: string;
  sticky_seq: number;
  changed: boolean;
}

export interface Mute {
  participant_id: string;
  username: string;
  muted_at: string | null;
}

// --- admin -----------------------------------------------------------------------------------

export interface AuditEvent {
  id: number;
  at: string | null;
  kind: string;
  actor: string | null;
  target: string | null;
  room_id: string | null;
  ip_hash: string | null;
  details: Record<string, unknown>;
}

export interface AuditPage {
  events: AuditEvent[];
  next_before: number | null;
}

export interface TakenDownRoom {
  room: Room;
  reason: string;
  taken_down_by: string;
  taken_down_at: string | null;
}

export interface SiteBan {
  id: string;
  identity_id: string | null;
  ip_hash: string | null;
  reason: string;
  banned_by: string;
  created_at: string | null;
  lifted_at: string | null;
  /** False when nothing changed (it was banned, or lifted, already). */
  changed?: boolean;
}

export interface Stats {
  rooms: { total: number; open: number; created_today: number };
  open_sockets: number;
  messages_per_day: Array<{ day: string; messages: number }>;
  open_reports: number;
  audit_events_today: number;
}
