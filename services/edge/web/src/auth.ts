/** Who this device is: an anonymous session (always) and, when signed in, an account that wins.
 *
 * Refresh tokens rotate on use and a reused one revokes its whole family, so refreshing is serialized
 * within the page and, with the Web Locks API, across tabs; each refresh re-reads storage first in
 * case another tab already rotated the pair.
 */
import { ApiError, request, type Identity, type MeResponse, type TokenResponse } from "./api";
import { readJson, remove, removeWithPrefix, writeJson } from "./storage";

export interface StoredSession {
  identity: Identity;
  access_token: string;
  refresh_token: string;
  access_expires_at: number;
}

const DEVICE_KEY = "chatpop.device";
const ACCOUNT_KEY = "chatpop.account";
// A word for the next page shown, once (the home page after an account was deleted).
const FLASH_KEY = "chatpop.flash";
const LOCK = "chatpop-auth";
// Refresh this long before the access token expires, so a request never races its expiry.
const REFRESH_MARGIN_MS = 60_000;

const listeners = new Set<() => void>();
let inFlight: Promise<unknown> = Promise.resolve();

function store(key: string, response: TokenResponse): StoredSession {
  const session: StoredSession = {
    identity: response.identity,
    access_token: response.access_token,
    refresh_token: response.refresh_token,
    access_expires_at: Date.now() + response.expires_in * 1000,
  };
  writeJson(key, session);
  return session;
}

function notify(): void {
  for (const listener of listeners) listener();
}

export function subscribe(listener: () => void): () => void {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

window.addEventListener("storage", (event) => {
  if (event.key === ACCOUNT_KEY || event.key === DEVICE_KEY || event.key === null) notify();
});

export function account(): StoredSession | null {
  return readJson<StoredSession>(ACCOUNT_KEY);
}

/** The identity that acts now: the account when signed in, else the anonymous session (if any yet). */
export function activeIdentity(): Identity | null {
  return (account() ?? readJson<StoredSession>(DEVICE_KEY))?.identity ?? null;
}

/** Run `task` alone: one at a time in this page and, where supported, across this browser's tabs. */
function exclusive<T>(task: () => Promise<T>): Promise<T> {
  const locked = (): Promise<T> =>
    navigator.locks ? (navigator.locks.request(LOCK, task) as Promise<T>) : task();
  const run = inFlight.then(locked, locked);
  inFlight = run.catch(() => undefined);
  return run;
}

function fresh(session: StoredSession | null): session is StoredSession {
  return session !== null && session.access_expires_at - Date.now() > REFRESH_MARGIN_MS;
}

async function refreshed(key: string, stale: string | null): Promise<StoredSession | null> {
  return exclusive(async () => {
    const current = readJson<StoredSession>(key);
    if (current === null) return null;
    // Another tab or call rotated the pair already.
    if (current.access_token !== stale && fresh(current)) return current;
    try {
      const response = await request<TokenResponse>("POST", "/api/v1/auth/refresh", {
        body: { refresh_token: current.refresh_token },
        retries: 3,
      });
      return store(key, response);
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) {
        // A password change stored a new pair meanwhile (it revoked the one refused): keep it.
        const latest = readJson<StoredSession>(key);
        if (latest && latest.refresh_token !== current.refresh_token) return latest;
        remove(key);
        notify();
        return null;
      }
      throw error;
    }
  });
}

async function deviceSession(stale: string | null): Promise<StoredSession> {
  const existing = readJson<StoredSession>(DEVICE_KEY);
  if (existing && existing.access_token !== stale && fresh(existing)) return existing;
  if (existing) {
    const renewed = await refreshed(DEVICE_KEY, stale ?? existing.access_token);
    if (renewed) return renewed;
  }
  return exclusive(async () => {
    const again = readJson<StoredSession>(DEVICE_KEY);
    if (again && fresh(again)) return again;
    const response = await request<TokenResponse>("POST", "/api/v1/auth/anonymous", { retries: 3 });
    const session = store(DEVICE_KEY, response);
    notify();
    return session;
  });
}

/** A valid access token of this device's anonymous session, or null when the device has none yet:
 * never starts a session (that would count against the network's limit for nothing). */
export async function existingDeviceSession(): Promise<StoredSession | null> {
  const existing = readJson<StoredSession>(DEVICE_KEY);
  if (!existing) return null;
  const stale = existing.access_token;
  return fresh(existing) ? existing : refreshed(DEVICE_KEY, stale);
}

/** A valid access token for the acting identity; `stale` names one the server just refused. */
export async function accessSession(stale: string | null = null): Promise<StoredSession> {
  const signedIn = account();
  if (signedIn) {
    if (signedIn.access_token !== stale && fresh(signedIn)) return signedIn;
    const renewed = await refreshed(ACCOUNT_KEY, stale ?? signedIn.access_token);
    if (renewed) return renewed;
    // The account's session ended (signed out elsewhere, or expired): carry on anonymously.
  }
  return deviceSession(stale);
}

