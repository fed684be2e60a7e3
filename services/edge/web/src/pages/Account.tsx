import { useState } from "preact/hooks";
import { ApiError } from "../api";
import { changePassword, deleteAccount, logout, setReservedUsername } from "../auth";
import { AppHeader } from "../components/AppHeader";
import { Link } from "../components/Link";
import { Modal } from "../components/Modal";
import { useAccount } from "../components/useAccount";
import { useUsernameAvailability } from "../components/useUsernameAvailability";
import { navigate } from "../router";
import { passwordError, usernameError } from "../validation";
import { TextField, withoutError } from "../components/TextField";
import "./account.css";

function messageFor(error: unknown): string {
  // The server's messages are sentences written for people, waits included.
  return error instanceof ApiError ? error.message : "Something went wrong. Please try again.";
}

type Errors = Partial<Record<"username" | "current" | "password" | "confirm" | "form", string>>;

function ReservedUsername({ current }: { current: string | null }) {
  const [name, setName] = useState("");
  const [errors, setErrors] = useState<Errors>({});
  const [done, setDone] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const availability = useUsernameAvailability(name, true);
  const sameName = current !== null && name.trim().toLowerCase() === current.toLowerCase();

  const submit = async (event: Event): Promise<void> => {
    event.preventDefault();
    const problem = usernameError(name) ?? (name.trim() === current ? "This is already your reserved username." : null);
    if (problem) {
      setErrors({ username: problem });
      return;
    }
    setBusy(true);
    setDone(null);
    try {
      const identity = await setReservedUsername(name.trim());
      setDone(`Your reserved username is now ${identity.reserved_username}.`);
      setName("");
    } catch (caught) {
      const text = messageFor(caught);
      const code = caught instanceof ApiError ? caught.code : "";
      setErrors(code.startsWith("username_") && code !== "username_change_too_soon" ? { username: text } : { form: text });
    } finally {
      setBusy(false);
    }
  };

  const note =
    errors.username ??
    (sameName
      ? name.trim() === current
        ? "This is already your reserved username."
        : "Changes only how your name is written."
      : availability.state === "taken"
        ? availability.text
        : availability.state === "free"
          ? "✓ Available"
          : availability.state === "checking"
            ? "Checking…"
            : null);
  const noteIsProblem = Boolean(errors.username) || (!sameName && availability.state === "taken");

  return (
    <section class="card account-section" aria-labelledby="account-username-title">
      <h2 id="account-username-title">Reserved username</h2>
      <p class="account-current">
        {current ? (
          <>
            Yours now: <strong>{current}</strong> <span class="badge verified">verified</span>
          </>
        ) : (
          "You have not reserved a username yet."
        )}
      </p>
      <form class="form" onSubmit={(e) => void submit(e)} noValidate aria-busy={busy}>
        <div class="field">
          <label for="account-username">{current ? "New reserved username" : "Reserved username"}</label>
          <input
            id="account-username"
            autocomplete="username"
            autocapitalize="off"
            spellcheck={false}
            maxLength={15}
            value={name}
            aria-invalid={noteIsProblem ? true : undefined}
            aria-describedby="account-username-hint account-username-note"
            onInput={(e) => {
              setName(e.currentTarget.value);
              setDone(null);
              setErrors((now) => withoutError(now, "username"));
            }}
          />
          <p id="account-username-hint" class="hint">
            5–15 letters, digits or underscores. Yours alone, with a verified badge in every room.
            {current &&
              " Your old name loses its badge in the rooms you joined under it and is held back from others for 30 days. You can change it once a day."}
          </p>
          <p id="account-username-note" class={noteIsProblem ? "field-error" : "hint"} aria-live="polite">
            {note}
          </p>
        </div>
        {errors.form && (
          <p class="form-error" role="alert">
            {errors.form}
          </p>
        )}
        {done && (
          <p class="form-success" role="status">
            {done}
          </p>
        )}
        <button type="submit" class="button primary" disabled={busy}>
          {busy ? "Saving…" : current ? "Change username" : "Reserve username"}
        </button>
      </form>
    </section>
  );
}

