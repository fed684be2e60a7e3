/** Photos, voice notes and videos: what the client checks before uploading, the upload itself
 * (XMLHttpRequest, for its progress events and `abort()`), and the signed addresses media is shown
 * from.
 *
 * Media is stored by the platform and served only through short-lived signed URLs, issued per person
 * (`POST /api/v1/rooms/{code}/media/urls`, at most 100 ids a call) together with a binding cookie
 * the media responses check, so that call keeps cookies (`credentials: "same-origin"`). Each room's
 * `MediaUrls` asks for the media on screen in batches, keeps the answers until shortly before they
 * expire, and asks again when an element fails to load (an expired or refused address). */
import {
  ApiError,
  request,
  toError,
  type MediaKind,
  type MediaState,
  type MediaUrlsResponse,
  type MessageMedia,
  type SignedMedia,
} from "./api";
import type { AttachedMedia } from "./chat";
import { mediaFrom, mediaKindOf, mediaStateOf } from "./messageState";
import { canonicalCode, roomToken } from "./rooms";

const MIB = 1024 * 1024;

/** The platform's limits (the server checks them again and is the judge). */
export const MEDIA_LIMITS: Record<MediaKind, { bytes: number; seconds: number }> = {
  photo: { bytes: 10 * MIB, seconds: 0 },
  voice: { bytes: 10 * MIB, seconds: 600 },
  video: { bytes: 50 * MIB, seconds: 30 },
};

/** What the file pickers offer. Videos: the formats the platform keeps (QuickTime is how iPhones
 * save MP4 video; the server judges what is inside). */
// Photos are named by type rather than `image/*`: iOS then hands over a JPEG for a HEIC picture.
export const ACCEPT: Record<MediaKind, string> = {
  photo: "image/jpeg,image/png,image/webp,image/gif",
  voice: "audio/*",
  video: "video/mp4,video/webm,video/quicktime",
};

export const KIND_WORDS: Record<MediaKind, { one: string; many: string }> = {
  photo: { one: "photo", many: "Photos" },
  voice: { one: "voice note", many: "Voice notes" },
  video: { one: "video", many: "Videos" },
};

const PHOTO_TYPES = new Set(["image/jpeg", "image/png", "image/webp", "image/gif"]);

/** "4.2 MB" (in MiB, as the limits are). */
export function sizeWords(bytes: number): string {
  if (bytes < MIB) return `${Math.max(1, Math.round(bytes / 1024))} KB`;
  const mb = bytes / MIB;
  return `${mb < 10 ? mb.toFixed(1) : Math.round(mb)} MB`;
}

/** "0:07", "1:05", "10:00" */
export function clockWords(ms: number): string {
  const total = Math.max(0, Math.floor(ms / 1000));
  return `${Math.floor(total / 60)}:${String(total % 60).padStart(2, "0")}`;
}

/** Why a file cannot go as this kind of media, as far as the browser can tell; null when it may. */
export function mediaProblem(kind: MediaKind, file: Blob, durationSeconds: number | null = null): string | null {
  const words = KIND_WORDS[kind];
  if (file.size === 0) return `That ${words.one} is empty.`;
  const limit = MEDIA_LIMITS[kind];
  if (file.size > limit.bytes) {
    return `That ${words.one} is ${sizeWords(file.size)}. ${words.many} can be at most ${sizeWords(limit.bytes)}.`;
  }
  if (kind === "photo" && file.type && !PHOTO_TYPES.has(file.type)) {
    return "Photos can be JPEG, PNG, WebP or GIF images.";
  }
  if (kind === "video" && file.type && !file.type.startsWith("video/")) return "That is not a video.";
  // The server cuts at its own measure (30.0 s kept, 30.5 s refused); the browser's is rougher.
  if (limit.seconds && durationSeconds !== null && durationSeconds >= limit.seconds + 0.5) {
    return `That ${words.one} is ${clockWords(durationSeconds * 1000)} long. ${words.many} can be at most ${limit.seconds} seconds.`;
  }
  return null;
}

