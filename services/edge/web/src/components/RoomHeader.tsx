import type { ComponentChildren } from "preact";
import iconUrl from "../icon.svg";
import { AccountMenu } from "./AccountMenu";
import { Link } from "./Link";

export function RoomHeader({ title, status, actions }: { title: string; status?: ComponentChildren; actions?: ComponentChildren }) {
  return (
    <header class="chat-header">
      <Link href="/" class="brand-mini" aria-label="ChatPop home">
        <img src={iconUrl} alt="" width={28} height={28} />
      </Link>
      <div class="room-title">
        <h1>{title}</h1>
        {status}
      </div>
      <div class="header-actions">
        {actions}
        <AccountMenu compact />
      </div>
    </header>
  );
}
