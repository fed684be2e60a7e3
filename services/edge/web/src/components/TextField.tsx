import type { ComponentChildren, TargetedInputEvent } from "preact";

/** A form's errors without one field's (and without the form-wide one): what is left once that field
 * is edited, so a stale error never stays up after the field was fixed. */
export function withoutError<E extends { form?: string }>(errors: E, field: keyof E): E {
  const { [field]: _field, form: _form, ...rest } = errors;
  return rest as E;
}

interface TextFieldProps {
  id: string;
  label: ComponentChildren;
  value: string;
  onValue: (value: string) => void;
  type?: "text" | "email" | "password";
  autocomplete?: string;
  /** Shown under the field, announced, and in place of the hint while there is one. */
  error?: string;
  hint?: string;
  /** Anything to show under the field whatever happens (a link, say). */
  children?: ComponentChildren;
}

/** One labelled text input with its hint or error, wired for screen readers. */
export function TextField({ id, label, value, onValue, type = "text", autocomplete, error, hint, children }: TextFieldProps) {
  const note = error ? `${id}-error` : hint ? `${id}-hint` : undefined;
  const input = {
    id,
    autocomplete,
    value,
    "aria-invalid": error ? true : undefined,
    "aria-describedby": note,
    onInput: (e: TargetedInputEvent<HTMLInputElement>) => onValue(e.currentTarget.value),
  };
  return (
    <div class="field">
      <label for={id}>{label}</label>
      {/* One element per type: the DOM typings tell input types apart. */}
      {type === "password" ? <input type="password" {...input} /> : type === "email" ? <input type="email" {...input} /> : <input type="text" {...input} />}
      {error ? (
        <p id={`${id}-error`} class="field-error" role="alert">
          {error}
        </p>
      ) : (
        hint && (
          <p id={`${id}-hint`} class="hint">
            {hint}
          </p>
        )
      )}
      {children}
    </div>
  );
}
