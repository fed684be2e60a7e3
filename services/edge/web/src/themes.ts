/** The three room themes. Each is either light or dark, and every modal follows that type; each
 * sets the browser's theme-color to its header colour. */
import type { ThemeName } from "./api";
import { readJson, writeJson } from "./storage";

export interface Theme {
  id: ThemeName;
  label: string;
  dark: boolean;
  /** The header's background: mobile browsers colour their toolbar with it. */
  themeColor: string;
}

export const THEMES: Record<ThemeName, Theme> = {
  "purple-dream": { id: "purple-dream", label: "Purple Dream", dark: false, themeColor: "#faf5ff" },
  "ocean-blue": { id: "ocean-blue", label: "Ocean Blue", dark: false, themeColor: "#f0f9ff" },
  "dark-mode": { id: "dark-mode", label: "Dark Mode", dark: true, themeColor: "#18181b" },
};

export const THEME_IDS = Object.keys(THEMES) as ThemeName[];
export const DEFAULT_THEME: ThemeName = "purple-dream";
const ROOM_THEMES_KEY = "chatpop.roomThemes";

export function isTheme(value: unknown): value is ThemeName {
  return typeof value === "string" && value in THEMES;
}

export function isDarkTheme(theme: ThemeName): boolean {
  return THEMES[theme].dark;
}

export function applyTheme(theme: ThemeName): void {
  const root = document.documentElement;
  root.dataset.theme = theme;
  root.dataset.scheme = THEMES[theme].dark ? "dark" : "light";
  let meta = document.querySelector<HTMLMetaElement>('meta[name="theme-color"]');
  if (!meta) {
    meta = document.createElement("meta");
    meta.name = "theme-color";
    document.head.append(meta);
  }
  meta.content = THEMES[theme].themeColor;
}

/** Remember a room's theme so its page opens in it at once next time (no flash of another theme). */
export function rememberRoomTheme(code: string, theme: ThemeName): void {
  const themes = readJson<Record<string, ThemeName>>(ROOM_THEMES_KEY) ?? {};
  if (themes[code] === theme) return;
  themes[code] = theme;
  const entries = Object.entries(themes).slice(-100);
  writeJson(ROOM_THEMES_KEY, Object.fromEntries(entries));
}

export function rememberedRoomTheme(code: string): ThemeName | null {
  const theme = (readJson<Record<string, ThemeName>>(ROOM_THEMES_KEY) ?? {})[code];
  return isTheme(theme) ? theme : null;
}
