// WebSocket clients for bench/ws_load.py. Reads a JSON job from the file named by its argument:
//   {mode, wsBase, clients: [{code, token}], connectConcurrency, sourceAddresses, pingEvery, ...}
// connects every client (at most `connectConcurrency` handshakes at once, spread over the local
// `sourceAddresses` in turn), prints {"phase": "connected", ...}, waits for a line on stdin, then:
//
// mode "load" ({rate, window, warmup, duration, drainLimit, drainAfterAcks, awaitDeliveries,
//   listAcked}): sends (at `rate` messages/s over all clients, or as fast as acknowledgements allow
//   when rate is 0) for `warmup` seconds unmeasured, prints {"phase": "measuring"}, sends for
//   `duration` seconds more, and prints one JSON line (once the acks of the measured sends are in, or
//   `drainLimit` seconds have passed, and `drainAfterAcks` seconds more): counts (`acked_in_window`:
//   acks that came while measured sending went on, whichever send they answer), errors by code with
//   each refusal's time from its send, sockets closed by close code, and the sorted send→receive
//   latencies in milliseconds of the messages sent while measuring, and their send→ack times
//   (`ack_latencies`). A client has at most `window` sends unanswered;
//   window 0 means no limit: with a rate the load is then open-loop, offered whatever the answers do.
//   An error frame answers its send (a refused send is not accepted and no ack is awaited for it).
//   `awaitDeliveries` also waits (within `drainLimit`) until every accepted message reached every
//   member of its room (`drain_s`: how long after the last send the answers and deliveries took);
//   with either, `acked_total` and `acked_not_delivered_to_all` count the accepted messages (warm-up
//   included) and those some member of their room never received; `listAcked` adds their
//   client_msg_ids (`acked_ids`). `loop_delay_ms` says how late this process's own event loop ran
//   while measured sending went on (p50, p99, max; Node's monitorEventLoopDelay): every time above
//   (a delivery, an ack, a refusal) includes that much of the load generator's own waiting.
// mode "sockets" ({probes, probeTimeout, probeGap}): the sockets stay idle (pings only) except for
//   `probes` messages sent one after another by the first client of the first client's room; for each,
//   the time from its send until every member of that room (the sender included) had it, and each
//   member's own delay.
// Every socket sends {"type": "ping"} after `pingEvery` seconds without sending anything, as the web
// client does, so the edge's idle timeout (WS_IDLE_TIMEOUT) never closes a quiet member.
// Node's event loop costs far less per frame than a Python client, so on a small machine the load
// generator takes less CPU away from the services it measures.
import { readFileSync } from "node:fs";
import { monitorEventLoopDelay } from "node:perf_hooks";
import { createInterface } from "node:readline";
import WebSocket from "ws";

const input = JSON.parse(readFileSync(process.argv[2], "utf8"));
const mode = input.mode || "load";
const sendWindow = input.window ?? 4;

// Send times of the messages sent while measuring; warm-up messages are not in it.
const sentAt = new Map();
// Send times of every send not yet answered, for the refusal latency of error frames.
const unansweredAt = new Map();
const latencies = [];
const errors = {};
const refusalMs = {};
const retryable = {};
// The retry hints of error frames by code, in milliseconds (`retry_after_ms`, else `retry_after` in s).
const retryAfter = {};
const closes = {};
const roomSizes = new Map();
// client_msg_id -> members that received it (messages acked, or sent in sockets mode).
const received = new Map();
const ackedIds = [];
// client_msg_id -> room code of the messages whose deliveries are counted (awaitDeliveries, listAcked).
const idRoom = new Map();
const arrivals = new Map(); // sockets mode: client_msg_id -> arrival times
let acked = 0;
// Acks that arrived while measured sending went on (whichever send they answer), and when that ends.
let ackedInWindow = 0;
let windowEnd = Infinity;
const ackLatencies = [];
let deliveries = 0;
let measuring = false;
let connectRetries = 0;
// Sends whose socket closed before they were answered.
let closedUnanswered = 0;
const now = () => Number(process.hrtime.bigint()) / 1e6;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

for (const client of input.clients) roomSizes.set(client.code, (roomSizes.get(client.code) || 0) + 1);

// Most frames are delivered messages, and all this process needs of one is its client_msg_id: read
// without parsing the rest (JSON.parse was a third of this process's CPU with rooms of 1,000). The
// edge writes a message frame as compact JSON ending in its `"type":"message"`; the key's pattern
// cannot occur inside a string value (its quotes would be escaped) and no nested object has that key.
// Anything else (or an id that would need unescaping) is parsed whole.
const MESSAGE_TAIL = ',"type":"message"}';
const ID_KEY = '"client_msg_id":"';
function deliveredId(text) {
  if (!text.endsWith(MESSAGE_TAIL)) return undefined;
  const key = text.indexOf(ID_KEY);
  if (key < 0) return undefined;
  const start = key + ID_KEY.length;
  const end = text.indexOf('"', start);
  if (end < 0) return undefined;
  const id = text.slice(start, end);
  return id.includes("\\") ? undefined : id;
}

