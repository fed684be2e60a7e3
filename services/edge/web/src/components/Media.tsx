/** Media in the chat: what a message shows (a photo's thumbnail that opens a viewer, a voice note's
 * player, a video), and the composer's side (attaching a photo or video, recording a voice note,
 * the upload's progress with Cancel, and the server's refusals in its own words). */
import { useEffect, useLayoutEffect, useRef, useState } from "preact/hooks";
import { ApiError, waitWords, type Media, type MediaKind, type MessageMedia } from "../api";
import type { AttachedMedia } from "../chat";
import {
  ACCEPT,
  clockWords,
  KIND_WORDS,
  MEDIA_LIMITS,
  mediaProblem,
  mediaUrls,
  sizeWords,
  uploadMedia,
  videoSeconds,
  voiceMimeType,
  type Upload,
} from "../media";
import { AttachIcon, MicIcon, StopIcon } from "./Icons";
import { Modal } from "./Modal";
import "./media.css";

// --- showing media -----------------------------------------------------------------------------

// A photo or video in a message fits this box (CSS pixels); narrower screens scale it down.
const BOX_WIDTH = 260;
const BOX_HEIGHT = 300;

/** The size media is drawn at: its own proportions within the box (a square when unknown). */
function fitted(width: number, height: number): { width: number; height: number } {
  if (!width || !height) return { width: 240, height: 240 };
  const scale = Math.min(1, BOX_WIDTH / width, BOX_HEIGHT / height);
  return { width: Math.max(80, Math.round(width * scale)), height: Math.max(60, Math.round(height * scale)) };
}

/** Reserve the media's place before anything loads (no jump when it does). Sizes go through the
 * CSSOM, which the strict Content-Security-Policy allows. */
function useBox(width: number, height: number) {
  const ref = useRef<HTMLElement>(null);
  useLayoutEffect(() => {
    const el = ref.current;
    if (!el) return;
    el.style.setProperty("width", `${width}px`);
    el.style.setProperty("aspect-ratio", `${width} / ${height}`);
  }, [width, height]);
  return ref;
}

/** True once the element is near the screen: media off screen asks for no addresses yet. */
function useNear(ref: { current: HTMLElement | null }): boolean {
  const [near, setNear] = useState(typeof IntersectionObserver === "undefined");
  useEffect(() => {
    const el = ref.current;
    if (near || !el) return;
    const observer = new IntersectionObserver(
      (entries) => {
        if (entries.some((entry) => entry.isIntersecting)) {
          setNear(true);
          observer.disconnect();
        }
      },
      { rootMargin: "800px 0px" },
    );
    observer.observe(el);
    return () => observer.disconnect();
  }, [near]);
  return near;
}

interface Source {
  src: string | null;
  /** Why the addresses could not be had (a retry asks again). */
  failed: string | null;
  removed: boolean;
  /** The element could not load from `src`. */
  onError: () => void;
  retry: () => void;
}

/** The signed address of one variant. An element keeps the address it loaded from (a newer one would
 * load it all again); after an error it asks for a fresh one, and never reuses one that failed. */
function useSource(code: string, media: MessageMedia, variant: "full" | "thumb" | "poster", near: boolean): Source {
  const urls = mediaUrls(code);
  const [, setTick] = useState(0);
  useEffect(() => urls.subscribe(() => setTick((n) => n + 1)), [urls]);
  const [src, setSrc] = useState<string | null>(null);
  const bad = useRef(new Set<string>());
  const wanted = near && src === null && media.state === "READY";
  const found = wanted ? urls.lookup(media.id) : null;
  const signed = found?.signed ?? null;
  // A photo without a thumbnail shows its full image.
  const candidate = signed ? (signed.urls[variant] ?? (variant === "thumb" ? signed.urls.full : undefined) ?? null) : null;
  useEffect(() => {
    if (candidate && !bad.current.has(candidate)) setSrc(candidate);
  }, [candidate]);
  // The address held failed and a fresh one was refused as too soon: say so, and offer to ask again.
  const stuck = candidate !== null && bad.current.has(candidate);
  return {
    src,
    failed: found?.failed ?? (stuck ? "This media could not be loaded." : null),
    removed: signed?.state === "DELETED" || signed?.state === "DELETING",
    onError: () => {
      if (src) bad.current.add(src);
      setSrc(null);
      urls.refresh(media.id);
    },
    retry: () => {
      bad.current.clear();
      setSrc(null);
      urls.retry(media.id);
    },
  };
}

