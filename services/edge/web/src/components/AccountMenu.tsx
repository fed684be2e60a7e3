import { logout } from "../auth";
import { safeNext } from "../router";
import { Link } from "./Link";
import { useAccount, useIsAdmin } from "./useAccount";
import "./account-menu.css";

// Pages that exist to sign someone in: after signing in from them, go where they were headed.
const SIGN_IN_PAGES = new Set(["/login", "/signup", "/forgot-password", "/reset-password"]);

/** Where to come back to after signing in from the header: this page, or where this one leads. */
function returnPath(): string {
  const path = window.location.pathname.replace(/\/+$/, "") || "/";
  if (SIGN_IN_PAGES.has(path)) return safeNext(new URLSearchParams(window.location.search).get("next"));
  return path;
}

/** Sign up / Log in links, or who is signed in (a link to the account page), the admin page for
 * admins, and Log out. */
export function AccountMenu({ compact = false }: { compact?: boolean }) {
  const signedIn = useAccount();
  const isAdmin = useIsAdmin(signedIn);
  const here = encodeURIComponent(returnPath());
  if (signedIn) {
    const who = signedIn.identity.reserved_username ?? signedIn.identity.email ?? "your account";
    return (
      <div class="account">
        {isAdmin && (
          <Link href="/admin" class="link-button admin-link">
            Admin
          </Link>
        )}
        {!compact && (
          <Link href="/account" class="account-name" aria-label={`Signed in as ${who}: your account`}>
            Signed in as {who}
          </Link>
        )}
        <button type="button" class="link-button" onClick={() => void logout()} aria-label={`Log out ${who}`}>
          Log out
        </button>
      </div>
    );
  }
  return (
    <nav class="account" aria-label="Account">
      <Link href={`/login?next=${here}`} class="link-button">
        Log in
      </Link>
      {!compact && (
        <Link href={`/signup?next=${here}`} class="button small">
          Sign up
        </Link>
      )}
    </nav>
  );
}
