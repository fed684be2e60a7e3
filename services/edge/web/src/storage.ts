/** localStorage that degrades to memory (private browsing, storage disabled, quota exceeded). */
const memory = new Map<string, string>();

function backend(): Storage | null {
  try {
    return window.localStorage;
  } catch {
    return null;
  }
}

export function readJson<T>(key: string): T | null {
  let raw: string | null;
  try {
    raw = backend()?.getItem(key) ?? memory.get(key) ?? null;
  } catch {
    raw = memory.get(key) ?? null;
  }
  if (raw === null) return null;
  try {
    return JSON.parse(raw) as T;
  } catch {
    return null;
  }
}

export function writeJson(key: string, value: unknown): void {
  const raw = JSON.stringify(value);
  memory.set(key, raw);
  try {
    backend()?.setItem(key, raw);
  } catch {
    // Memory keeps it for this page's lifetime.
  }
}

export function remove(key: string): void {
  memory.delete(key);
  try {
    backend()?.removeItem(key);
  } catch {
    // Nothing more to do.
  }
}
