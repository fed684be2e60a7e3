import { useEffect, useState } from "preact/hooks";
import { agoWords, ApiError, type MyRoom } from "../api";
import { subscribe } from "../auth";
import { fetchMyRooms, type MyRoomLists } from "../rooms";
import { Link } from "./Link";
import "./my-rooms.css";

// The list is refreshed this often while the home page is open, and whenever the tab comes back.
const REFRESH_MS = 30_000;

function unreadLabel(entry: MyRoom): string | null {
  if (!entry.unread) return null;
  return entry.unread_more ? "99+" : String(entry.unread);
}

function RoomRow({ entry, now }: { entry: MyRoom; now: number }) {
  const unread = unreadLabel(entry);
  const who = entry.participant?.username;
  const details = [
    entry.is_host ? "You host it" : who ? `You are ${who}` : null,
    entry.room.closed ? "Closed" : null,
    agoWords(entry.last_activity_at, now),
  ].filter(Boolean);
  const spoken = unread ? `, ${unread} unread ${unread === "1" ? "message" : "messages"}` : "";
  return (
    <li class="my-room" data-code={entry.room.code} data-unread={entry.unread_more ? "99+" : String(entry.unread)}>
      <Link href={`/c/${entry.room.code}`} class="my-room-link" aria-label={`${entry.room.name}${spoken}`}>
        <span class="my-room-name">
          {entry.room.name}
          {entry.room.visibility === "private" && <span class="my-room-tag">Private</span>}
          {entry.is_host && <span class="badge host">Host</span>}
        </span>
        <span class="my-room-details">{details.join(" · ")}</span>
        {unread && (
          <span class="unread-pill" aria-hidden="true">
            {unread}
          </span>
        )}
      </Link>
    </li>
  );
}

function RoomList({ rooms, label, now }: { rooms: MyRoom[]; label: string; now: number }) {
  return (
    <ul class="my-rooms-list" aria-label={label}>
      {rooms.map((entry) => (
        <RoomRow key={entry.room.id} entry={entry} now={now} />
      ))}
    </ul>
  );
}

/** "Your rooms" on the home page: the account's rooms on every device, and this device's rooms
 * without an account, newest activity first with unread counts. Nothing shows for a first visit. */
export function MyRooms() {
  const [lists, setLists] = useState<MyRoomLists | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [now, setNow] = useState(Date.now());

  useEffect(() => {
    let alive = true;
    const load = (): void => {
      fetchMyRooms().then(
        (found) => {
          if (!alive) return;
          setLists(found);
          setError(null);
          setNow(Date.now());
        },
        (caught: unknown) => {
          if (alive) setError(caught instanceof ApiError ? caught.message : "Could not load your rooms.");
        },
      );
    };
    load();
    const timer = window.setInterval(load, REFRESH_MS);
    const onVisible = (): void => {
      if (document.visibilityState === "visible") load();
    };
    document.addEventListener("visibilitychange", onVisible);
    const unsubscribe = subscribe(load);
    return () => {
      alive = false;
      window.clearInterval(timer);
      document.removeEventListener("visibilitychange", onVisible);
      unsubscribe();
    };
  }, []);

  const accountRooms = lists?.account ?? null;
  const deviceRooms = lists?.device ?? [];
  if (!lists && !error) return null;
  if (lists && !accountRooms?.length && !deviceRooms.length) return null;
  return (
    <section class="card my-rooms" aria-labelledby="my-rooms-title">
      <h2 id="my-rooms-title">Your rooms</h2>
      {error && (
        <p class="form-error" role="alert">
          {error}
        </p>
      )}
      {accountRooms !== null && accountRooms.length > 0 && (
        <RoomList rooms={accountRooms} label="Rooms of your account" now={now} />
      )}
      {deviceRooms.length > 0 && (
        <>
          {accountRooms !== null && <h3 class="my-rooms-sub">On this device, without your account</h3>}
          <RoomList rooms={deviceRooms} label="Rooms on this device" now={now} />
        </>
      )}
    </section>
  );
}
