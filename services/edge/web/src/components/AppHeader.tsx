import iconUrl from "../icon.svg";
import { AccountMenu } from "./AccountMenu";
import { Link } from "./Link";

export function AppHeader() {
  return (
    <header class="app-header">
      <Link href="/" class="brand" aria-label="ChatPop home">
        <img src={iconUrl} alt="" width={28} height={28} />
        <span>ChatPop</span>
      </Link>
      <AccountMenu />
    </header>
  );
}
