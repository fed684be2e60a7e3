import { useEffect, useState } from "preact/hooks";
import { ApiError, waitWords, type ThemeName } from "../api";
import { account } from "../auth";
import { backRoomChanges, BackRoomFields, draftOf, type BackRoomErrors, type SeatSelling } from "../components/BackRoomSettings";
import { FormPage } from "../components/FormPage";
import { fetchPaymentsConfig, fetchPayoutAccount } from "../payments";
import { Link } from "../components/Link";
import { MediaField, RetentionSelect, ThemeField, VisibilityField } from "../components/RoomFields";
import { createRoom } from "../rooms";
import { navigate } from "../router";
import { applyTheme, DEFAULT_THEME, rememberRoomTheme } from "../themes";

type Field = "name" | "description" | "access_code" | "seat_price" | "seat_limit" | "back_room" | "form";
// Limits on people without an account: the form says that signing in lifts them.
const ACCOUNT_LIFTS = new Set(["too_many_rooms", "too_many_sessions"]);

/** Which field a server error is about, so it is shown next to that field. */
function fieldOf(error: ApiError): Field {
  if (error.code.includes("seat_price")) return "seat_price";
  if (error.code.includes("seat_limit")) return "seat_limit";
  if (error.code.includes("back_room") || error.code === "payments_not_enabled") return "back_room";
  if (error.code.includes("name")) return "name";
  if (error.code.includes("description")) return "description";
  if (error.code.includes("access_code")) return "access_code";
  return "form";
}

