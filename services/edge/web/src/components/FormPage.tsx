import type { ComponentChildren } from "preact";
import { AppHeader } from "./AppHeader";

interface FormPageProps {
  title: string;
  busy: boolean;
  onSubmit: (event: Event) => Promise<void>;
  /** A form-wide error, announced to screen readers. */
  error?: string | null;
  submitLabel: string;
  busyLabel: string;
  /** The form's fields. */
  children: ComponentChildren;
  /** Shown under the submit button, inside the form (links to the other forms). */
  footer?: ComponentChildren;
}

/** The shell every full-page form shares: header, title, card, error line and submit button. */
export function FormPage({ title, busy, onSubmit, error, submitLabel, busyLabel, children, footer }: FormPageProps) {
  return (
    <div class="page">
      <AppHeader />
      <main class="narrow" id="main">
        <h1>{title}</h1>
        <form class="card form" onSubmit={(e) => void onSubmit(e)} noValidate aria-busy={busy}>
          {children}
          {error && (
            <p class="form-error" role="alert">
              {error}
            </p>
          )}
          <button type="submit" class="button primary big" disabled={busy}>
            {busy ? busyLabel : submitLabel}
          </button>
          {footer}
        </form>
      </main>
    </div>
  );
}