/** A video file's length as the browser reads it (null when it cannot: the server judges then). */
export function videoSeconds(file: Blob): Promise<number | null> {
  return new Promise((resolve) => {
    const video = document.createElement("video");
    const url = URL.createObjectURL(file);
    const done = (value: number | null): void => {
      window.clearTimeout(timer);
      video.removeAttribute("src");
      video.load();
      URL.revokeObjectURL(url);
      resolve(value);
    };
    const timer = window.setTimeout(() => done(null), 5000);
    video.preload = "metadata";
    video.muted = true;
    video.onloadedmetadata = () => done(Number.isFinite(video.duration) ? video.duration : null);
    video.onerror = () => done(null);
    video.src = url;
  });
}

/** The voice recording format: MP4 (AAC) where the browser records it, which iOS Safari both records
 * and plays; else WebM/Opus. The server re-encodes voice to AAC in MP4 either way. */
export function voiceMimeType(): string {
  if (typeof MediaRecorder === "undefined") return "";
  for (const type of ["audio/mp4", "audio/webm;codecs=opus", "audio/webm", "audio/ogg;codecs=opus"]) {
    try {
      if (MediaRecorder.isTypeSupported(type)) return type;
    } catch {
      // An old engine throwing on an unknown type: try the next.
    }
  }
  return "";
}

// --- upload ----------------------------------------------------------------------------------

export interface Uploaded {
  media: AttachedMedia & { state: MediaState; content_type: string; variants: string[] };
  /** The addresses that came with the answer (null when it carried none). */
  signed: SignedMedia | null;
  expiresAt: number;
}

export interface Upload {
  done: Promise<Uploaded>;
  abort(): void;
}

function uploadPath(code: string, kind: MediaKind): string {
  return `/api/v1/rooms/${encodeURIComponent(canonicalCode(code))}/media?kind=${kind}`;
}

function expiryOf(value: unknown): number {
  const at = typeof value === "string" ? Date.parse(value) : NaN;
  // Without one, assume the platform's default lifetime less a margin.
  return Number.isFinite(at) ? at : Date.now() + 240_000;
}

/** A media entry with its addresses (`urls` answer item, or the upload answer, flat or nested). */
function signedFrom(raw: unknown): SignedMedia | null {
  if (typeof raw !== "object" || raw === null) return null;
  const wire = raw as Record<string, unknown>;
  const nested = typeof wire.media === "object" && wire.media !== null ? (wire.media as Record<string, unknown>) : null;
  const record = nested && typeof nested.id === "string" ? nested : wire;
  const id = typeof record.id === "string" ? record.id : null;
  const kind = mediaKindOf(record.kind);
  if (!id || !kind) return null;
  const urlsRaw = (wire.urls ?? record.urls) as Record<string, unknown> | undefined;
  const urls: SignedMedia["urls"] = {};
  if (typeof urlsRaw === "object" && urlsRaw !== null) {
    for (const name of ["full", "thumb", "poster"] as const) {
      const url = urlsRaw[name];
      // Only our own origin's media paths: nothing else is ever put into the page.
      if (typeof url === "string" && url.startsWith("/media/")) urls[name] = url;
    }
  }
  const whole = (value: unknown): number => (typeof value === "number" && value > 0 ? Math.round(value) : 0);
  return {
    id,
    kind,
    state: mediaStateOf(record.state) ?? "READY",
    content_type: typeof record.content_type === "string" ? record.content_type : "",
    width: whole(record.width),
    height: whole(record.height),
    duration_ms: whole(record.duration_ms),
    urls,
  };
}

function parseUploaded(text: string): Uploaded {
  let raw: unknown = null;
  try {
    raw = JSON.parse(text);
  } catch {
    // Handled below.
  }
  const signed = signedFrom(raw);
  const wire = (raw ?? {}) as Record<string, unknown>;
  const record = mediaFrom(typeof wire.media === "object" && wire.media !== null ? wire.media : wire);
  if (!signed || !record) throw new ApiError(502, "bad_answer", "The upload's answer was not understood. Please try again.");
  const nested = (wire.media ?? {}) as Record<string, unknown>;
  return {
    media: {
      id: record.id,
      kind: record.kind,
      state: record.state,
      content_type: record.content_type,
      width: record.width,
      height: record.height,
      duration_ms: record.duration_ms,
      variants: record.variants.length ? record.variants : Object.keys(signed.urls),
    },
    signed: Object.keys(signed.urls).length ? signed : null,
    expiresAt: expiryOf(wire.expires_at ?? nested.expires_at),
  };
}

