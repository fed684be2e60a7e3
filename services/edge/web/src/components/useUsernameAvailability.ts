import { useEffect, useState } from "preact/hooks";
import { ApiError, request, type UsernameAvailability } from "../api";
import { withAccess } from "../auth";
import { usernameAvailability } from "../rooms";
import { usernameError } from "../validation";

export type Availability =
  | { state: "unknown" }
  | { state: "checking" }
  | { state: "free" }
  | { state: "taken"; text: string; reason: string | null };

/** The availability as the signed-in account sees it: a name it gave up is still free for it. */
async function asAccount(name: string, signal: AbortSignal): Promise<UsernameAvailability | null> {
  try {
    return await withAccess((token) =>
      request<UsernameAvailability>("GET", `/api/v1/auth/usernames/${encodeURIComponent(name)}`, { token, signal }),
    );
  } catch (error) {
    if (error instanceof ApiError) {
      if (error.status === 422 || error.status === 409) return { available: false, reason: error.code, message: error.message };
      return null;
    }
    throw error;
  }
}

/** Whether a username could be reserved, asked while it is typed (debounced; stale answers dropped).
 * `signedIn` asks with the account's token, so names it may take back count as free. */
export function useUsernameAvailability(raw: string, signedIn = false): Availability {
  const [availability, setAvailability] = useState<Availability>({ state: "unknown" });
  useEffect(() => {
    const name = raw.trim();
    if (!name || usernameError(name)) {
      setAvailability({ state: "unknown" });
      return;
    }
    const controller = new AbortController();
    setAvailability({ state: "checking" });
    const timer = window.setTimeout(() => {
      (signedIn ? asAccount(name, controller.signal) : usernameAvailability(name, controller.signal)).then(
        (answer) => {
          if (answer === null) setAvailability({ state: "unknown" });
          else if (answer.available) setAvailability({ state: "free" });
          else
            setAvailability({
              state: "taken",
              text: answer.message ?? "That username is not available.",
              reason: answer.reason ?? null,
            });
        },
        () => setAvailability({ state: "unknown" }),
      );
    }, 350);
    return () => {
      window.clearTimeout(timer);
      controller.abort();
    };
  }, [raw, signedIn]);
  return availability;
}