function Unavailable({ text, onRetry }: { text: string; onRetry: () => void }) {
  return (
    <p class="media-failed" role="status">
      {text}{" "}
      <button type="button" class="link-button" onClick={onRetry}>
        Try again
      </button>
    </p>
  );
}

function Removed() {
  return <p class="media-removed">Media removed</p>;
}

function PhotoViewer({ code, media, alt, thumb, onDismiss }: { code: string; media: MessageMedia; alt: string; thumb: string | null; onDismiss: () => void }) {
  const full = useSource(code, media, "full", true);
  const [loaded, setLoaded] = useState(false);
  const ref = useRef<HTMLImageElement>(null);
  useLayoutEffect(() => {
    // The photo's proportions before it loads: the viewer does not jump either.
    if (ref.current && media.width && media.height) {
      ref.current.style.setProperty("aspect-ratio", `${media.width} / ${media.height}`);
    }
  }, [media.width, media.height]);
  const src = full.src ?? thumb;
  return (
    <Modal title={alt} titleId={`viewer-${media.id}`} class="media-viewer" onDismiss={onDismiss}>
      <div class="viewer-stage">
        {full.removed ? (
          <Removed />
        ) : full.failed ? (
          <Unavailable text={full.failed} onRetry={full.retry} />
        ) : (
          src && (
            <img
              ref={ref}
              class={`viewer-photo ${loaded ? "loaded" : ""}`}
              src={src}
              alt={alt}
              width={media.width || undefined}
              height={media.height || undefined}
              data-variant={full.src ? "full" : "thumb"}
              onLoad={() => setLoaded(full.src !== null)}
              onError={full.src ? full.onError : undefined}
            />
          )
        )}
        {!loaded && !full.failed && !full.removed && (
          <p class="viewer-loading" role="status">
            Loading the photo…
          </p>
        )}
      </div>
    </Modal>
  );
}

function PhotoView({ code, media, username }: { code: string; media: MessageMedia; username: string }) {
  const size = fitted(media.width, media.height);
  const box = useBox(size.width, size.height);
  const near = useNear(box);
  const thumb = useSource(code, media, "thumb", near);
  const [open, setOpen] = useState(false);
  const refocus = useRef(false);
  useEffect(() => {
    // The viewer closed: focus goes back to the photo that opened it.
    if (open || !refocus.current) return;
    refocus.current = false;
    box.current?.focus({ preventScroll: true });
  }, [open]);
  const alt = `Photo from ${username}`;
  if (thumb.removed) return <Removed />;
  return (
    <>
      <button
        type="button"
        ref={box as { current: HTMLButtonElement | null }}
        class="media-photo"
        aria-label={`${alt}. Open it larger`}
        aria-haspopup="dialog"
        onClick={() => setOpen(true)}
      >
        {thumb.src && (
          <img src={thumb.src} alt={alt} width={size.width} height={size.height} decoding="async" onError={thumb.onError} />
        )}
      </button>
      {thumb.failed && <Unavailable text={thumb.failed} onRetry={thumb.retry} />}
      {open && (
        <PhotoViewer
          code={code}
          media={media}
          alt={alt}
          thumb={thumb.src}
          onDismiss={() => {
            refocus.current = true;
            setOpen(false);
          }}
        />
      )}
    </>
  );
}

/** Plays a media element again where it stopped once its fresh address has loaded. */
function useResume() {
  const resume = useRef<{ at: number; playing: boolean } | null>(null);
  return {
    keep: (el: HTMLMediaElement): void => {
      resume.current = { at: el.currentTime, playing: !el.paused };
    },
    restore: (el: HTMLMediaElement): void => {
      const held = resume.current;
      resume.current = null;
      if (!held) return;
      if (held.at > 0) el.currentTime = held.at;
      if (held.playing) void el.play().catch(() => undefined);
    },
  };
}

