import { render } from "preact";
import { App } from "./app";
import "./styles.css";
import { applyTheme, DEFAULT_THEME, rememberedRoomTheme } from "./themes";
import { unlockSound } from "./sound";
import { trackViewportHeight } from "./viewport";

// A room opens in its theme before the first paint when this browser has seen it before.
const roomCode = /^\/c\/([A-Za-z0-9]+)/.exec(window.location.pathname)?.[1]?.toUpperCase();
applyTheme((roomCode && rememberedRoomTheme(roomCode)) || DEFAULT_THEME);
trackViewportHeight();
// Returning to a room you joined before skips the join click; the first tap or key unlocks sound then.
for (const gesture of ["click", "keydown", "touchend"]) {
  document.addEventListener(gesture, unlockSound, { once: true, capture: true });
}

render(<App />, document.getElementById("app")!);
