import { useEffect, useRef, useState } from "preact/hooks";
import { ApiError, waitWords, type Room, type Suggestion } from "../api";
import { CheckIcon, DiceIcon } from "../components/Icons";
import { Link } from "../components/Link";
import { Modal } from "../components/Modal";
import { useAccount } from "../components/useAccount";
import { hostsRoom, joinRoom, suggestUsername, SuggestError, type RoomSession } from "../rooms";
import { unlockSound } from "../sound";
import { usernameError } from "../validation";

type Mode = "reserved" | "dice" | "typed";
type Errors = { username?: string; access_code?: string; form?: string; signInLifts?: boolean };
// Limits on people without an account: signing in lifts them, and the dialog says so with links.
const ACCOUNT_LIFTS = new Set(["too_many_anonymous_usernames", "too_many_sessions"]);

function joinErrors(error: unknown): Errors {
  if (!(error instanceof ApiError)) return { form: "Something went wrong. Please try again." };
  if (ACCOUNT_LIFTS.has(error.code)) return { form: error.message, signInLifts: true };
  if (error.code === "too_many_attempts") {
    return { access_code: `Too many wrong codes. Try again ${waitWords(error.retryAfter)}.` };
  }
  if (error.code.includes("access_code")) return { access_code: error.message };
  if (error.code.includes("username")) return { username: error.message };
  return { form: error.message };
}

/** Pick a username (dice roll, the reserved one, or typed where this edge has no dice), give the
 * access code of a private room, and join. The join click also unlocks sound for this page. */