function xhrError(xhr: XMLHttpRequest): Promise<ApiError> {
  const headers = new Headers();
  const retryAfter = xhr.getResponseHeader("Retry-After");
  if (retryAfter) headers.set("Retry-After", retryAfter);
  return toError(new Response(xhr.status === 204 ? null : xhr.responseText, { status: xhr.status, headers }));
}

function send(path: string, token: string, body: Blob, onProgress: (sent: number, total: number) => void, hold: (xhr: XMLHttpRequest) => void): Promise<Uploaded> {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    hold(xhr);
    xhr.open("POST", path);
    xhr.setRequestHeader("Authorization", `Bearer ${token}`);
    xhr.setRequestHeader("Accept", "application/json");
    // Never trusted by the server (it names the format by the bytes); sent for the record.
    xhr.setRequestHeader("Content-Type", body.type || "application/octet-stream");
    xhr.upload.onprogress = (event) => onProgress(event.loaded, event.lengthComputable ? event.total : body.size);
    xhr.onload = () => {
      if (xhr.status >= 200 && xhr.status < 300) {
        try {
          resolve(parseUploaded(xhr.responseText));
        } catch (error) {
          reject(error);
        }
      } else {
        void xhrError(xhr).then(reject);
      }
    };
    xhr.onerror = () => reject(new ApiError(0, "network_error", "The upload was interrupted. Check your connection and try again."));
    xhr.onabort = () => reject(new DOMException("aborted", "AbortError"));
    xhr.send(body);
  });
}

/** Upload `body` to the room as `kind`; `abort()` stops it (rejecting with an AbortError). The room
 * token is renewed once if the server refuses it. */
export function uploadMedia(code: string, kind: MediaKind, body: Blob, onProgress: (sent: number, total: number) => void): Upload {
  let current: XMLHttpRequest | null = null;
  let aborted = false;
  const hold = (xhr: XMLHttpRequest): void => {
    current = xhr;
  };
  const run = async (): Promise<Uploaded> => {
    const path = uploadPath(code, kind);
    try {
      const token = await roomToken(code);
      if (aborted) throw new DOMException("aborted", "AbortError");
      return await send(path, token, body, onProgress, hold);
    } catch (error) {
      if (!(error instanceof ApiError) || error.status !== 401 || aborted) throw error;
      onProgress(0, body.size);
      return send(path, await roomToken(code, true), body, onProgress, hold);
    }
  };
  return {
    done: run(),
    abort: () => {
      aborted = true;
      current?.abort();
    },
  };
}

// --- signed addresses ------------------------------------------------------------------------

const MAX_IDS = 100;
// Addresses are used until this long before they expire, then asked for again.
const EXPIRY_MARGIN_MS = 30_000;
// Ids wanted within this long go in one request.
const BATCH_DELAY_MS = 40;
// An element failing again this soon after its address was fresh does not ask again (no loop).
const REFRESH_MIN_MS = 5_000;
const TRANSIENT_RETRY_MS = 5_000;

interface Entry {
  signed: SignedMedia;
  expiresAt: number;
  fetchedAt: number;
}

export interface MediaLookup {
  signed: SignedMedia | null;
  /** The addresses could not be had; `retry()` asks again. */
  failed: string | null;
}

export class MediaUrls {
  private readonly entries = new Map<string, Entry>();
  private readonly wanted = new Set<string>();
  private readonly asking = new Set<string>();
  private readonly failures = new Map<string, string>();
  private readonly listeners = new Set<() => void>();
  private timer: number | undefined;
  private readonly code: string;

  constructor(code: string) {
    this.code = code;
  }