function PasswordChange() {
  const [currentPassword, setCurrentPassword] = useState("");
  const [password, setPassword] = useState("");
  const [confirm, setConfirm] = useState("");
  const [errors, setErrors] = useState<Errors>({});
  const [done, setDone] = useState(false);
  const [busy, setBusy] = useState(false);

  const submit = async (event: Event): Promise<void> => {
    event.preventDefault();
    const found: Errors = {
      current: currentPassword ? undefined : "Enter your current password.",
      password: passwordError(password) ?? undefined,
      confirm: !confirm ? "Type the new password again." : confirm !== password ? "The two passwords do not match." : undefined,
    };
    setErrors(found);
    if (found.current || found.password || found.confirm) return;
    setBusy(true);
    setDone(false);
    try {
      await changePassword(currentPassword, password);
      setDone(true);
      setCurrentPassword("");
      setPassword("");
      setConfirm("");
    } catch (caught) {
      const text = messageFor(caught);
      const code = caught instanceof ApiError ? caught.code : "";
      if (code === "current_password_incorrect") setErrors({ current: text });
      else if (code === "weak_password") setErrors({ password: text });
      else setErrors({ form: text });
    } finally {
      setBusy(false);
    }
  };

  const field = (
    id: string,
    key: "current" | "password" | "confirm",
    label: string,
    value: string,
    set: (value: string) => void,
    autocomplete: string,
  ) => (
    <TextField
      id={id}
      label={label}
      type="password"
      autocomplete={autocomplete}
      value={value}
      error={errors[key]}
      onValue={(next) => {
        set(next);
        setDone(false);
        setErrors((now) => withoutError(now, key));
      }}
    />
  );

  return (
    <section class="card account-section" aria-labelledby="account-password-title">
      <h2 id="account-password-title">Password</h2>
      <form class="form" onSubmit={(e) => void submit(e)} noValidate aria-busy={busy}>
        {field("account-current-password", "current", "Current password", currentPassword, setCurrentPassword, "current-password")}
        {field("account-new-password", "password", "New password", password, setPassword, "new-password")}
        {field("account-confirm-password", "confirm", "New password again", confirm, setConfirm, "new-password")}
        <p class="hint account-password-hint">At least 8 characters. Changing it signs you out on every other device.</p>
        {errors.form && (
          <p class="form-error" role="alert">
            {errors.form}
          </p>
        )}
        {done && (
          <p class="form-success" role="status">
            Your password was changed. Every other device was signed out.
          </p>
        )}
        <button type="submit" class="button primary" disabled={busy}>
          {busy ? "Changing…" : "Change password"}
        </button>
      </form>
    </section>
  );
}

// What the person types to say they mean it.
const CONFIRM_WORD = "DELETE";

type DeleteErrors = Partial<Record<"password" | "confirm" | "form", string>>;

/** Deleting the account asks for the password and a typed word, and says first what goes and what stays. */
function DeleteAccountDialog({ reservedUsername, onDismiss }: { reservedUsername: string | null; onDismiss: () => void }) {
  const [password, setPassword] = useState("");
  const [confirm, setConfirm] = useState("");
  const [erase, setErase] = useState(false);
  const [errors, setErrors] = useState<DeleteErrors>({});
  const [busy, setBusy] = useState(false);

  const submit = async (event: Event): Promise<void> => {
    event.preventDefault();
    const found: DeleteErrors = {
      password: password ? undefined : "Enter your password.",
      confirm: confirm.trim() === CONFIRM_WORD ? undefined : `Type ${CONFIRM_WORD}, in capitals, to confirm.`,
    };
    setErrors(found);
    if (found.password || found.confirm) return;
    setBusy(true);
    try {
      await deleteAccount(password, erase);
      // Signed out on this device already; the home page says what happened.
      navigate("/", true);
    } catch (caught) {
      const text = messageFor(caught);
      const code = caught instanceof ApiError ? caught.code : "";
      setErrors(code === "wrong_password" ? { password: text } : { form: text });
      setBusy(false);
    }
  };

  return (
    <Modal
      title="Delete your account?"
      titleId="delete-account-title"
      describedBy="delete-account-what"
      onDismiss={busy ? undefined : onDismiss}
      class="delete-account-dialog"
    >
      <form class="form" onSubmit={(e) => void submit(e)} noValidate aria-busy={busy}>
        <div id="delete-account-what">
          <p>This cannot be undone.</p>
          <ul class="delete-account-list">
            <li>
              Your email, password and sign-ins are deleted
              {reservedUsername ? (
                <>
                  , and <strong>{reservedUsername}</strong> is free for anyone to take.
                </>
              ) : (
                "."
              )}
            </li>
            <li>
              {erase
                ? "Every message you sent, in every room, is deleted."
                : "Your messages stay in the rooms under a neutral name (deleted_ and a few letters) that points at nobody."}
            </li>
            <li>Rooms you host are closed: nobody can join them or send messages any more.</li>
          </ul>
        </div>
        <label class="choice delete-account-erase">
          <input type="checkbox" checked={erase} onChange={(e) => setErase(e.currentTarget.checked)} />
          Also erase my messages
        </label>
        <TextField
          id="delete-account-password"
          label="Your password"
          type="password"
          autocomplete="current-password"
          value={password}
          error={errors.password}
          onValue={(next) => {
            setPassword(next);
            setErrors((now) => withoutError(now, "password"));
          }}
        />
        <TextField
          id="delete-account-confirm"
          label={
            <>
              Type <strong>{CONFIRM_WORD}</strong> to confirm
            </>
          }
          value={confirm}
          error={errors.confirm}
          onValue={(next) => {
            setConfirm(next);
            setErrors((now) => withoutError(now, "confirm"));
          }}
        />
        {errors.form && (
          <p class="form-error" role="alert">
            {errors.form}
          </p>
        )}
        <div class="modal-actions">
          <button type="button" class="button" onClick={onDismiss} disabled={busy}>
            Keep my account
          </button>
          <button type="submit" class="button danger" disabled={busy}>
            {busy ? "Deleting…" : "Delete my account"}
          </button>
        </div>
      </form>
    </Modal>
  );
}