function VoiceView({ code, media, username }: { code: string; media: MessageMedia; username: string }) {
  const box = useRef<HTMLDivElement>(null);
  const near = useNear(box);
  const full = useSource(code, media, "full", near);
  const resume = useResume();
  if (full.removed) return <Removed />;
  const length = media.duration_ms ? clockWords(media.duration_ms) : "";
  return (
    <div class="media-voice" ref={box}>
      <span class="media-voice-label" aria-hidden="true">
        <MicIcon />
        {length && <span class="media-duration">{length}</span>}
      </span>
      {full.src ? (
        <audio
          controls
          preload="metadata"
          src={full.src}
          aria-label={`Voice note from ${username}${length ? `, ${length}` : ""}`}
          onError={(e) => {
            resume.keep(e.currentTarget);
            full.onError();
          }}
          onLoadedMetadata={(e) => resume.restore(e.currentTarget)}
        />
      ) : (
        <span class="media-voice-placeholder" aria-hidden="true" />
      )}
      {full.failed && <Unavailable text={full.failed} onRetry={full.retry} />}
    </div>
  );
}

function VideoView({ code, media, username }: { code: string; media: MessageMedia; username: string }) {
  const size = fitted(media.width, media.height);
  const box = useBox(size.width, size.height);
  const near = useNear(box);
  const full = useSource(code, media, "full", near);
  const poster = useSource(code, media, "poster", near);
  const resume = useResume();
  if (full.removed) return <Removed />;
  return (
    <>
      <div class="media-video" ref={box as { current: HTMLDivElement | null }}>
        {full.src && (
          <video
            controls
            playsInline
            preload="metadata"
            src={full.src}
            poster={poster.src ?? undefined}
            width={size.width}
            height={size.height}
            aria-label={`Video from ${username}${media.duration_ms ? `, ${clockWords(media.duration_ms)}` : ""}`}
            onError={(e) => {
              resume.keep(e.currentTarget);
              full.onError();
            }}
            onLoadedMetadata={(e) => resume.restore(e.currentTarget)}
          />
        )}
      </div>
      {full.failed && <Unavailable text={full.failed} onRetry={full.retry} />}
    </>
  );
}

/** A message's media, shown from its signed addresses (asked for when it comes near the screen). */
export function MessageMediaView({ code, media, username }: { code: string; media: MessageMedia; username: string }) {
  if (media.state === "DELETED" || media.state === "DELETING") return <Removed />;
  if (media.state === "PENDING") return <p class="media-removed">Processing…</p>;
  const props = { code, media, username };
  return (
    <div class={`msg-media media-${media.kind}-wrap`} data-media-id={media.id} data-kind={media.kind}>
      {media.kind === "photo" ? <PhotoView {...props} /> : media.kind === "voice" ? <VoiceView {...props} /> : <VideoView {...props} />}
    </div>
  );
}

// --- the composer's side -----------------------------------------------------------------------

interface Staged {
  kind: MediaKind;
  blob: Blob;
  /** A local preview (photo, video) while it is here; revoked when it goes. */
  preview: string | null;
  durationMs: number | null;
}

type Phase =
  | { kind: "idle" }
  | { kind: "uploading"; sent: number; total: number }
  | { kind: "waiting"; message: string; until: number }
  | { kind: "failed"; message: string; retryable: boolean };

// Uploads refused as busy or storage unavailable (503) go again by themselves this many times.
const AUTO_RETRIES = 3;

export interface Attachment {
  staged: Staged | null;
  phase: Phase;
  /** Why the last file picked could not be attached. */
  problem: string | null;
  busy: boolean;
  pick: (kind: MediaKind, file: File) => void;
  /** A voice note just recorded: uploaded and sent at once. */
  sendRecording: (blob: Blob, durationMs: number) => void;
  send: (caption: string, onQueued: () => void) => void;
  cancel: () => void;
  retry: () => void;
  remove: () => void;
  /** Say why something could not be attached (the microphone refused…). */
  report: (text: string) => void;
  dismissProblem: () => void;
}

/** The attachment being composed, its upload, and the send that follows it. `onSend` queues the
 * message (with the caption) once the platform has stored the media. */