// How late the loop ran its monitor's timer, in ms: the histogram holds each interval's length in
// ns, the interval itself included.
const LOOP_RESOLUTION_MS = 10;
function lateness(histogram) {
  const late = (ns) => Math.max(0, Math.round((ns / 1e6 - LOOP_RESOLUTION_MS) * 100) / 100);
  return { p50: late(histogram.percentile(50)), p99: late(histogram.percentile(99)), max: late(histogram.max) };
}

function openOnce(client, localAddress) {
  return new Promise((resolve, reject) => {
    const options = { perMessageDeflate: false, handshakeTimeout: 30_000 };
    if (localAddress) options.localAddress = localAddress;
    const ws = new WebSocket(`${input.wsBase}/ws/v1/rooms/${client.code}?token=${client.token}`, options);
    const state = { ws, code: client.code, inFlight: new Set(), waiters: [], lastSent: now(), ready: false };
    ws.on("message", (raw) => {
      const text = raw.toString();
      const delivered = deliveredId(text);
      const frame = delivered === undefined ? JSON.parse(text) : null;
      const kind = frame === null ? "message" : frame.type;
      if (kind === "message") {
        const id = frame === null ? delivered : frame.client_msg_id;
        if (received.has(id)) received.set(id, received.get(id) + 1);
        if (mode === "sockets") {
          const times = arrivals.get(id);
          if (times) times.push(now());
          return;
        }
        const sent = sentAt.get(id);
        if (measuring && sent !== undefined) {
          deliveries += 1;
          latencies.push(now() - sent);
        }
      } else if (kind === "ack" || kind === "error") {
        const id = frame.client_msg_id;
        if (kind === "error") {
          errors[frame.code] = (errors[frame.code] || 0) + 1;
          if (frame.retryable) retryable[frame.code] = (retryable[frame.code] || 0) + 1;
          const hint = frame.retry_after_ms ?? (frame.retry_after == null ? null : frame.retry_after * 1000);
          if (typeof hint === "number") (retryAfter[frame.code] ||= []).push(hint);
          const at = unansweredAt.get(id);
          if (at !== undefined) (refusalMs[frame.code] ||= []).push(now() - at);
        }
        unansweredAt.delete(id);
        const answered = state.inFlight.delete(id);
        if (answered && kind === "ack") {
          const at = now();
          if (measuring && at <= windowEnd) ackedInWindow += 1;
          const sent = sentAt.get(id);
          if (measuring && sent !== undefined) {
            acked += 1;
            ackLatencies.push(at - sent);
          }
          if (idRoom.has(id)) ackedIds.push(id);
        }
        if (answered) {
          const waiter = state.waiters.shift();
          if (waiter) waiter();
        }
      } else if (kind === "ready") {
        state.ready = true;
        resolve(state);
      }
    });
    ws.on("close", (code) => {
      if (!state.ready) reject(new Error(`closed ${code} before ready`));
      else closes[code] = (closes[code] || 0) + 1;
      // Whatever waits for this socket's answers would wait forever.
      closedUnanswered += state.inFlight.size;
      for (const id of state.inFlight) unansweredAt.delete(id);
      state.inFlight.clear();
      for (const waiter of state.waiters.splice(0)) waiter();
    });
    ws.on("error", (error) => {
      if (!state.ready) reject(error);
    });
  });
}

async function open(client, localAddress) {
  for (let attempt = 0; ; attempt++) {
    try {
      return await openOnce(client, localAddress);
    } catch (error) {
      // A refused handshake (503 while many wait) is retried a few times, then the run fails.
      if (attempt >= 4) throw error;
      connectRetries += 1;
      await sleep(200 * 2 ** attempt);
    }
  }
}

const states = [];
// Pings for quiet sockets (those connected first wait for the others), checked each second.
const pingEvery = (input.pingEvery || 20) * 1000;
const pinger = setInterval(() => {
  const due = now() - pingEvery;
  for (const state of states) {
    if (state && state.lastSent < due && state.ws.readyState === WebSocket.OPEN) {
      state.lastSent = now();
      state.ws.send('{"type":"ping"}');
    }
  }
}, 1000);
{
  const addresses = input.sourceAddresses && input.sourceAddresses.length ? input.sourceAddresses : [null];
  let next = 0;
  const started = now();
  await Promise.all(
    Array.from({ length: Math.max(1, input.connectConcurrency || 1) }, async () => {
      while (next < input.clients.length) {
        const index = next++;
        states[index] = await open(input.clients[index], addresses[index % addresses.length]);
      }
    }),
  );
  const connected = { phase: "connected", connect_s: (now() - started) / 1000 };
  process.stdout.write(JSON.stringify({ ...connected, connect_retries: connectRetries }) + "\n");
}

const lines = createInterface({ input: process.stdin });
await new Promise((resolve) => lines.once("line", resolve));
lines.close();

let counter = 0;
function send(state) {
  const id = `${process.pid}-${counter++}`;
  const at = now();
  if (measuring) sentAt.set(id, at);
  unansweredAt.set(id, at);
  state.inFlight.add(id);
  state.lastSent = at;
  state.ws.send(JSON.stringify({ type: "send", client_msg_id: id, text: `load ${id}` }));
}

