import type { ComponentChildren } from "preact";
import { useState } from "preact/hooks";
import { ApiError, type Media, type Room, type RoomChanges, type ThemeName } from "../api";
import { closeRoom, fetchAccessCode, updateRoom } from "../rooms";
import { SLOW_MODE_CHOICES } from "../roomChoices";
import { applyTheme } from "../themes";
import { backRoomChanges, BackRoomFields, draftOf, type BackRoomErrors, type SeatSelling } from "./BackRoomSettings";
import { Modal } from "./Modal";
import { MediaField, RetentionSelect, ThemeField, VisibilityField } from "./RoomFields";
import "./room-settings.css";

/** The choices, plus the room's current value when it is not one of them (set over the API). */
function withCurrent<T extends { label: string }>(choices: T[], has: (c: T) => boolean, current: T): T[] {
  return choices.some(has) ? choices : [...choices, current];
}

type Field =
  | "name"
  | "description"
  | "access_code"
  | "retention"
  | "slow_mode"
  | "names_per_network"
  | "seat_price"
  | "seat_limit"
  | "back_room"
  | "form";
type Errors = Partial<Record<Field, string>>;

function fieldOf(error: ApiError): Field {
  const code = error.code;
  if (code.includes("seat_price")) return "seat_price";
  if (code.includes("seat_limit") || code.includes("seats_taken")) return "seat_limit";
  if (code.includes("back_room") || code === "payments_not_enabled") return "back_room";
  if (code.includes("slow_mode")) return "slow_mode";
  if (code.includes("names_per_network")) return "names_per_network";
  if (code.includes("retention")) return "retention";
  if (code.includes("access_code")) return "access_code";
  if (code.includes("description")) return "description";
  if (code.includes("name")) return "name";
  return "form";
}

function FieldError({ id, text }: { id: string; text: string | undefined }) {
  return text ? (
    <p id={id} class="field-error" role="alert">
      {text}
    </p>
  ) : null;
}

/** The access code of a private room: hidden until the host asks to see it. */
function CurrentCode({ room }: { room: Room }) {
  const [shown, setShown] = useState<{ code: string | null } | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const reveal = async (): Promise<void> => {
    setBusy(true);
    try {
      setShown({ code: await fetchAccessCode(room.code) });
      setError(null);
    } catch (caught) {
      setError(caught instanceof ApiError ? caught.message : "Could not load the access code.");
    } finally {
      setBusy(false);
    }
  };
  return (
    <div class="current-code">
      <span class="label">Current access code</span>
      {shown ? (
        shown.code !== null ? (
          <span class="code-value" data-testid="access-code">
            {shown.code}
          </span>
        ) : (
          <span class="hint">It was set before codes could be shown again. Set a new one below to see it.</span>
        )
      ) : (
        <button type="button" class="link-button" onClick={() => void reveal()} disabled={busy}>
          {busy ? "Loading…" : "Show the code"}
        </button>
      )}
      {error && (
        <p class="field-error" role="alert">
          {error}
        </p>
      )}
    </div>
  );
}

/** Closing is for good, so it asks once more, in plain words; deleting everything as well asks for
 * the room's name, typed. */
function CloseConfirmation({ room, onClosed, onCancel }: { room: Room; onClosed: (room: Room) => void; onCancel: () => void }) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [erase, setErase] = useState(false);
  const [typed, setTyped] = useState("");
  const [typedError, setTypedError] = useState<string | null>(null);
  const confirm = async (): Promise<void> => {
    if (erase && typed.trim() !== room.name.trim()) {
      setTypedError(`Type the room's name, ${room.name.trim()}, exactly as it is written.`);
      return;
    }
    setBusy(true);
    try {
      onClosed(await closeRoom(room.code, erase));
    } catch (caught) {
      setError(caught instanceof ApiError ? caught.message : "Could not close the room. Please try again.");
      setBusy(false);
    }
  };
  return (
    <Modal title={`Close ${room.name} for good?`} titleId="close-title" describedBy="close-description" onDismiss={onCancel}>
      <form
        class="form"
        noValidate
        aria-busy={busy}
        onSubmit={(e) => {
          e.preventDefault();
          void confirm();
        }}
      >
        <p id="close-description">
          {erase
            ? "Nobody will be able to join or send messages any more, and it cannot be opened again. Every message, photo, voice note and video in it is deleted for good, for everyone."
            : "Nobody will be able to join or send messages any more, and it cannot be opened again. People who joined can still read what was said until the messages expire."}
        </p>
        <label class="choice close-erase">
          <input
            type="checkbox"
            checked={erase}
            disabled={busy}
            onChange={(e) => {
              setErase(e.currentTarget.checked);
              setTypedError(null);
              setError(null);
            }}
          />
          Delete everything (cannot be undone)
        </label>
        {erase && (
          <div class="field">
            <label for="close-erase-name">
              Type the room's name, <strong>{room.name.trim()}</strong>, to confirm
            </label>
            <input
              id="close-erase-name"
              autocomplete="off"
              spellcheck={false}
              value={typed}
              aria-invalid={typedError ? true : undefined}
              aria-describedby={typedError ? "close-erase-name-error" : undefined}
              onInput={(e) => {
                setTyped(e.currentTarget.value);
                setTypedError(null);
              }}
            />
            <FieldError id="close-erase-name-error" text={typedError ?? undefined} />
          </div>
        )}
        {error && (
          <p class="form-error" role="alert">
            {error}
          </p>
        )}
        <div class="modal-actions">
          <button type="button" class="button" onClick={onCancel} disabled={busy}>
            Keep it open
          </button>
          <button type="submit" class="button danger" disabled={busy}>
            {busy ? "Closing…" : erase ? "Close and delete everything" : "Close room for good"}
          </button>
        </div>
      </form>
    </Modal>
  );
}

