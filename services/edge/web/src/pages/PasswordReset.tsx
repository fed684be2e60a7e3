import { useEffect, useRef, useState } from "preact/hooks";
import { ApiError } from "../api";
import { requestPasswordReset, resetPassword } from "../auth";
import { AppHeader } from "../components/AppHeader";
import { FormPage } from "../components/FormPage";
import { Link } from "../components/Link";
import { TextField, withoutError } from "../components/TextField";
import { navigate } from "../router";
import { emailError, passwordError } from "../validation";
import "./account.css";

function messageFor(error: unknown): string {
  // The server's messages are sentences written for people, waits included.
  return error instanceof ApiError ? error.message : "Something went wrong. Please try again.";
}

type Errors = Partial<Record<"email" | "password" | "confirm" | "form", string>>;

/** A page with a heading that takes focus, for outcomes that are not forms. */
function Notice({ title, children }: { title: string; children: preact.ComponentChildren }) {
  const heading = useRef<HTMLHeadingElement>(null);
  useEffect(() => heading.current?.focus(), []);
  return (
    <div class="page">
      <AppHeader />
      <main class="narrow" id="main">
        <h1 ref={heading} tabIndex={-1}>
          {title}
        </h1>
        <div class="card notice">{children}</div>
      </main>
    </div>
  );
}

export function ForgotPassword({ next }: { next: string }) {
  const [email, setEmail] = useState("");
  const [errors, setErrors] = useState<Errors>({});
  const [busy, setBusy] = useState(false);
  const [sent, setSent] = useState<string | null>(null);
  const loginLink = `/login?next=${encodeURIComponent(next)}`;

  const submit = async (event: Event): Promise<void> => {
    event.preventDefault();
    const problem = emailError(email);
    if (problem) {
      setErrors({ email: problem });
      return;
    }
    setBusy(true);
    try {
      setSent(await requestPasswordReset(email.trim()));
    } catch (caught) {
      const text = messageFor(caught);
      setErrors(caught instanceof ApiError && caught.code === "invalid_email" ? { email: text } : { form: text });
    } finally {
      setBusy(false);
    }
  };

  if (sent !== null) {
    return (
      <Notice title="Check your inbox">
        <p role="status">{sent}</p>
        <p class="hint">
          The link works once, for 30 minutes. No mail after a few minutes? Look in your spam folder, or ask again.
        </p>
        <p class="notice-actions">
          <Link href={loginLink} class="button primary">
            Back to log in
          </Link>
          <button type="button" class="link-button" onClick={() => setSent(null)}>
            Ask again
          </button>
        </p>
      </Notice>
    );
  }

  return (
    <FormPage
      title="Forgot your password?"
      busy={busy}
      onSubmit={submit}
      error={errors.form}
      submitLabel="Mail me a link"
      busyLabel="Sending…"
      footer={
        <p class="hint">
          Remembered it? <Link href={loginLink}>Log in</Link>
        </p>
      }
    >
      <p class="hint form-intro">
        Enter the email address you signed up with. We will mail you a link to choose a new password.
      </p>
      <TextField
        id="forgot-email"
        label="Email"
        type="email"
        autocomplete="email"
        value={email}
        error={errors.email}
        onValue={(value) => {
          setEmail(value);
          setErrors((current) => withoutError(current, "email"));
        }}
      />
    </FormPage>
  );
}

export function ResetPassword({ token }: { token: string }) {
  const [password, setPassword] = useState("");
  const [confirm, setConfirm] = useState("");
  const [errors, setErrors] = useState<Errors>({});
  // The link itself is spent or wrong: only a new one helps.
  const [linkProblem, setLinkProblem] = useState(false);
  const [busy, setBusy] = useState(false);

  if (!token) {
    return (
      <Notice title="This link is incomplete">
        <p>Open the link from your reset mail again (all of it), or ask for a new one.</p>
        <p class="notice-actions">
          <Link href="/forgot-password" class="button primary">
            Ask for a new link
          </Link>
        </p>
      </Notice>
    );
  }

  const submit = async (event: Event): Promise<void> => {
    event.preventDefault();
    const found: Errors = {
      password: passwordError(password) ?? undefined,
      confirm: !confirm ? "Type the new password again." : confirm !== password ? "The two passwords do not match." : undefined,
    };
    setErrors(found);
    if (found.password || found.confirm) return;
    setBusy(true);
    try {
      await resetPassword(token, password);
      // Signed in now; replacing the entry drops the spent token from the history.
      navigate("/", true);
    } catch (caught) {
      const text = messageFor(caught);
      const code = caught instanceof ApiError ? caught.code : "";
      if (code === "weak_password") setErrors({ password: text });
      else {
        setLinkProblem(code.startsWith("reset_token_"));
        setErrors({ form: text });
      }
      setBusy(false);
    }
  };

  return (
    <FormPage
      title="Choose a new password"
      busy={busy}
      onSubmit={submit}
      error={errors.form}
      submitLabel="Set new password"
      busyLabel="Saving…"
      footer={
        linkProblem ? (
          <p class="hint">
            <Link href="/forgot-password">Ask for a new link</Link>
          </p>
        ) : (
          <p class="hint">Setting a new password signs you out on every other device.</p>
        )
      }
    >
      <TextField
        id="reset-password"
        label="New password"
        type="password"
        autocomplete="new-password"
        value={password}
        error={errors.password}
        hint="At least 8 characters."
        onValue={(value) => {
          setPassword(value);
          setErrors((current) => withoutError(current, "password"));
        }}
      />
      <TextField
        id="reset-confirm"
        label="New password again"
        type="password"
        autocomplete="new-password"
        value={confirm}
        error={errors.confirm}
        onValue={(value) => {
          setConfirm(value);
          setErrors((current) => withoutError(current, "confirm"));
        }}
      />
    </FormPage>
  );
}