export function useAttachment(code: string, onSend: (caption: string, media: AttachedMedia) => boolean): Attachment {
  const [staged, setStaged] = useState<Staged | null>(null);
  const [phase, setPhase] = useState<Phase>({ kind: "idle" });
  const [problem, setProblem] = useState<string | null>(null);
  const upload = useRef<Upload | null>(null);
  const timer = useRef<number | undefined>(undefined);
  const pending = useRef<{ caption: string; onQueued: () => void; attempts: number } | null>(null);
  const current = useRef<Staged | null>(null);
  current.current = staged;
  const sendRef = useRef(onSend);
  sendRef.current = onSend;

  const clear = (): void => {
    window.clearTimeout(timer.current);
    upload.current?.abort();
    upload.current = null;
    pending.current = null;
    if (current.current?.preview) URL.revokeObjectURL(current.current.preview);
    current.current = null;
    setStaged(null);
    setPhase({ kind: "idle" });
  };
  useEffect(() => clear, []);

  const start = (item: Staged): void => {
    const job = pending.current;
    if (!job) return;
    window.clearTimeout(timer.current);
    setPhase({ kind: "uploading", sent: 0, total: item.blob.size });
    const handle = uploadMedia(code, item.kind, item.blob, (sent, total) => {
      if (upload.current === handle) setPhase({ kind: "uploading", sent, total });
    });
    upload.current = handle;
    handle.done.then(
      (uploaded) => {
        if (upload.current !== handle) return;
        upload.current = null;
        if (uploaded.signed) mediaUrls(code).seed(uploaded.signed, uploaded.expiresAt);
        const media: AttachedMedia = {
          id: uploaded.media.id,
          kind: uploaded.media.kind,
          width: uploaded.media.width,
          height: uploaded.media.height,
          duration_ms: uploaded.media.duration_ms || (item.durationMs ?? 0),
        };
        if (sendRef.current(job.caption, media)) {
          job.onQueued();
          clear();
        } else {
          pending.current = null;
          setPhase({ kind: "failed", message: "The message could not be sent.", retryable: false });
        }
      },
      (error: unknown) => {
        if (upload.current !== handle) return;
        upload.current = null;
        if (error instanceof DOMException && error.name === "AbortError") {
          pending.current = null;
          setPhase({ kind: "idle" });
          return;
        }
        const refused = error instanceof ApiError ? error : new ApiError(0, "network_error", "The upload failed. Please try again.");
        // Busy or storage briefly away (503): again by itself, as the server says when. A broken
        // connection may be the server refusing the rest of the body: that one waits for a person.
        const switchedOff = refused.code === "media_disabled";
        if (refused.status === 503 && !switchedOff && job.attempts < AUTO_RETRIES) {
          job.attempts += 1;
          const seconds = refused.retryAfter ?? 2 ** job.attempts;
          setPhase({ kind: "waiting", message: refused.message, until: Date.now() + seconds * 1000 });
          timer.current = window.setTimeout(() => start(item), seconds * 1000);
          return;
        }
        setPhase({ kind: "failed", message: refused.message, retryable: refused.transient && !switchedOff });
      },
    );
  };

  const stage = (item: Staged): void => {
    if (current.current?.preview) URL.revokeObjectURL(current.current.preview);
    current.current = item;
    setStaged(item);
    setPhase({ kind: "idle" });
    setProblem(null);
  };

  const busy = phase.kind === "uploading" || phase.kind === "waiting";
  return {
    staged,
    phase,
    problem,
    busy,
    pick: (kind, file) => {
      if (busy) return;
      void (async () => {
        const seconds = kind === "video" ? await videoSeconds(file) : null;
        const why = mediaProblem(kind, file, seconds);
        if (why) {
          setProblem(why);
          return;
        }
        const preview = kind === "voice" ? null : URL.createObjectURL(file);
        stage({ kind, blob: file, preview, durationMs: seconds === null ? null : Math.round(seconds * 1000) });
      })();
    },
    sendRecording: (blob, durationMs) => {
      if (busy) return;
      const why = mediaProblem("voice", blob);
      if (why) {
        setProblem(why);
        return;
      }
      const item: Staged = { kind: "voice", blob, preview: null, durationMs };
      stage(item);
      pending.current = { caption: "", onQueued: () => undefined, attempts: 0 };
      start(item);
    },
    send: (caption, onQueued) => {
      const item = current.current;
      if (!item || busy) return;
      pending.current = { caption, onQueued, attempts: 0 };
      start(item);
    },
    cancel: () => {
      window.clearTimeout(timer.current);
      const handle = upload.current;
      upload.current = null;
      handle?.abort();
      pending.current = null;
      setPhase({ kind: "idle" });
    },
    retry: () => {
      const item = current.current;
      if (!item || busy) return;
      pending.current = { caption: pending.current?.caption ?? "", onQueued: pending.current?.onQueued ?? (() => undefined), attempts: 0 };
      start(item);
    },
    remove: clear,
    report: setProblem,
    dismissProblem: () => setProblem(null),
  };
}