/** The host's settings for a room: everything chosen at creation, plus slow mode and the limit on
 * new names without an account from one network; and closing the room. */
export function RoomSettings({
  room,
  onSaved,
  onDismiss,
  extra,
  selling,
}: {
  room: Room;
  /** Whether the host can sell Back Room seats (null while finding out); the Back Room's fields show
   * only when given. */
  selling?: SeatSelling | null;
  onSaved: (room: Room) => void;
  onDismiss: () => void;
  /** More for the host, above closing the room (tips and paid pins). */
  extra?: ComponentChildren;
}) {
  const [name, setName] = useState(room.name);
  const [description, setDescription] = useState(room.description);
  const [theme, setTheme] = useState<ThemeName>(room.theme);
  const [media, setMedia] = useState<Media>(room.media);
  const [retention, setRetention] = useState(room.retention_days);
  const [visibility, setVisibility] = useState(room.visibility);
  const [accessCode, setAccessCode] = useState("");
  const [slowMode, setSlowMode] = useState(room.slow_mode_seconds);
  const [namesPerNetwork, setNamesPerNetwork] = useState(String(room.anonymous_names_per_network));
  const [backRoom, setBackRoom] = useState(() => draftOf(room.back_room));
  const [errors, setErrors] = useState<Errors>({});
  const [busy, setBusy] = useState(false);
  const [closing, setClosing] = useState(false);

  // A field's error goes as soon as that field changes.
  const edit =
    <T,>(field: Field, set: (value: T) => void) =>
    (value: T): void => {
      set(value);
      setErrors((current) => (current[field] || current.form ? { ...current, [field]: undefined, form: undefined } : current));
    };

  const leave = (): void => {
    applyTheme(room.theme);
    onDismiss();
  };

  /** What the form changes, or what is wrong with it. */
  const collect = (): { found: Errors; body: RoomChanges } => {
    const found: Errors = {};
    const body: RoomChanges = {};
    if (!name.trim()) found.name = "Give the room a name.";
    if (name.trim() !== room.name) body.name = name.trim();
    if (description.trim() !== room.description) body.description = description.trim();
    if (theme !== room.theme) body.theme = theme;
    if (media.photo !== room.media.photo || media.voice !== room.media.voice || media.video !== room.media.video) {
      body.media = media;
    }
    if (retention !== room.retention_days) body.retention_days = retention;
    if (slowMode !== room.slow_mode_seconds) body.slow_mode_seconds = slowMode;
    const limit = Number(namesPerNetwork);
    if (limit !== room.anonymous_names_per_network) {
      if (!Number.isInteger(limit) || limit < 1 || limit > 1000) found.names_per_network = "Choose a number from 1 to 1,000.";
      else body.anonymous_names_per_network = limit;
    }
    if (visibility !== room.visibility) body.visibility = visibility;
    const code = accessCode.trim();
    if (visibility === "private" && room.visibility === "public" && !code) {
      found.access_code = "A private room needs an access code.";
    }
    if (visibility === "private" && code) body.access_code = code;
    if (selling !== undefined) {
      const back = backRoomChanges(backRoom, room.back_room, selling?.currency ?? "usd");
      if (back.errors.price) found.seat_price = back.errors.price;
      if (back.errors.limit) found.seat_limit = back.errors.limit;
      if (back.changes) body.back_room = back.changes;
    }
    return { found, body };
  };

  const save = async (event: Event): Promise<void> => {
    event.preventDefault();
    const { found, body } = collect();
    if (Object.keys(found).length) {
      setErrors(found);
      return;
    }
    if (!Object.keys(body).length) {
      onDismiss();
      return;
    }
    setBusy(true);
    try {
      onSaved(await updateRoom(room.code, body));
    } catch (caught) {
      if (caught instanceof ApiError) setErrors({ [fieldOf(caught)]: caught.message });
      else setErrors({ form: "Something went wrong. Please try again." });
      setBusy(false);
    }
  };

  const slowChoices = withCurrent(SLOW_MODE_CHOICES, (c) => c.seconds === room.slow_mode_seconds, {
    seconds: room.slow_mode_seconds,
    label: `${room.slow_mode_seconds} seconds`,
  });

  if (closing) {
    return <CloseConfirmation room={room} onClosed={onSaved} onCancel={() => setClosing(false)} />;
  }
  return (
    <Modal title="Room settings" titleId="settings-title" onDismiss={leave} class="settings-dialog">
      <form class="form" onSubmit={(e) => void save(e)} noValidate aria-busy={busy}>
        <div class="field">
          <label for="settings-name">Name</label>
          <input
            id="settings-name"
            maxLength={200}
            value={name}
            aria-invalid={errors.name ? true : undefined}
            aria-describedby={errors.name ? "settings-name-error" : undefined}
            onInput={(e) => edit("name", setName)(e.currentTarget.value)}
          />
          <FieldError id="settings-name-error" text={errors.name} />
        </div>
        <div class="field">
          <label for="settings-description">
            Description <span class="optional">(optional)</span>
          </label>
          <textarea
            id="settings-description"
            rows={2}
            maxLength={4000}
            value={description}
            aria-invalid={errors.description ? true : undefined}
            aria-describedby={errors.description ? "settings-description-error" : undefined}
            onInput={(e) => edit("description", setDescription)(e.currentTarget.value)}
          />
          <FieldError id="settings-description-error" text={errors.description} />
        </div>

        <VisibilityField name="settings-visibility" value={visibility} onChange={edit("access_code", setVisibility)} />
        {visibility === "private" && (
          <div class="field">
            {room.visibility === "private" && <CurrentCode room={room} />}
            <label for="settings-access-code">{room.visibility === "private" ? "New access code" : "Access code"}</label>
            <input
              id="settings-access-code"
              autocomplete="off"
              spellcheck={false}
              maxLength={256}
              value={accessCode}
              placeholder={room.visibility === "private" ? "Leave empty to keep the current one" : ""}
              aria-invalid={errors.access_code ? true : undefined}
              aria-describedby={errors.access_code ? "settings-access-code-error" : undefined}
              onInput={(e) => edit("access_code", setAccessCode)(e.currentTarget.value)}
            />
            <FieldError id="settings-access-code-error" text={errors.access_code} />
          </div>
        )}

        <div class="field">
          <label for="settings-slow-mode">Slow mode</label>
          <select
            id="settings-slow-mode"
            value={String(slowMode)}
            aria-describedby="settings-slow-mode-hint"
            onChange={(e) => edit("slow_mode", setSlowMode)(Number(e.currentTarget.value))}
          >
            {slowChoices.map((choice) => (
              <option key={choice.seconds} value={String(choice.seconds)}>
                {choice.label}
              </option>
            ))}
          </select>
          <p id="settings-slow-mode-hint" class="hint">
            How long each person waits between two messages. You never wait.
          </p>
          <FieldError id="settings-slow-mode-error" text={errors.slow_mode} />
        </div>

        <div class="field">
          <label for="settings-names-per-network">New people without an account, per network, per hour</label>
          <input
            id="settings-names-per-network"
            type="number"
            inputMode="numeric"
            min={1}
            max={1000}
            value={namesPerNetwork}
            aria-invalid={errors.names_per_network ? true : undefined}
            aria-describedby="settings-names-hint settings-names-error"
            onInput={(e) => edit("names_per_network", setNamesPerNetwork)(e.currentTarget.value)}
          />
          <p id="settings-names-hint" class="hint">
            A class or an office on one Wi-Fi shares one network. People who sign in are never counted.
          </p>
          <FieldError id="settings-names-error" text={errors.names_per_network} />
        </div>

        <MediaField name="settings-media" value={media} onChange={edit("form", setMedia)} />
        <ThemeField
          name="settings-theme"
          value={theme}
          onChange={(id) => {
            edit("form", setTheme)(id);
            applyTheme(id);
          }}
        />

        <div class="field">
          <label for="settings-retention">Keep messages for</label>
          <RetentionSelect id="settings-retention" value={retention} onChange={edit("retention", setRetention)} />
          <FieldError id="settings-retention-error" text={errors.retention} />
        </div>

        {selling !== undefined && (
          <BackRoomFields
            idPrefix="settings"
            draft={backRoom}
            onChange={(draft) => {
              setBackRoom(draft);
              setErrors((current) =>
                current.seat_price || current.seat_limit || current.back_room || current.form
                  ? { ...current, seat_price: undefined, seat_limit: undefined, back_room: undefined, form: undefined }
                  : current,
              );
            }}
            info={room.back_room}
            selling={selling}
            errors={{ price: errors.seat_price, limit: errors.seat_limit, form: errors.back_room } satisfies BackRoomErrors}
          />
        )}

        {errors.form && (
          <p class="form-error" role="alert">
            {errors.form}
          </p>
        )}
        <div class="modal-actions">
          <button type="button" class="button" onClick={leave} disabled={busy}>
            Cancel
          </button>
          <button type="submit" class="button primary" disabled={busy}>
            {busy ? "Saving…" : "Save settings"}
          </button>
        </div>

        {extra}
        <section class="danger-zone" aria-labelledby="danger-title">
          <h3 id="danger-title">Close the room</h3>
          <p class="hint">Stops all joining and sending, for good. You can delete everything in it too.</p>
          <button type="button" class="button danger" onClick={() => setClosing(true)} disabled={busy}>
            Close room…
          </button>
        </section>
      </form>
    </Modal>
  );
}