export function JoinDialog({ room, onJoined }: { room: Room; onJoined: (session: RoomSession) => void }) {
  const signedIn = useAccount();
  const reserved = signedIn?.identity.reserved_username ?? null;
  const [mode, setMode] = useState<Mode>(reserved ? "reserved" : "dice");
  const [dice, setDice] = useState<Suggestion | null>(null);
  const [rolling, setRolling] = useState(false);
  const [typed, setTyped] = useState("");
  const [accessCode, setAccessCode] = useState("");
  const [errors, setErrors] = useState<Errors>({});
  const [busy, setBusy] = useState(false);
  const rolledOnce = useRef(false);
  const needsCode = room.visibility === "private" && !hostsRoom(room.code);

  const roll = async (): Promise<void> => {
    setRolling(true);
    setErrors((e) => ({ ...e, username: undefined }));
    try {
      const suggestion = await suggestUsername(room.code);
      if (suggestion === null) setMode((m) => (m === "dice" ? "typed" : m));
      else setDice(suggestion);
    } catch (error) {
      if (error instanceof SuggestError && error.status === 429) {
        setErrors((e) => ({ ...e, username: `No rolls left for now. Try again ${waitWords(error.retryAfter)}.` }));
        if (dice) setDice({ ...dice, remaining: 0 });
      } else if (error instanceof SuggestError) {
        setErrors((e) => ({ ...e, username: error.message }));
      } else {
        // No session could be made (rate limit on new sessions, network): say so for the whole form.
        const mapped = joinErrors(error);
        setErrors((e) => ({
          ...e,
          form: mapped.form ?? "Could not start a session. Please try again.",
          signInLifts: mapped.signInLifts,
        }));
      }
    } finally {
      setRolling(false);
    }
  };

  useEffect(() => {
    if (mode === "dice" && !rolledOnce.current) {
      rolledOnce.current = true;
      void roll();
    }
  }, [mode]);

  useEffect(() => {
    if (reserved) setMode("reserved");
  }, [reserved]);

  const submit = async (event: Event): Promise<void> => {
    event.preventDefault();
    // Inside the user's gesture: the only moment iOS lets us start audio for later messages.
    unlockSound();
    const found: Errors = {};
    let username = "";
    if (mode === "reserved" && reserved) username = reserved;
    else if (mode === "dice") {
      if (!dice) found.username = "Roll the dice for a username first.";
      else username = dice.username;
    } else {
      username = typed.trim();
      const problem = usernameError(username);
      if (problem) found.username = problem;
    }
    if (needsCode && !accessCode.trim()) found.access_code = "Enter the room's access code.";
    setErrors(found);
    if (found.username || found.access_code) {
      document.getElementById(found.username && mode === "typed" ? "join-username" : "join-access-code")?.focus();
      return;
    }
    setBusy(true);
    try {
      onJoined(await joinRoom(room.code, username, needsCode ? accessCode.trim() : null));
    } catch (error) {
      const mapped = joinErrors(error);
      setErrors(mapped);
      setBusy(false);
      if (mapped.access_code) document.getElementById("join-access-code")?.focus();
      else if (mapped.username && mode === "typed") document.getElementById("join-username")?.focus();
    }
  };

  return (
    <Modal title={`Join ${room.name}`} titleId="join-title" describedBy="join-description" class="join-dialog">
      <form class="form" onSubmit={(e) => void submit(e)} noValidate aria-busy={busy}>
        <p id="join-description" class="room-description">
          {room.description || (room.visibility === "private" ? "A private ChatPop." : "A ChatPop anyone with the link can join.")}
        </p>

        {mode === "reserved" && reserved && (
          <div class="field">
            <p class="label" id="reserved-label">
              Your username
            </p>
            <p class="username-display" aria-labelledby="reserved-label">
              {reserved}{" "}
              <span class="badge verified" title="Verified username">
                <CheckIcon /> verified
              </span>
            </p>
            <button type="button" class="link-button" onClick={() => setMode("dice")}>
              Use a random name instead
            </button>
          </div>
        )}

        {mode === "dice" && (
          <div class="field">
            <p class="label" id="dice-label">
              Your username
            </p>
            <div class="dice">
              <output class="username-display" id="dice-name" aria-labelledby="dice-label" aria-live="polite">
                {dice?.username ?? (rolling ? "Rolling…" : "—")}
              </output>
              <button
                type="button"
                class="button"
                onClick={() => void roll()}
                disabled={rolling || busy || dice?.remaining === 0}
                aria-describedby="dice-remaining"
              >
                <DiceIcon />
                Roll again
              </button>
            </div>
            <p id="dice-remaining" class="hint">
              {dice ? `${dice.remaining} ${dice.remaining === 1 ? "roll" : "rolls"} left` : " "}
            </p>
            {reserved && (
              <button type="button" class="link-button" onClick={() => setMode("reserved")}>
                Use my reserved name, {reserved}
              </button>
            )}
            {errors.username && (
              <p class="field-error" role="alert">
                {errors.username}
              </p>
            )}
          </div>
        )}

        {mode === "typed" && (
          <div class="field">
            <label for="join-username">Username</label>
            <input
              id="join-username"
              name="username"
              autocomplete="off"
              autocapitalize="off"
              spellcheck={false}
              maxLength={15}
              value={typed}
              aria-invalid={errors.username ? true : undefined}
              aria-describedby="join-username-hint"
              onInput={(e) => {
                setTyped(e.currentTarget.value);
                setErrors((current) => ({ ...current, username: undefined }));
              }}
            />
            <p id="join-username-hint" class={errors.username ? "field-error" : "hint"} aria-live="polite">
              {errors.username ?? "5–15 letters, digits or underscores."}
            </p>
          </div>
        )}

        {needsCode && (
          <div class="field">
            <label for="join-access-code">Access code</label>
            <input
              id="join-access-code"
              name="access_code"
              autocomplete="off"
              spellcheck={false}
              value={accessCode}
              aria-invalid={errors.access_code ? true : undefined}
              aria-describedby={errors.access_code ? "join-access-code-error" : undefined}
              onInput={(e) => {
                setAccessCode(e.currentTarget.value);
                setErrors((current) => ({ ...current, access_code: undefined }));
              }}
            />
            {errors.access_code && (
              <p id="join-access-code-error" class="field-error" role="alert">
                {errors.access_code}
              </p>
            )}
          </div>
        )}

        {errors.form && (
          <p class="form-error" role="alert">
            {errors.form}
            {errors.signInLifts && (
              <>
                {" "}
                <Link href={`/login?next=${encodeURIComponent(`/c/${room.code}`)}`}>Log in</Link> or{" "}
                <Link href={`/signup?next=${encodeURIComponent(`/c/${room.code}`)}`}>create an account</Link>.
              </>
            )}
          </p>
        )}
        <button type="submit" class="button primary big" disabled={busy || (mode === "dice" && !dice)}>
          {busy ? "Joining…" : "Join chat"}
        </button>
        {!signedIn && (
          <p class="hint join-account">
            Have an account? <Link href={`/login?next=${encodeURIComponent(`/c/${room.code}`)}`}>Log in</Link> to
            use your reserved username.
          </p>
        )}
      </form>
    </Modal>
  );
}
