/** The room's setting fields that creating a room and editing it share. */
import type { Media, ThemeName } from "../api";
import { RETENTION_CHOICES } from "../roomChoices";
import { THEME_IDS, THEMES } from "../themes";

type Visibility = "public" | "private";

export function VisibilityField({ name, value, onChange }: { name: string; value: Visibility; onChange: (value: Visibility) => void }) {
  return (
    <fieldset class="field">
      <legend>Who can join</legend>
      <div class="choices">
        <label class="choice">
          <input type="radio" name={name} value="public" checked={value === "public"} onChange={() => onChange("public")} />
          Public: anyone with the link
        </label>
        <label class="choice">
          <input type="radio" name={name} value="private" checked={value === "private"} onChange={() => onChange("private")} />
          Private: the link and an access code
        </label>
      </div>
    </fieldset>
  );
}

export function MediaField({ name, value, onChange }: { name: string; value: Media; onChange: (value: Media) => void }) {
  return (
    <fieldset class="field">
      <legend>Allow media</legend>
      <div class="choices inline">
        {(["photo", "voice", "video"] as const).map((kind) => (
          <label class="choice" key={kind}>
            <input
              type="checkbox"
              name={`${name}-${kind}`}
              checked={value[kind]}
              onChange={(e) => onChange({ ...value, [kind]: e.currentTarget.checked })}
            />
            {kind[0]!.toUpperCase() + kind.slice(1)}
          </label>
        ))}
      </div>
    </fieldset>
  );
}

export function ThemeField({ name, value, onChange }: { name: string; value: ThemeName; onChange: (value: ThemeName) => void }) {
  return (
    <fieldset class="field">
      <legend>Theme</legend>
      <div class="theme-choices">
        {THEME_IDS.map((id) => (
          <label class="theme-choice" key={id} data-theme-swatch={id}>
            <input type="radio" name={name} value={id} checked={value === id} onChange={() => onChange(id)} />
            <span class="swatch" aria-hidden="true" />
            <span>
              {THEMES[id].label} <span class="optional">({THEMES[id].dark ? "dark" : "light"})</span>
            </span>
          </label>
        ))}
      </div>
    </fieldset>
  );
}

/** How long messages are kept; a value set over the API that is not one of the choices is offered too. */
export function RetentionSelect({ id, value, onChange }: { id: string; value: number; onChange: (days: number) => void }) {
  const choices = RETENTION_CHOICES.some((c) => c.days === value)
    ? RETENTION_CHOICES
    : [...RETENTION_CHOICES, { days: value, label: `${value} days` }];
  return (
    <select id={id} name={id} value={String(value)} onChange={(e) => onChange(Number(e.currentTarget.value))}>
      {choices.map((choice) => (
        <option key={choice.days} value={String(choice.days)}>
          {choice.label}
        </option>
      ))}
    </select>
  );
}
