/** A room WebSocket that keeps itself connected: backoff with jitter, a heartbeat, and a say in how
 * each close is handled (renew the token, give up, or try again).
 *
 * The heartbeat is what makes "Live" true: a network that drops packets without closing anything
 * (a train in a tunnel, a sleeping Wi-Fi) sends no close event for minutes. The client pings when it
 * has sent nothing for a few seconds, the edge answers every ping, so a healthy connection is never
 * silent for long; after SILENCE_LIMIT_MS without a single frame the connection counts as lost. */

export type ConnectionState =
  | { kind: "connecting"; attempt: number }
  | { kind: "live" }
  | { kind: "waiting"; retryAt: number; attempt: number }
  | { kind: "offline" }
  | { kind: "ended"; reason: string };

export type Frame = { type: string } & Record<string, unknown>;

/** What to do after the socket closed: try again (after a backoff), renew the token first, or stop. */
export type CloseDecision = { action: "retry" } | { action: "renew" } | { action: "stop"; reason: string };

export interface SocketHooks {
  /** The URL to open; `renew` asks for a fresh token. Throwing a `StopError` ends the connection. */
  url(renew: boolean): Promise<string>;
  onFrame(frame: Frame): void;
  /** The server said it is ready (first frame of every connection). */
  onReady(frame: Frame): void;
  onClose(code: number, reason: string): CloseDecision;
  onState(state: ConnectionState): void;
}

export class StopError extends Error {}

const BASE_DELAY_MS = 500;
const MAX_DELAY_MS = 10_000;
const OPEN_TIMEOUT_MS = 10_000;
// Ping when nothing was sent, or nothing heard, for this long (the edge closes sockets silent for 30 s).
const PING_EVERY_MS = 4_000;
// No frame at all (not even a pong) for this long: the connection is dead even if no close came.
const SILENCE_LIMIT_MS = 10_000;
const HEARTBEAT_TICK_MS = 1_000;

/** Exponential backoff with "equal jitter": never zero, never in lockstep with other clients. */
export function backoffDelay(attempt: number, random: () => number = Math.random): number {
  const cap = Math.min(MAX_DELAY_MS, BASE_DELAY_MS * 2 ** Math.min(attempt, 10));
  return cap / 2 + random() * (cap / 2);
}

export class ReconnectingSocket {
  private ws: WebSocket | null = null;
  private attempt = 0;
  private renewNext = false;
  private stopped = false;
  private retryTimer: number | undefined;
  private pingTimer: number | undefined;
  private openTimer: number | undefined;
  private lastHeard = 0;
  private lastSent = 0;
  private lastPing = 0;
  private state: ConnectionState = { kind: "connecting", attempt: 0 };

  constructor(private readonly hooks: SocketHooks) {
    window.addEventListener("online", this.onOnline);
    window.addEventListener("offline", this.onOffline);
    document.addEventListener("visibilitychange", this.onVisible);
  }

  get current(): ConnectionState {
    return this.state;
  }

  get live(): boolean {
    return this.state.kind === "live" && this.ws?.readyState === WebSocket.OPEN;
  }

  start(): void {
    void this.open();
  }

  /** Send a JSON frame if the socket is live; false means it was not sent. */
  send(frame: Frame): boolean {
    if (!this.live || !this.ws) return false;
    this.ws.send(JSON.stringify(frame));
    this.lastSent = Date.now();
    return true;
  }

  /** Skip the wait and try now (the user pressed "Reconnect", or the network came back). */
  reconnectNow(): void {
    if (this.stopped || this.state.kind === "connecting" || this.state.kind === "live") return;
    window.clearTimeout(this.retryTimer);
    void this.open();
  }

  /** Drop the current socket (if any) and connect again at once, e.g. after a reload. */
  restart(): void {
    if (this.stopped) return;
    this.discardSocket();
    window.clearTimeout(this.retryTimer);
    void this.open();
  }

  /** The server refused our token mid-connection: reconnect with a renewed one. */
  renew(): void {
    if (this.stopped) return;
    this.renewNext = true;
    this.restart();
  }

  stop(): void {
    this.stopped = true;
    window.clearTimeout(this.retryTimer);
    this.discardSocket();
    window.removeEventListener("online", this.onOnline);
    window.removeEventListener("offline", this.onOffline);
    document.removeEventListener("visibilitychange", this.onVisible);
  }

  private setState(state: ConnectionState): void {
    this.state = state;
    this.hooks.onState(state);
  }

