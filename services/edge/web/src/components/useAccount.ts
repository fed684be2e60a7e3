import { useEffect, useState } from "preact/hooks";
import { account, accountIsAdmin, subscribe, type StoredSession } from "../auth";

/** The signed-in account (or null), kept current across sign-in, sign-out and other tabs. */
export function useAccount(): StoredSession | null {
  const [current, setCurrent] = useState(account);
  useEffect(() => subscribe(() => setCurrent(account())), []);
  return current;
}

// Asked once per access token: the role changes only with a new token (sign-in or refresh).
const adminByToken = new Map<string, Promise<boolean>>();

/** Whether the signed-in account is an admin; false until known, and when it cannot be asked. */
export function useIsAdmin(signedIn: StoredSession | null): boolean {
  const token = signedIn?.access_token ?? null;
  const [admin, setAdmin] = useState(false);
  useEffect(() => {
    setAdmin(false);
    if (token === null) return;
    let asked = adminByToken.get(token);
    if (!asked) {
      asked = accountIsAdmin();
      adminByToken.set(token, asked);
      // A failed question is asked again next time.
      asked.catch(() => adminByToken.delete(token));
    }
    let live = true;
    asked.then(
      (yes) => live && setAdmin(yes),
      () => undefined,
    );
    return () => {
      live = false;
    };
  }, [token]);
  return admin;
}
