import { logout } from "../auth";
import { Link } from "./Link";
import { useAccount } from "./useAccount";

/** Sign up / Log in links, or who is signed in and Log out. */
export function AccountMenu({ compact = false }: { compact?: boolean }) {
  const signedIn = useAccount();
  const here = encodeURIComponent(window.location.pathname);
  if (signedIn) {
    const who = signedIn.identity.reserved_username ?? signedIn.identity.email ?? "your account";
    return (
      <div class="account">
        {!compact && <span class="account-name">Signed in as {who}</span>}
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