  private discardSocket(): void {
    window.clearInterval(this.pingTimer);
    window.clearTimeout(this.openTimer);
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      if (ws.readyState === WebSocket.OPEN || ws.readyState === WebSocket.CONNECTING) ws.close(1000, "bye");
    }
  }

  private async open(): Promise<void> {
    if (this.stopped) return;
    this.discardSocket();
    this.setState({ kind: "connecting", attempt: this.attempt });
    let url: string;
    try {
      url = await this.hooks.url(this.renewNext);
    } catch (error) {
      if (error instanceof StopError) {
        this.end(error.message);
        return;
      }
      this.scheduleRetry();
      return;
    }
    if (this.stopped) return;
    this.renewNext = false;
    const ws = new WebSocket(url);
    this.ws = ws;
    this.openTimer = window.setTimeout(() => {
      if (this.ws === ws && ws.readyState !== WebSocket.OPEN) this.lost(ws, 4000, "open timeout");
    }, OPEN_TIMEOUT_MS);
    ws.onopen = () => {
      window.clearTimeout(this.openTimer);
      this.lastHeard = this.lastSent = this.lastPing = Date.now();
      this.pingTimer = window.setInterval(() => this.heartbeat(ws), HEARTBEAT_TICK_MS);
    };
    ws.onmessage = (event: MessageEvent) => {
      this.lastHeard = Date.now();
      let frame: Frame;
      try {
        frame = JSON.parse(String(event.data)) as Frame;
      } catch {
        return;
      }
      if (typeof frame?.type !== "string") return;
      if (frame.type === "ready") {
        this.attempt = 0;
        this.setState({ kind: "live" });
        this.hooks.onReady(frame);
        return;
      }
      this.hooks.onFrame(frame);
    };
    ws.onclose = (event: CloseEvent) => this.lost(ws, event.code, event.reason);
  }

  private heartbeat(ws: WebSocket): void {
    if (this.ws !== ws || ws.readyState !== WebSocket.OPEN) return;
    const now = Date.now();
    if (now - this.lastHeard > SILENCE_LIMIT_MS) {
      this.lost(ws, 4000, "silent");
      return;
    }
    // Sending typing frames keeps the edge's idle timer happy but gets no answer, so a quiet room
    // is pinged too: every frame the edge writes back proves the way back works.
    const quietOut = now - this.lastSent >= PING_EVERY_MS;
    const quietIn = now - this.lastHeard >= PING_EVERY_MS && now - this.lastPing >= PING_EVERY_MS;
    if (quietOut || quietIn) {
      ws.send(JSON.stringify({ type: "ping" }));
      this.lastSent = this.lastPing = now;
    }
  }

  private lost(ws: WebSocket, code: number, reason: string): void {
    if (this.ws !== ws || this.stopped) return;
    this.discardSocket();
    const decision = this.hooks.onClose(code, reason);
    if (decision.action === "stop") {
      this.end(decision.reason);
      return;
    }
    if (decision.action === "renew") {
      // A refused token is renewed at once, but never in a tight loop.
      this.renewNext = true;
      if (this.attempt === 0) {
        this.attempt = 1;
        void this.open();
        return;
      }
    }
    this.scheduleRetry();
  }

  private scheduleRetry(): void {
    if (this.stopped) return;
    if (!navigator.onLine) {
      this.setState({ kind: "offline" });
      return;
    }
    const delay = backoffDelay(this.attempt);
    this.attempt += 1;
    this.setState({ kind: "waiting", retryAt: Date.now() + delay, attempt: this.attempt });
    window.clearTimeout(this.retryTimer);
    this.retryTimer = window.setTimeout(() => void this.open(), delay);
  }

  private end(reason: string): void {
    this.stopped = true;
    window.clearTimeout(this.retryTimer);
    this.discardSocket();
    this.setState({ kind: "ended", reason });
  }

  private readonly onOnline = (): void => {
    if (this.state.kind === "offline" || this.state.kind === "waiting") {
      this.attempt = 0;
      this.reconnectNow();
    }
  };

  private readonly onOffline = (): void => {
    if (this.state.kind === "waiting") {
      window.clearTimeout(this.retryTimer);
      this.setState({ kind: "offline" });
    } else if ((this.state.kind === "live" || this.state.kind === "connecting") && this.ws) {
      // The browser knows the network is gone: no need to wait for the silence to prove it.
      this.lost(this.ws, 4000, "offline");
    }
  };

  private readonly onVisible = (): void => {
    // Phones freeze background tabs; on return, do not wait out a long backoff.
    if (document.visibilityState === "visible" && this.state.kind === "waiting") this.reconnectNow();
  };
}