function useTicker(active: boolean, every = 250): number {
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    if (!active) return;
    const id = window.setInterval(() => setNow(Date.now()), every);
    return () => window.clearInterval(id);
  }, [active, every]);
  return now;
}

/** The attachment above the message box: its preview, the upload's progress with Cancel, or why it
 * was refused. */
export function AttachmentStrip({ attachment, allowed }: { attachment: Attachment; allowed: Media }) {
  const { staged, phase, problem } = attachment;
  const now = useTicker(phase.kind === "waiting", 1000);
  if (!staged && !problem) return null;
  const words = staged ? KIND_WORDS[staged.kind] : null;
  const what = staged && words ? `${words.one[0]!.toUpperCase()}${words.one.slice(1)}` : "";
  const detail = staged
    ? [staged.durationMs ? clockWords(staged.durationMs) : "", sizeWords(staged.blob.size)].filter(Boolean).join(" · ")
    : "";
  const percent = phase.kind === "uploading" && phase.total > 0 ? Math.min(100, Math.round((phase.sent / phase.total) * 100)) : 0;
  const notAllowed = staged !== null && !allowed[staged.kind];
  return (
    <div class="attachment" data-phase={phase.kind}>
      {problem && (
        <p class="attachment-problem" role="alert">
          <span>{problem}</span>
          <button type="button" class="icon-button" aria-label="Dismiss" onClick={attachment.dismissProblem}>
            ×
          </button>
        </p>
      )}
      {staged && (
        <div class="attachment-item">
          {staged.kind === "photo" && staged.preview ? (
            <img class="attachment-preview" src={staged.preview} alt="" width={48} height={48} />
          ) : staged.kind === "video" && staged.preview ? (
            <video class="attachment-preview" src={staged.preview} muted playsInline preload="metadata" width={48} height={48} aria-hidden="true" tabIndex={-1} />
          ) : (
            <span class="attachment-preview attachment-icon" aria-hidden="true">
              {staged.kind === "voice" ? <MicIcon /> : <AttachIcon />}
            </span>
          )}
          <div class="attachment-body">
            <p class="attachment-name">
              <strong>{what}</strong> <span class="attachment-detail">{detail}</span>
            </p>
            {phase.kind === "uploading" && (
              <div class="upload-progress">
                <progress max={100} value={percent} aria-label={`Uploading ${words?.one ?? "media"}`} />
                <span class="upload-percent" aria-hidden="true">
                  {percent}%
                </span>
              </div>
            )}
            {phase.kind === "waiting" && (
              <p class="attachment-note" role="status">
                {phase.message} Trying again {waitWords(Math.max(1, Math.ceil((phase.until - now) / 1000)))}.
              </p>
            )}
            {phase.kind === "failed" && (
              <p class="attachment-error" role="alert">
                {phase.message}
              </p>
            )}
            {notAllowed && phase.kind !== "failed" && (
              <p class="attachment-error" role="alert">
                The host no longer allows {words?.many.toLowerCase()} in this room.
              </p>
            )}
            {phase.kind === "idle" && staged.kind !== "voice" && !notAllowed && (
              <p class="attachment-note">
                Add a caption if you like, then send.
                {staged.kind === "video" ? ` Videos: up to ${MEDIA_LIMITS.video.seconds} s and ${sizeWords(MEDIA_LIMITS.video.bytes)}.` : ""}
              </p>
            )}
          </div>
          <div class="attachment-actions">
            {attachment.busy ? (
              <button type="button" class="button small" onClick={attachment.cancel} aria-label={`Cancel uploading the ${words?.one ?? "media"}`}>
                Cancel
              </button>
            ) : (
              <>
                {phase.kind === "failed" && phase.retryable && (
                  <button type="button" class="button small" onClick={attachment.retry}>
                    Try again
                  </button>
                )}
                <button type="button" class="icon-button" onClick={attachment.remove} aria-label={`Remove the ${words?.one ?? "attachment"}`}>
                  ×
                </button>
              </>
            )}
          </div>
        </div>
      )}
    </div>
  );
}