function finish(summary) {
  clearInterval(pinger);
  for (const state of states) state.ws.close();
  // Exit only once the (possibly large) line has been handed to the pipe.
  process.stdout.write(JSON.stringify(summary) + "\n", () => process.exit(0));
}

function undelivered() {
  let missing = 0;
  for (const id of ackedIds) {
    const members = roomSizes.get(idRoom.get(id));
    if (received.get(id) < members) missing += 1;
  }
  return missing;
}

if (mode === "sockets") {
  const probeRoom = states[0].code;
  const probes = [];
  for (let p = 0; p < (input.probes || 1); p++) {
    const id = `probe-${process.pid}-${p}`;
    const times = [];
    arrivals.set(id, times);
    // The room's members with a socket still open; the first of them sends.
    const present = states.filter(
      (each) => each.code === probeRoom && each.ws.readyState === WebSocket.OPEN,
    );
    const members = present.length;
    const state = present[0];
    const at = now();
    unansweredAt.set(id, at);
    state.inFlight.add(id);
    state.lastSent = at;
    let ackMs = null;
    const ackWait = new Promise((resolve) => state.waiters.push(resolve));
    state.ws.send(JSON.stringify({ type: "send", client_msg_id: id, text: `probe ${p}` }));
    ackWait.then(() => {
      ackMs = now() - at;
    });
    const deadline = at + (input.probeTimeout || 10) * 1000;
    while (times.length < members && now() < deadline) await sleep(2);
    const delays = times.map((t) => t - at).sort((a, b) => a - b);
    probes.push({
      members,
      received: times.length,
      all_received_ms: times.length === members ? delays[delays.length - 1] : null,
      ack_ms: ackMs,
      delays_ms: delays,
    });
    arrivals.delete(id);
    await sleep((input.probeGap || 0.5) * 1000);
  }
  finish({ phase: "done", probes, errors, closes });
} else {
  const warmupStarted = now();
  const deadline = warmupStarted + (input.warmup + input.duration) * 1000;
  windowEnd = deadline;
  let started = warmupStarted;
  const loopDelay = monitorEventLoopDelay({ resolution: LOOP_RESOLUTION_MS });
  setTimeout(() => {
    measuring = true;
    started = now();
    loopDelay.enable();
    process.stdout.write(JSON.stringify({ phase: "measuring" }) + "\n");
  }, input.warmup * 1000);
  const track = input.listAcked || input.awaitDeliveries;
  const sendTracked = (state) => {
    send(state);
    if (track) {
      const id = `${process.pid}-${counter - 1}`;
      idRoom.set(id, state.code);
      received.set(id, 0);
    }
  };
  if (input.rate > 0) {
    const interval = 1000 / input.rate;
    let next = warmupStarted;
    let index = 0;
    while (now() < deadline) {
      const wait = next - now();
      if (wait > 0) await sleep(wait);
      const state = states[index++ % states.length];
      if ((sendWindow === 0 || state.inFlight.size < sendWindow) && state.ws.readyState === WebSocket.OPEN) {
        sendTracked(state);
      }
      next += interval;
    }
  } else {
    await Promise.all(
      states.map(async (state) => {
        while (now() < deadline && state.ws.readyState === WebSocket.OPEN) {
          while (sendWindow > 0 && state.inFlight.size >= sendWindow) {
            await new Promise((resolve) => state.waiters.push(resolve));
          }
          if (state.ws.readyState !== WebSocket.OPEN) break;
          sendTracked(state);
        }
      }),
    );
  }
  const elapsed = (now() - started) / 1000;
  loopDelay.disable();
  // Let in-flight acks and deliveries arrive before reading the counters.
  const drainStarted = now();
  const drainUntil = drainStarted + input.drainLimit * 1000;
  while (states.some((state) => state.inFlight.size > 0) && now() < drainUntil) await sleep(50);
  if (input.awaitDeliveries) while (undelivered() > 0 && now() < drainUntil) await sleep(50);
  const drained = (now() - drainStarted) / 1000;
  await sleep(input.drainAfterAcks * 1000);
  measuring = false;
  latencies.sort((a, b) => a - b);
  ackLatencies.sort((a, b) => a - b);
  const refusals = {};
  for (const [code, times] of Object.entries(refusalMs)) refusals[code] = times.sort((a, b) => a - b);
  const summary = {
    phase: "done",
    elapsed,
    drain_s: drained,
    sent: sentAt.size,
    acked,
    acked_in_window: ackedInWindow,
    ack_latencies: ackLatencies,
    deliveries,
    errors,
    retryable,
    retry_after: retryAfter,
    refusal_ms: refusals,
    closes,
    unanswered: states.reduce((n, state) => n + state.inFlight.size, 0),
    closed_unanswered: closedUnanswered,
    loop_delay_ms: lateness(loopDelay),
    latencies,
  };
  if (track) {
    summary.acked_total = ackedIds.length;
    summary.acked_not_delivered_to_all = undelivered();
  }
  if (input.listAcked) {
    summary.acked_ids = ackedIds;
  }
  finish(summary);
}
