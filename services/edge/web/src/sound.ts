/** A short chime for new messages that also plays on iOS Safari.
 *
 * iOS lets a page play audio only after a user gesture started an HTML audio element; Web Audio
 * output stays silent there even when its context says "running". So the chime is a WAV made here
 * (nothing is downloaded), held as a blob: URL (the CSP allows blob: media), and one <audio> element
 * is started muted inside the join click. After that it may play whenever a message arrives.
 */
import { readJson, writeJson } from "./storage";

const MUTE_KEY = "chatpop.muted";
const MIN_GAP_MS = 1500;

let element: HTMLAudioElement | null = null;
let unlocked = false;
let lastPlayed = 0;

function chimeWav(): Blob {
  const rate = 22050;
  const notes = [
    { freq: 880, start: 0, length: 0.12 },
    { freq: 1318.5, start: 0.09, length: 0.22 },
  ];
  const total = Math.ceil(rate * 0.34);
  const samples = new Float32Array(total);
  for (const note of notes) {
    const first = Math.floor(note.start * rate);
    const count = Math.floor(note.length * rate);
    for (let i = 0; i < count && first + i < total; i++) {
      const t = i / rate;
      const attack = Math.min(1, i / (rate * 0.005));
      const decay = Math.exp(-t * 18);
      samples[first + i]! += Math.sin(2 * Math.PI * note.freq * t) * attack * decay * 0.35;
    }
  }
  const buffer = new ArrayBuffer(44 + total * 2);
  const view = new DataView(buffer);
  const text = (offset: number, value: string): void => {
    for (let i = 0; i < value.length; i++) view.setUint8(offset + i, value.charCodeAt(i));
  };
  text(0, "RIFF");
  view.setUint32(4, 36 + total * 2, true);
  text(8, "WAVE");
  text(12, "fmt ");
  view.setUint32(16, 16, true);
  view.setUint16(20, 1, true);
  view.setUint16(22, 1, true);
  view.setUint32(24, rate, true);
  view.setUint32(28, rate * 2, true);
  view.setUint16(32, 2, true);
  view.setUint16(34, 16, true);
  text(36, "data");
  view.setUint32(40, total * 2, true);
  for (let i = 0; i < total; i++) {
    const value = Math.max(-1, Math.min(1, samples[i]!));
    view.setInt16(44 + i * 2, value * 0x7fff, true);
  }
  return new Blob([buffer], { type: "audio/wav" });
}

function audio(): HTMLAudioElement {
  if (element === null) {
    element = new Audio(URL.createObjectURL(chimeWav()));
    element.preload = "auto";
  }
  return element;
}

/** Call synchronously inside a click or keypress handler (the join button): it unlocks playback. */
export function unlockSound(): void {
  if (unlocked) return;
  const player = audio();
  player.muted = true;
  const started = player.play();
  const done = (): void => {
    player.pause();
    player.currentTime = 0;
    player.muted = false;
  };
  if (started && typeof started.then === "function") {
    started.then(
      () => {
        unlocked = true;
        done();
      },
      () => {
        player.muted = false;
      },
    );
  } else {
    unlocked = true;
    done();
  }
}

export function isMuted(): boolean {
  return readJson<boolean>(MUTE_KEY) === true;
}

export function setMuted(muted: boolean): void {
  writeJson(MUTE_KEY, muted);
}

export function playNewMessage(): void {
  if (isMuted() || !unlocked) return;
  const now = Date.now();
  if (now - lastPlayed < MIN_GAP_MS) return;
  lastPlayed = now;
  const player = audio();
  player.currentTime = 0;
  player.volume = 0.6;
  void player.play().catch(() => undefined);
}
