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

/** Every key that starts with `prefix` (what this device kept for an account that is gone). */
export function removeWithPrefix(prefix: string): void {
  for (const key of [...memory.keys()]) if (key.startsWith(prefix)) memory.delete(key);
  try {
    const storage = backend();
    if (!storage) return;
    const keys: string[] = [];
    for (let i = 0; i < storage.length; i++) {
      const key = storage.key(i);
      if (key?.startsWith(prefix)) keys.push(key);
    }
    for (const key of keys) storage.removeItem(key);
  } catch {
    // Nothing more to do.
  }
}