function DeleteAccount({ reservedUsername }: { reservedUsername: string | null }) {
  const [open, setOpen] = useState(false);
  return (
    <section class="card account-section" aria-labelledby="account-delete-title">
      <h2 id="account-delete-title">Delete account</h2>
      <p class="hint">
        Deletes your account for good: your sign-in and reserved username go, and the rooms you host close. You choose
        whether your messages stay under a neutral name or are erased.
      </p>
      <button type="button" class="button danger" onClick={() => setOpen(true)}>
        Delete account…
      </button>
      {open && <DeleteAccountDialog reservedUsername={reservedUsername} onDismiss={() => setOpen(false)} />}
    </section>
  );
}

/** The signed-in account: its email, reserved username, password, logging out, and deleting it. */
export function Account() {
  const signedIn = useAccount();

  if (!signedIn) {
    return (
      <div class="page">
        <AppHeader />
        <main class="narrow" id="main">
          <h1>Your account</h1>
          <div class="card notice">
            <p>You are not signed in.</p>
            <p class="notice-actions">
              <Link href="/login?next=%2Faccount" class="button primary">
                Log in
              </Link>
              <Link href="/signup?next=%2Faccount" class="link-button">
                Create an account
              </Link>
            </p>
          </div>
        </main>
      </div>
    );
  }

  const identity = signedIn.identity;
  return (
    <div class="page">
      <AppHeader />
      <main class="narrow account-page" id="main">
        <h1>Your account</h1>
        <section class="card account-section" aria-labelledby="account-email-title">
          <h2 id="account-email-title">Email</h2>
          <p class="account-email">{identity.email}</p>
          <p class="hint">You log in with this address; password reset links are mailed to it.</p>
        </section>
        <ReservedUsername key={identity.id} current={identity.reserved_username ?? null} />
        <PasswordChange key={identity.id} />
        <section class="card account-section" aria-labelledby="account-money-title">
          <h2 id="account-money-title">Tips and paid pins</h2>
          <p class="hint">What your rooms earned, where the money goes, and what you paid for in other rooms.</p>
          <p class="notice-actions">
            <Link href="/earnings" class="button small">
              Earnings
            </Link>
            <Link href="/payouts" class="button small">
              Payouts
            </Link>
            <Link href="/payments" class="button small">
              Your payments
            </Link>
          </p>
        </section>
        <section class="card account-section" aria-labelledby="account-logout-title">
          <h2 id="account-logout-title">Log out</h2>
          <p class="hint">This device goes back to its anonymous session; your account stays as it is.</p>
          <button
            type="button"
            class="button"
            onClick={() => {
              void logout();
              navigate("/", true);
            }}
          >
            Log out
          </button>
        </section>
        <DeleteAccount key={identity.id} reservedUsername={identity.reserved_username ?? null} />
      </main>
    </div>
  );
}
