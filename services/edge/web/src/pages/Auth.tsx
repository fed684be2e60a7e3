import { useEffect, useState } from "preact/hooks";
import { ApiError, waitWords } from "../api";
import { login, register } from "../auth";
import { FormPage } from "../components/FormPage";
import { Link } from "../components/Link";
import { TextField, withoutError } from "../components/TextField";
import { useAccount } from "../components/useAccount";
import { useUsernameAvailability } from "../components/useUsernameAvailability";
import { navigate } from "../router";
import { emailError, passwordError, usernameError } from "../validation";

function messageFor(error: unknown): string {
  if (error instanceof ApiError) {
    if (error.status === 429) return `Too many attempts. Try again ${waitWords(error.retryAfter)}.`;
    return error.message;
  }
  return "Something went wrong. Please try again.";
}

type Errors = Partial<Record<"email" | "password" | "username" | "form", string>>;

/** Someone already signed in has no business on these forms: on to where they were going. */
function useLeaveWhenSignedIn(next: string, busy: boolean): void {
  const signedIn = useAccount();
  useEffect(() => {
    if (signedIn && !busy) navigate(next, true);
  }, [signedIn, busy, next]);
}

export function Login({ next }: { next: string }) {
  const [email, setEmail] = useState("");
  const [password, setPassword] = useState("");
  const [errors, setErrors] = useState<Errors>({});
  const [busy, setBusy] = useState(false);
  useLeaveWhenSignedIn(next, busy);

  const submit = async (event: Event): Promise<void> => {
    event.preventDefault();
    const found: Errors = {
      email: emailError(email) ?? undefined,
      password: password ? undefined : "Enter your password.",
    };
    setErrors(found);
    if (found.email || found.password) return;
    setBusy(true);
    try {
      await login(email.trim(), password);
      navigate(next, true);
    } catch (caught) {
      setErrors({ form: messageFor(caught) });
      setBusy(false);
    }
  };

  return (
    <FormPage
      title="Log in"
      busy={busy}
      onSubmit={submit}
      error={errors.form}
      submitLabel="Log in"
      busyLabel="Logging in…"
      footer={
        <p class="hint">
          New here? <Link href={`/signup?next=${encodeURIComponent(next)}`}>Create an account</Link>
        </p>
      }
    >
      <TextField
        id="login-email"
        label="Email"
        type="email"
        autocomplete="email"
        value={email}
        error={errors.email}
        onValue={(value) => {
          setEmail(value);
          setErrors((now) => withoutError(now, "email"));
        }}
      />
      <TextField
        id="login-password"
        label="Password"
        type="password"
        autocomplete="current-password"
        value={password}
        error={errors.password}
        onValue={(value) => {
          setPassword(value);
          setErrors((now) => withoutError(now, "password"));
        }}
      >
        <p class="hint">
          <Link href={`/forgot-password?next=${encodeURIComponent(next)}`}>Forgot your password?</Link>
        </p>
      </TextField>
    </FormPage>
  );
}

export function Signup({ next }: { next: string }) {
  const [email, setEmail] = useState("");
  const [password, setPassword] = useState("");
  const [username, setUsername] = useState("");
  const availability = useUsernameAvailability(username);
  const [errors, setErrors] = useState<Errors>({});
  const [busy, setBusy] = useState(false);
  useLeaveWhenSignedIn(next, busy);

  const submit = async (event: Event): Promise<void> => {
    event.preventDefault();
    const found = {
      email: emailError(email) ?? undefined,
      password: passwordError(password) ?? undefined,
      username: username.trim() ? (usernameError(username) ?? undefined) : undefined,
    };
    setErrors(found);
    if (found.email || found.password || found.username) return;
    setBusy(true);
    try {
      await register(email.trim(), password, username.trim() || null);
      navigate(next, true);
    } catch (caught) {
      const text = messageFor(caught);
      const code = caught instanceof ApiError ? caught.code : "";
      if (code.includes("email")) setErrors({ email: text });
      else if (code.includes("password")) setErrors({ password: text });
      else if (code.includes("username")) setErrors({ username: text });
      else setErrors({ form: text });
      setBusy(false);
    }
  };

  const usernameNote =
    errors.username ??
    (availability.state === "taken"
      ? availability.text
      : availability.state === "free"
        ? "✓ Available"
        : availability.state === "checking"
          ? "Checking…"
          : null);

  return (
    <FormPage
      title="Create an account"
      busy={busy}
      onSubmit={submit}
      error={errors.form}
      submitLabel="Sign up"
      busyLabel="Creating account…"
      footer={
        <p class="hint">
          Have an account? <Link href={`/login?next=${encodeURIComponent(next)}`}>Log in</Link>
        </p>
      }
    >
      <TextField
        id="signup-email"
        label="Email"
        type="email"
        autocomplete="email"
        value={email}
        error={errors.email}
        onValue={(value) => {
          setEmail(value);
          setErrors((now) => withoutError(now, "email"));
        }}
      />
      <TextField
        id="signup-password"
        label="Password"
        type="password"
        autocomplete="new-password"
        value={password}
        error={errors.password}
        hint="At least 8 characters."
        onValue={(value) => {
          setPassword(value);
          setErrors((now) => withoutError(now, "password"));
        }}
      />
      <div class="field">
        <label for="signup-username">
          Reserved username <span class="optional">(optional)</span>
        </label>
        <input
          id="signup-username"
          autocomplete="username"
          autocapitalize="off"
          spellcheck={false}
          maxLength={15}
          value={username}
          aria-invalid={errors.username || availability.state === "taken" ? true : undefined}
          aria-describedby="signup-username-hint signup-username-note"
          onInput={(e) => {
            setUsername(e.currentTarget.value);
            setErrors((now) => withoutError(now, "username"));
          }}
        />
        <p id="signup-username-hint" class="hint">
          5–15 letters, digits or underscores. Yours alone, with a verified badge in every room.
        </p>
        <p
          id="signup-username-note"
          class={errors.username || availability.state === "taken" ? "field-error" : "hint"}
          aria-live="polite"
        >
          {usernameNote}
        </p>
      </div>
    </FormPage>
  );
}
