import { useEffect, useState } from "preact/hooks";
import { account, subscribe, type StoredSession } from "../auth";

/** The signed-in account (or null), kept current across sign-in, sign-out and other tabs. */
export function useAccount(): StoredSession | null {
  const [current, setCurrent] = useState(account);
  useEffect(() => subscribe(() => setCurrent(account())), []);
  return current;
}
