// WebSocket clients for bench/ws_load.py. Reads a JSON job from the file named by its argument:
//   {wsBase, clients: [{code, token}], rate, window, warmup, duration, drainLimit, drainAfterAcks}
// connects every client, prints {"phase": "connected"}, waits for a line on stdin, then sends (at
// `rate` messages/s over all clients, or as fast as acknowledgements allow when rate is 0, with at
// most `window` unacknowledged per client) for `warmup` seconds unmeasured, prints
// {"phase": "measuring"}, sends for `duration` seconds more, and prints one JSON line: counts, errors
// and the sorted send→receive latencies in milliseconds of the messages sent while measuring (once
// their acks are in, or `drainLimit` seconds have passed, and `drainAfterAcks` seconds more).
// Node's event loop costs far less per frame than a Python client, so on a small machine the load
// generator takes less CPU away from the services it measures.
import { readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import WebSocket from "ws";

const input = JSON.parse(readFileSync(process.argv[2], "utf8"));

// Send times of the messages sent while measuring; warm-up messages are not in it.
const sentAt = new Map();
const latencies = [];
const errors = {};
let acked = 0;
let deliveries = 0;
let measuring = false;
const now = () => Number(process.hrtime.bigint()) / 1e6;

function open(client) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${input.wsBase}/ws/v1/rooms/${client.code}?token=${client.token}`, {
      perMessageDeflate: false,
    });
    const state = { ws, inFlight: new Set(), waiters: [] };
    ws.on("message", (raw) => {
      const frame = JSON.parse(raw);
      if (frame.type === "ready") {
        resolve(state);
      } else if (frame.type === "message") {
        const sent = sentAt.get(frame.client_msg_id);
        if (measuring && sent !== undefined) {
          deliveries += 1;
          latencies.push(now() - sent);
        }
      } else if (frame.type === "ack" || frame.type === "error") {
        if (frame.type === "error") errors[frame.code] = (errors[frame.code] || 0) + 1;
        const counted = measuring && frame.type === "ack" && sentAt.has(frame.client_msg_id);
        if (state.inFlight.delete(frame.client_msg_id) && counted) acked += 1;
        const waiter = state.waiters.shift();
        if (waiter) waiter();
      }
    });
    ws.on("error", reject);
  });
}

let counter = 0;
function send(state) {
  const id = `${process.pid}-${counter++}`;
  if (measuring) sentAt.set(id, now());
  state.inFlight.add(id);
  state.ws.send(JSON.stringify({ type: "send", client_msg_id: id, text: `load ${id}` }));
}

async function sendWhenFree(state) {
  while (state.inFlight.size >= input.window) {
    await new Promise((resolve) => state.waiters.push(resolve));
  }
  send(state);
}

const states = [];
for (const client of input.clients) states.push(await open(client));
process.stdout.write(JSON.stringify({ phase: "connected" }) + "\n");
const lines = createInterface({ input: process.stdin });
await new Promise((resolve) => lines.once("line", resolve));
lines.close();

const warmupStarted = now();
const deadline = warmupStarted + (input.warmup + input.duration) * 1000;
let started = warmupStarted;
setTimeout(() => {
  measuring = true;
  started = now();
  process.stdout.write(JSON.stringify({ phase: "measuring" }) + "\n");
}, input.warmup * 1000);
if (input.rate > 0) {
  const interval = 1000 / input.rate;
  let next = warmupStarted;
  let index = 0;
  while (now() < deadline) {
    const wait = next - now();
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
    const state = states[index++ % states.length];
    if (state.inFlight.size < input.window) send(state);
    next += interval;
  }
} else {
  await Promise.all(
    states.map(async (state) => {
      while (now() < deadline) await sendWhenFree(state);
    }),
  );
}
const elapsed = (now() - started) / 1000;
// Let in-flight acks and deliveries arrive before reading the counters.
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const drainUntil = now() + input.drainLimit * 1000;
while (states.some((state) => state.inFlight.size > 0) && now() < drainUntil) await sleep(50);
await sleep(input.drainAfterAcks * 1000);
measuring = false;
for (const state of states) state.ws.close();
latencies.sort((a, b) => a - b);
const summary = { phase: "done", elapsed, sent: sentAt.size, acked, deliveries, errors, latencies };
// Exit only once the (possibly large) line has been handed to the pipe.
process.stdout.write(JSON.stringify(summary) + "\n", () => process.exit(0));
