import { useEffect, useState } from "preact/hooks";
import { ApiError, type Room } from "../api";
import { RoomHeader } from "../components/RoomHeader";
import { useAccount } from "../components/useAccount";
import { fetchRoom, savedRoomSession, type RoomSession } from "../rooms";
import { applyTheme, rememberedRoomTheme, rememberRoomTheme } from "../themes";
import { ChatView } from "./Chat";
import { JoinDialog } from "./JoinDialog";
import { Missing } from "./Missing";

type Load = { kind: "loading" } | { kind: "ready"; room: Room } | { kind: "failed"; title: string; text: string };

export function RoomPage({ code }: { code: string }) {
  const signedIn = useAccount();
  const [load, setLoad] = useState<Load>({ kind: "loading" });
  const [joined, setJoined] = useState<RoomSession | null>(null);
  const [attempt, setAttempt] = useState(0);

  useEffect(() => {
    const remembered = rememberedRoomTheme(code);
    if (remembered) applyTheme(remembered);
    const controller = new AbortController();
    setLoad({ kind: "loading" });
    fetchRoom(code, controller.signal).then(
      (room) => {
        applyTheme(room.theme);
        rememberRoomTheme(room.code, room.theme);
        document.title = `${room.name} · ChatPop`;
        setLoad({ kind: "ready", room });
      },
      (error: unknown) => {
        if (controller.signal.aborted) return;
        if (error instanceof ApiError && error.code === "room_taken_down") {
          setLoad({ kind: "failed", title: "This room was taken down", text: "ChatPop's moderators took this room down. Nobody can read or join it any more." });
        } else if (error instanceof ApiError && (error.status === 404 || error.status === 422)) {
          setLoad({ kind: "failed", title: "No such ChatPop", text: "Check the link: this room does not exist." });
        } else {
          setLoad({
            kind: "failed",
            title: "ChatPop is unreachable",
            text: error instanceof ApiError ? error.message : "Could not load this room.",
          });
        }
      },
    );
    return () => {
      controller.abort();
      document.title = "ChatPop";
    };
  }, [code, attempt]);

  // Signing in or out switches who acts here; the logged-in identity wins (its own username).
  useEffect(() => {
    setJoined(savedRoomSession(code));
  }, [code, signedIn?.identity.id]);

  if (load.kind === "failed") {
    return (
      <div>
        <Missing title={load.title} text={load.text} />
        {load.title !== "No such ChatPop" && load.title !== "This room was taken down" && (
          <p class="narrow">
            <button type="button" class="button" onClick={() => setAttempt((n) => n + 1)}>
              Try again
            </button>
          </p>
        )}
      </div>
    );
  }
  if (load.kind === "loading") {
    return (
      <div class="chat-screen">
        <RoomHeader title="Loading…" />
        <div class="messages-wrap" aria-busy="true" />
      </div>
    );
  }
  const room = load.room;
  // Closed with "delete everything": nothing is left to read, for anyone.
  if (room.erased) {
    return (
      <Missing
        title="This room was closed and its history deleted"
        text={`The host closed ${room.name} and deleted everything in it. Nobody can read or join it any more.`}
      />
    );
  }
  // People who joined can still read a closed room; nobody new can join it.
  if (room.closed && !joined) {
    return <Missing title={`${room.name} is closed`} text="The host closed this ChatPop: nobody can join it any more." />;
  }
  if (!joined) {
    return (
      <div class="chat-screen">
        <RoomHeader title={room.name} />
        <div class="messages-wrap" />
        <JoinDialog room={room} onJoined={setJoined} />
      </div>
    );
  }
  return <ChatView key={joined.participant.id} room={room} joined={joined} />;
}