  subscribe(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private changed(): void {
    for (const listener of this.listeners) listener();
  }

  /** The addresses of `id` as held (possibly about to expire: asked for again then). */
  lookup(id: string): MediaLookup {
    const entry = this.entries.get(id);
    if (!entry || entry.expiresAt - EXPIRY_MARGIN_MS <= Date.now()) this.want(id);
    return { signed: entry?.signed ?? null, failed: this.failures.get(id) ?? null };
  }

  /** True when the held addresses of `id` are still good for a while. */
  fresh(id: string): boolean {
    const entry = this.entries.get(id);
    return entry !== undefined && entry.expiresAt - EXPIRY_MARGIN_MS > Date.now();
  }

  want(id: string): void {
    if (this.asking.has(id) || this.failures.has(id)) return;
    this.wanted.add(id);
    if (this.timer === undefined) this.timer = window.setTimeout(() => void this.flush(), BATCH_DELAY_MS);
  }

  /** An element could not load from the address it had: ask for a new one (unless it was new). */
  refresh(id: string): void {
    const entry = this.entries.get(id);
    if (entry && Date.now() - entry.fetchedAt < REFRESH_MIN_MS) return;
    this.entries.delete(id);
    this.want(id);
  }

  retry(id: string): void {
    this.failures.delete(id);
    this.entries.delete(id);
    this.want(id);
    this.changed();
  }

  /** Addresses that came another way (the upload's answer). */
  seed(signed: SignedMedia, expiresAt: number): void {
    this.entries.set(signed.id, { signed, expiresAt, fetchedAt: Date.now() });
    this.changed();
  }

  private async flush(): Promise<void> {
    this.timer = undefined;
    const ids = [...this.wanted];
    this.wanted.clear();
    for (let start = 0; start < ids.length; start += MAX_IDS) {
      const batch = ids.slice(start, start + MAX_IDS);
      for (const id of batch) this.asking.add(id);
      try {
        await this.ask(batch);
      } catch (error) {
        if (error instanceof ApiError && error.transient) {
          // Briefly away (retries spent): ask again a little later.
          window.setTimeout(() => batch.forEach((id) => this.want(id)), TRANSIENT_RETRY_MS);
        } else {
          const message = error instanceof ApiError ? error.message : "Could not load this media.";
          for (const id of batch) this.failures.set(id, message);
        }
      } finally {
        for (const id of batch) this.asking.delete(id);
      }
      this.changed();
    }
  }

  private async ask(ids: string[]): Promise<void> {
    const path = `/api/v1/rooms/${encodeURIComponent(canonicalCode(this.code))}/media/urls`;
    const call = (token: string): Promise<MediaUrlsResponse> =>
      request<MediaUrlsResponse>("POST", path, { body: { media_ids: ids }, token, retries: 2, credentials: "same-origin" });
    let answer: MediaUrlsResponse;
    try {
      answer = await call(await roomToken(this.code));
    } catch (error) {
      if (!(error instanceof ApiError) || error.status !== 401) throw error;
      answer = await call(await roomToken(this.code, true));
    }
    const expiresAt = expiryOf(answer.expires_at);
    const now = Date.now();
    const seen = new Set<string>();
    for (const raw of Array.isArray(answer.media) ? answer.media : []) {
      const signed = signedFrom(raw);
      if (!signed) continue;
      seen.add(signed.id);
      this.entries.set(signed.id, { signed, expiresAt, fetchedAt: now });
    }
    // Media the answer left out is not there any more for this person.
    for (const id of ids) {
      if (!seen.has(id)) this.failures.set(id, "This media is not available.");
    }
  }
}

const byCode = new Map<string, MediaUrls>();

/** The room's signed-address cache (one per room on this page). */
export function mediaUrls(code: string): MediaUrls {
  const key = canonicalCode(code);
  let urls = byCode.get(key);
  if (!urls) {
    urls = new MediaUrls(key);
    byCode.set(key, urls);
  }
  return urls;
}

/** A few words for a message that is media alone (quotes, pins, notifications). */
export function mediaWords(media: MessageMedia | null | undefined): string {
  if (!media) return "";
  if (media.state === "DELETED" || media.state === "DELETING") return "Media removed";
  if (media.kind === "photo") return "📷 Photo";
  if (media.kind === "voice") return `🎤 Voice note${media.duration_ms ? ` (${clockWords(media.duration_ms)})` : ""}`;
  return "🎬 Video";
}

/** A message's media as a record, from what a pending send knows of it. */
export function pendingRecord(media: AttachedMedia): MessageMedia {
  return { ...media, state: "READY", content_type: "", variants: [] };
}