export function Create() {
  const [name, setName] = useState("");
  const [description, setDescription] = useState("");
  const [visibility, setVisibility] = useState<"public" | "private">("public");
  const [accessCode, setAccessCode] = useState("");
  const [media, setMedia] = useState({ photo: false, voice: false, video: false });
  const [theme, setTheme] = useState<ThemeName>(DEFAULT_THEME);
  const [retention, setRetention] = useState(30);
  const [errors, setErrors] = useState<Partial<Record<Field, string>>>({});
  const [busy, setBusy] = useState(false);
  const [signInLifts, setSignInLifts] = useState(false);
  const [backRoom, setBackRoom] = useState(() => draftOf(null));
  const [selling, setSelling] = useState<SeatSelling | null>(null);

  // A Back Room sells seats: only a host with an account who can receive money may open one.
  useEffect(() => {
    if (!account()) {
      setSelling({ can: false, reason: "anonymous_host", currency: "usd", testMode: false });
      return;
    }
    let current = true;
    Promise.all([fetchPayoutAccount(), fetchPaymentsConfig()]).then(
      ([payout, config]) =>
        current &&
        setSelling({
          can: payout?.can_receive === true,
          reason: payout?.can_receive ? "" : "host_not_onboarded",
          currency: config.currency || "usd",
          testMode: config.mode === "test",
        }),
      () => current && setSelling({ can: false, reason: "unavailable", currency: "usd", testMode: false }),
    );
    return () => {
      current = false;
    };
  }, []);

  /** A field's error goes away as soon as that field changes. */
  const edit =
    <T,>(field: Field, set: (value: T) => void) =>
    (value: T): void => {
      set(value);
      setErrors((current) => (current[field] ? { ...current, [field]: undefined } : current));
    };

  // The page previews the chosen theme, modal colours and toolbar colour included.
  useEffect(() => applyTheme(theme), [theme]);

  const submit = async (event: Event): Promise<void> => {
    event.preventDefault();
    const found: Partial<Record<Field, string>> = {};
    if (!name.trim()) found.name = "Give your ChatPop a name.";
    if (visibility === "private" && !accessCode.trim()) found.access_code = "A private room needs an access code.";
    const back = backRoomChanges(backRoom, null, selling?.currency ?? "usd");
    if (back.errors.price) found.seat_price = back.errors.price;
    if (back.errors.limit) found.seat_limit = back.errors.limit;
    setErrors(found);
    if (Object.keys(found).length) {
      document.getElementById(found.name ? "room-name" : found.access_code ? "access-code" : found.seat_price ? "create-seat-price" : "create-seat-limit")?.focus();
      return;
    }
    setBusy(true);
    try {
      const room = await createRoom({
        name: name.trim(),
        description: description.trim(),
        visibility,
        ...(visibility === "private" ? { access_code: accessCode.trim() } : {}),
        media,
        theme,
        retention_days: retention,
        ...(back.changes ? { back_room: back.changes } : {}),
      });
      rememberRoomTheme(room.code, room.theme);
      navigate(`/c/${room.code}`);
    } catch (error) {
      if (error instanceof ApiError) {
        setSignInLifts(ACCOUNT_LIFTS.has(error.code));
        const text =
          error.status === 429 && !error.message ? `Too many rooms for now. Try again ${waitWords(error.retryAfter)}.` : error.message;
        setErrors({ [fieldOf(error)]: text });
      } else {
        setErrors({ form: "Something went wrong. Please try again." });
      }
      setBusy(false);
    }
  };

  const describe = (field: Field, hint?: string): string | undefined =>
    [errors[field] ? `${field}-error` : null, hint ?? null].filter(Boolean).join(" ") || undefined;

  return (
    <FormPage
      title="Create a ChatPop"
      busy={busy}
      onSubmit={submit}
      error={errors.form}
      footer={
        signInLifts ? (
          <p class="hint" role="note">
            Accounts have no such limit: <Link href="/login?next=%2Fcreate">log in</Link> or{" "}
            <Link href="/signup?next=%2Fcreate">create an account</Link>.
          </p>
        ) : undefined
      }
      submitLabel="Create ChatPop"
      busyLabel="Creating…"
    >
      <div class="field">
        <label for="room-name">Name</label>
        <input
          id="room-name"
          name="name"
          maxLength={200}
          required
          value={name}
          aria-invalid={errors.name ? true : undefined}
          aria-describedby={describe("name")}
          onInput={(e) => edit("name", setName)(e.currentTarget.value)}
        />
        {errors.name && (
          <p id="name-error" class="field-error">
            {errors.name}
          </p>
        )}
      </div>
      <div class="field">
        <label for="room-description">
          Description <span class="optional">(optional)</span>
        </label>
        <textarea
          id="room-description"
          name="description"
          rows={3}
          maxLength={4000}
          value={description}
          aria-describedby={describe("description")}
          onInput={(e) => edit("description", setDescription)(e.currentTarget.value)}
        />
        {errors.description && (
          <p id="description-error" class="field-error">
            {errors.description}
          </p>
        )}
      </div>
      <VisibilityField name="visibility" value={visibility} onChange={edit("access_code", setVisibility)} />
      {visibility === "private" && (
        <div class="field">
          <label for="access-code">Access code</label>
          <input
            id="access-code"
            name="access_code"
            autocomplete="off"
            maxLength={256}
            value={accessCode}
            aria-invalid={errors.access_code ? true : undefined}
            aria-describedby={describe("access_code", "access-code-hint")}
            onInput={(e) => edit("access_code", setAccessCode)(e.currentTarget.value)}
          />
          <p id="access-code-hint" class="hint">
            Share it with the people you invite.
          </p>
          {errors.access_code && (
            <p id="access_code-error" class="field-error">
              {errors.access_code}
            </p>
          )}
        </div>
      )}
      <MediaField name="media" value={media} onChange={setMedia} />
      <ThemeField name="theme" value={theme} onChange={setTheme} />
      <div class="field">
        <label for="retention">Keep messages for</label>
        <RetentionSelect id="retention" value={retention} onChange={setRetention} />
      </div>
      <BackRoomFields
        idPrefix="create"
        draft={backRoom}
        onChange={(draft) => {
          setBackRoom(draft);
          setErrors((current) => ({ ...current, seat_price: undefined, seat_limit: undefined, back_room: undefined }));
        }}
        info={null}
        selling={selling}
        errors={{ price: errors.seat_price, limit: errors.seat_limit, form: errors.back_room } satisfies BackRoomErrors}
      />
    </FormPage>
  );
}