/** Call the API with an access token, renewing it once if the server says it expired. */
export async function withAccess<T>(call: (token: string) => Promise<T>): Promise<T> {
  const session = await accessSession();
  try {
    return await call(session.access_token);
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) {
      const renewed = await accessSession(session.access_token);
      return call(renewed.access_token);
    }
    throw error;
  }
}

/** Whether the signed-in account's access token carries the admin role (what `/admin` checks). */
export async function accountIsAdmin(): Promise<boolean> {
  if (!account()) return false;
  const me = await withAccess((token) => request<MeResponse>("GET", "/api/v1/auth/me", { token, retries: 2 }));
  return me.is_admin;
}

export async function login(email: string, password: string): Promise<StoredSession> {
  const response = await request<TokenResponse>("POST", "/api/v1/auth/login", { body: { email, password } });
  const session = store(ACCOUNT_KEY, response);
  notify();
  return session;
}

export async function register(
  email: string,
  password: string,
  reservedUsername: string | null,
): Promise<StoredSession> {
  const body: Record<string, string> = { email, password };
  if (reservedUsername) body.reserved_username = reservedUsername;
  const response = await request<TokenResponse>("POST", "/api/v1/auth/register", { body });
  const session = store(ACCOUNT_KEY, response);
  notify();
  return session;
}

export async function logout(): Promise<void> {
  const signedIn = account();
  remove(ACCOUNT_KEY);
  notify();
  if (signedIn) {
    try {
      await request<void>("POST", "/api/v1/auth/logout", { body: { refresh_token: signedIn.refresh_token } });
    } catch {
      // Signed out here either way; the refresh token expires on its own.
    }
  }
}

// --- managing the account -------------------------------------------------------------------

/** Ask for a reset link by mail. The answer says the same whether or not the address has an account. */
export async function requestPasswordReset(email: string): Promise<string> {
  const answer = await request<{ message: string }>("POST", "/api/v1/auth/password/forgot", { body: { email } });
  return answer.message;
}

/** Set a new password with the token from a reset mail; this device is then signed in. */
export async function resetPassword(token: string, newPassword: string): Promise<StoredSession> {
  const response = await request<TokenResponse>("POST", "/api/v1/auth/password/reset", {
    body: { token, new_password: newPassword },
  });
  const session = store(ACCOUNT_KEY, response);
  notify();
  return session;
}

/** Call the API with the signed-in account's access token (never the anonymous session's). */
async function withAccount<T>(call: (token: string) => Promise<T>): Promise<T> {
  const current = async (stale: string | null): Promise<StoredSession> => {
    const session = await accessSession(stale);
    if (session.identity.kind !== "user") {
      throw new ApiError(401, "signed_out", "You were signed out. Log in again to manage your account.");
    }
    return session;
  };
  const session = await current(null);
  try {
    return await call(session.access_token);
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) return call((await current(session.access_token)).access_token);
    throw error;
  }
}

/** Change the password; every other device is signed out, this one gets a new token pair. */
export async function changePassword(currentPassword: string, newPassword: string): Promise<StoredSession> {
  const response = await withAccount((token) =>
    request<TokenResponse>("POST", "/api/v1/auth/password", {
      token,
      body: { current_password: currentPassword, new_password: newPassword },
    }),
  );
  const session = store(ACCOUNT_KEY, response);
  notify();
  return session;
}

/** Reserve a username for the account, or change the one it holds. */
export async function setReservedUsername(username: string): Promise<Identity> {
  const answer = await withAccount((token) =>
    request<{ identity: Identity }>("PUT", "/api/v1/auth/me/reserved-username", {
      token,
      body: { reserved_username: username },
    }),
  );
  const signedIn = account();
  if (signedIn && signedIn.identity.id === answer.identity.id) {
    writeJson(ACCOUNT_KEY, { ...signedIn, identity: answer.identity });
    notify();
  }
  return answer.identity;
}

/** Delete the signed-in account for good, its password asked again; with `eraseMessages` every message
 * it sent goes too (otherwise they stay under a neutral name). This device then forgets the account. */
export async function deleteAccount(password: string, eraseMessages: boolean): Promise<void> {
  await withAccount((token) =>
    request<void>("DELETE", "/api/v1/auth/me", { token, body: { password, erase_messages: eraseMessages } }),
  );
  forgetDeletedAccount();
}

/** The account is gone (deleted here or on another device): this device signs out of it without
 * asking the server (its tokens are dead), drops its room places, and leaves a word for the home page. */
export function forgetDeletedAccount(): void {
  const signedIn = account();
  remove(ACCOUNT_KEY);
  if (signedIn) removeWithPrefix(`chatpop.room.${signedIn.identity.id}.`);
  writeJson(FLASH_KEY, "Your account was deleted.");
  notify();
}

/** The word left for the next page, once. */
export function takeFlash(): string | null {
  const text = readJson<string>(FLASH_KEY);
  if (text !== null) remove(FLASH_KEY);
  return typeof text === "string" ? text : null;
}