/** The paperclip: a menu of what the room allows (a photo from the library, a new one from the
 * camera on phones, a video); a single choice opens its picker at once. */
export function AttachButton({ allowed, disabled, onPick }: { allowed: Media; disabled: boolean; onPick: (kind: MediaKind, file: File) => void }) {
  const [open, setOpen] = useState(false);
  const button = useRef<HTMLButtonElement>(null);
  const list = useRef<HTMLDivElement>(null);
  const library = useRef<HTMLInputElement>(null);
  const camera = useRef<HTMLInputElement>(null);
  const video = useRef<HTMLInputElement>(null);
  const touch = typeof window.matchMedia === "function" && window.matchMedia("(pointer: coarse)").matches;
  const choices: Array<{ label: string; input: { current: HTMLInputElement | null } }> = [];
  if (allowed.photo) choices.push({ label: "Photo from your library", input: library });
  if (allowed.photo && touch) choices.push({ label: "Take a photo", input: camera });
  if (allowed.video) choices.push({ label: `Video (up to ${MEDIA_LIMITS.video.seconds} s, ${sizeWords(MEDIA_LIMITS.video.bytes)})`, input: video });

  useEffect(() => {
    if (!open) return;
    list.current?.querySelector("button")?.focus();
    const onDown = (event: PointerEvent): void => {
      const target = event.target as Node;
      if (!list.current?.contains(target) && !button.current?.contains(target)) setOpen(false);
    };
    document.addEventListener("pointerdown", onDown);
    return () => document.removeEventListener("pointerdown", onDown);
  }, [open]);

  if (!choices.length) return null;
  const label = allowed.photo && allowed.video ? "Attach a photo or video" : allowed.photo ? "Attach a photo" : "Attach a video";
  const chosen = (kind: MediaKind) => (event: Event): void => {
    const input = event.currentTarget as HTMLInputElement;
    const file = input.files?.[0];
    // The same file can be picked again after it was removed.
    input.value = "";
    if (file) onPick(kind, file);
  };
  return (
    <span class="attach">
      <button
        ref={button}
        type="button"
        class="icon-button composer-tool"
        aria-label={label}
        title={label}
        disabled={disabled}
        aria-expanded={choices.length > 1 ? open : undefined}
        aria-controls={open ? "attach-menu" : undefined}
        onClick={() => {
          if (choices.length === 1) choices[0]!.input.current?.click();
          else setOpen(!open);
        }}
      >
        <AttachIcon />
      </button>
      {open && (
        <div
          ref={list}
          id="attach-menu"
          class="more-list up start attach-menu"
          role="group"
          aria-label={label}
          onKeyDown={(event) => {
            if (event.key === "Escape") {
              event.preventDefault();
              event.stopPropagation();
              setOpen(false);
              button.current?.focus();
            }
          }}
        >
          {choices.map((choice) => (
            <button
              key={choice.label}
              type="button"
              class="more-item"
              onClick={() => {
                setOpen(false);
                choice.input.current?.click();
              }}
            >
              {choice.label}
            </button>
          ))}
        </div>
      )}
      {allowed.photo && (
        <input ref={library} class="sr-only" type="file" accept={ACCEPT.photo} tabIndex={-1} aria-label="Choose a photo" data-kind="photo" onChange={chosen("photo")} />
      )}
      {allowed.photo && touch && (
        <input ref={camera} class="sr-only" type="file" accept={ACCEPT.photo} capture="environment" tabIndex={-1} aria-label="Take a photo" data-kind="camera" onChange={chosen("photo")} />
      )}
      {allowed.video && (
        <input ref={video} class="sr-only" type="file" accept={ACCEPT.video} tabIndex={-1} aria-label="Choose a video" data-kind="video" onChange={chosen("video")} />
      )}
    </span>
  );
}

type Recording =
  | { kind: "idle" }
  | { kind: "asking" }
  | { kind: "recording"; started: number };

const MIN_VOICE_MS = 500;

function microphoneProblem(error: unknown): string {
  const name = error instanceof DOMException ? error.name : "";
  if (name === "NotAllowedError" || name === "SecurityError") {
    return "ChatPop may not use your microphone. Allow the microphone for this site in your browser's settings, then try again.";
  }
  if (name === "NotFoundError" || name === "OverconstrainedError") return "No microphone was found on this device.";
  if (name === "NotReadableError" || name === "AbortError") return "The microphone is busy (another app may be using it). Try again.";
  return "The microphone could not be started.";
}

