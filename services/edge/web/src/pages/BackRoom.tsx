/** A room's Back Room at /c/{code}/back-room: entered with the main room's token (its host and seat
 * holders only), then the same chat as any room, with the Back Room's own code and token. */
import { useEffect, useState } from "preact/hooks";
import { ApiError, type Room } from "../api";
import { RoomHeader } from "../components/RoomHeader";
import { RoomEnded } from "../components/Moderation";
import { useAccount } from "../components/useAccount";
import { enterBackRoom, enteredBackRoomOf, fetchRoom, savedRoomSession, type BackRoomEntry } from "../rooms";
import { applyTheme, rememberedRoomTheme } from "../themes";
import { ChatView } from "./Chat";
import { Missing } from "./Missing";

type Load =
  | { kind: "loading" }
  | { kind: "ready"; main: Room; entry: BackRoomEntry }
  | { kind: "no-seat"; main: Room }
  | { kind: "removed"; main: Room }
  | { kind: "banned"; main: Room | null; ending: "banned" | "site_banned" }
  | { kind: "not-joined"; main: Room }
  | { kind: "failed"; title: string; text: string; retry: boolean };

function Door({ title, text, mainCode, label }: { title: string; text: string; mainCode: string; label: string }) {
  return (
    <main class="room-ended narrow" data-ending="no-seat">
      <h1 tabIndex={-1}>{title}</h1>
      <p role="alert">{text}</p>
      <p>
        <a href={`/c/${mainCode}`} class="button primary">
          {label}
        </a>
      </p>
    </main>
  );
}

export function BackRoomPage({ code }: { code: string }) {
  const signedIn = useAccount();
  const [load, setLoad] = useState<Load>({ kind: "loading" });
  const [attempt, setAttempt] = useState(0);

  useEffect(() => {
    const remembered = rememberedRoomTheme(code);
    if (remembered) applyTheme(remembered);
    const controller = new AbortController();
    setLoad({ kind: "loading" });
    let main: Room | null = null;
    const mainCode = code;
    (async () => {
      main = await fetchRoom(code, controller.signal);
      if (controller.signal.aborted) return;
      applyTheme(main.theme);
      document.title = `Back Room · ${main.name} · ChatPop`;
      if (!savedRoomSession(code)) {
        setLoad({ kind: "not-joined", main });
        return;
      }
      const entry = await enterBackRoom(code);
      if (controller.signal.aborted) return;
      setLoad({ kind: "ready", main, entry });
    })().catch((error: unknown) => {
      if (controller.signal.aborted) return;
      const code = error instanceof ApiError ? error.code : "";
      // Someone who was in the Back Room before and has no seat now had it taken away.
      const removed = code === "seat_removed" || (code === "no_seat" && enteredBackRoomOf(mainCode));
      if (main && removed) setLoad({ kind: "removed", main });
      else if (main && (code === "no_seat" || code === "not_a_member")) setLoad({ kind: "no-seat", main });
      else if (code === "banned" || code === "site_banned") setLoad({ kind: "banned", main, ending: code });
      else if (error instanceof ApiError && (code === "no_back_room" || error.status === 404 || error.status === 422)) {
        setLoad({ kind: "failed", title: "No such Back Room", text: "This room has no Back Room.", retry: false });
      } else if (main && error instanceof ApiError && error.status === 403) {
        setLoad({ kind: "no-seat", main });
      } else {
        setLoad({
          kind: "failed",
          title: "ChatPop is unreachable",
          text: error instanceof ApiError ? error.message : "Could not open the Back Room.",
          retry: true,
        });
      }
    });
    return () => {
      controller.abort();
      document.title = "ChatPop";
    };
  }, [code, attempt, signedIn?.identity.id]);

  switch (load.kind) {
    case "loading":
      return (
        <div class="chat-screen">
          <RoomHeader title="Back Room" />
          <div class="messages-wrap" aria-busy="true" />
        </div>
      );
    case "failed":
      return (
        <div>
          <Missing title={load.title} text={load.text} />
          {load.retry && (
            <p class="narrow">
              <button type="button" class="button" onClick={() => setAttempt((n) => n + 1)}>
                Try again
              </button>
            </p>
          )}
        </div>
      );
    case "not-joined":
      return <Door title="Join the room first" text={`The Back Room of ${load.main.name} is for its host and the people who bought a seat there.`} mainCode={code} label={`Go to ${load.main.name}`} />;
    case "no-seat":
      return <Door title="You don't have a seat" text={`The Back Room of ${load.main.name} is for its host and the people who bought a seat. Seats are sold in the room.`} mainCode={code} label={`Back to ${load.main.name}`} />;
    case "removed":
      return <RoomEnded kind="seat_removed" roomName={load.main.name} back={{ href: `/c/${code}`, label: `Back to ${load.main.name}` }} />;
    case "banned":
      return <RoomEnded kind={load.ending} roomName={load.main?.name ?? "this room"} />;
    case "ready":
      return (
        <ChatView
          key={load.entry.session.participant.id}
          room={load.entry.room}
          joined={load.entry.session}
          backRoom={{ mainCode: load.main.code, mainName: load.main.name }}
        />
      );
  }
}