/** The microphone button, and while recording: the time, Cancel, and Send (which stops and sends).
 * The microphone is asked for only when the button is pressed. */
export function VoiceRecorder({ disabled, onRecorded, onProblem }: { disabled: boolean; onRecorded: (blob: Blob, durationMs: number) => void; onProblem: (text: string) => void }) {
  const [state, setState] = useState<Recording>({ kind: "idle" });
  const recorder = useRef<MediaRecorder | null>(null);
  const stream = useRef<MediaStream | null>(null);
  const keep = useRef(false);
  const stopButton = useRef<HTMLButtonElement>(null);
  const now = useTicker(state.kind === "recording");
  const maxMs = MEDIA_LIMITS.voice.seconds * 1000;

  const release = (): void => {
    for (const track of stream.current?.getTracks() ?? []) track.stop();
    stream.current = null;
    recorder.current = null;
  };
  useEffect(
    () => () => {
      keep.current = false;
      if (recorder.current?.state === "recording") recorder.current.stop();
      release();
    },
    [],
  );

  const finish = (send: boolean): void => {
    keep.current = send;
    if (recorder.current?.state === "recording") recorder.current.stop();
    else release();
    setState({ kind: "idle" });
  };

  useEffect(() => {
    if (state.kind === "recording" && now - state.started >= maxMs) finish(true);
  }, [now]);
  useEffect(() => {
    if (state.kind === "recording") stopButton.current?.focus();
  }, [state.kind]);

  const begin = async (): Promise<void> => {
    if (!navigator.mediaDevices?.getUserMedia || typeof MediaRecorder === "undefined") {
      onProblem(
        window.isSecureContext
          ? "This browser cannot record voice notes."
          : "Voice notes need a secure (https) connection to use the microphone.",
      );
      return;
    }
    setState({ kind: "asking" });
    let media: MediaStream;
    try {
      media = await navigator.mediaDevices.getUserMedia({ audio: true });
    } catch (error) {
      setState({ kind: "idle" });
      onProblem(microphoneProblem(error));
      return;
    }
    const type = voiceMimeType();
    let rec: MediaRecorder;
    try {
      rec = type ? new MediaRecorder(media, { mimeType: type }) : new MediaRecorder(media);
    } catch {
      for (const track of media.getTracks()) track.stop();
      setState({ kind: "idle" });
      onProblem("This browser cannot record voice notes.");
      return;
    }
    const chunks: Blob[] = [];
    const started = Date.now();
    stream.current = media;
    recorder.current = rec;
    keep.current = false;
    rec.ondataavailable = (event) => {
      if (event.data.size) chunks.push(event.data);
    };
    rec.onstop = () => {
      const duration = Date.now() - started;
      const mime = rec.mimeType || type || "audio/webm";
      for (const track of media.getTracks()) track.stop();
      if (stream.current === media) release();
      if (!keep.current) return;
      if (duration < MIN_VOICE_MS || !chunks.length) {
        onProblem("That voice note was too short. Hold on a little longer.");
        return;
      }
      onRecorded(new Blob(chunks, { type: mime.split(";")[0] }), duration);
    };
    rec.start();
    setState({ kind: "recording", started });
  };

  if (state.kind === "recording") {
    const elapsed = Math.max(0, now - state.started);
    return (
      <div class="recording" role="group" aria-label="Recording a voice note">
        <button type="button" class="button small" onClick={() => finish(false)} aria-label="Cancel the voice note">
          Cancel
        </button>
        <span class="recording-time" role="timer" aria-live="off">
          <span class="recording-dot" aria-hidden="true" />
          {clockWords(elapsed)}
        </span>
        <button type="button" ref={stopButton} class="send-button" onClick={() => finish(true)} aria-label="Stop and send the voice note">
          <StopIcon />
        </button>
      </div>
    );
  }
  return (
    <button
      type="button"
      class="icon-button composer-tool"
      aria-label="Record a voice note"
      title="Record a voice note"
      disabled={disabled || state.kind === "asking"}
      onClick={() => void begin()}
    >
      <MicIcon />
    </button>
  );
}
