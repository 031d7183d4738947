// The client processes of bench/hub.py: socket.io-client (web-client's npm dependency) under load.
//
//     node bench/hub_clients.mjs < spec.json
//
// spec: {url, clients: [[index, auth, query?], ...], start, stop, settle, pose_hz, op_hz}, times in seconds on
// CLOCK_MONOTONIC (Python's time.monotonic and Node's process.hrtime share it on Linux). From `start` to
// `stop` each client sends volatile poses at pose_hz and one annotation op (with an ack) every 1/op_hz s,
// labelled "c<index>-<n>". It prints {emitted: {label: t}, received: {"label|index": t}, counts} as JSON.
import { createRequire } from "node:module";

const require = createRequire(new URL("../web-client/package.json", import.meta.url));
const { io } = require("socket.io-client");

const now = () => Number(process.hrtime.bigint()) / 1e9;
const sleep = (seconds) => new Promise((resolve) => setTimeout(resolve, Math.max(0, seconds * 1000)));

function random(seed) {
  let a = seed + 0x6d2b79f5;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

let input = "";
for await (const chunk of process.stdin) input += chunk;
const spec = JSON.parse(input);
const emitted = {};
const received = {};
const counts = { event: 0, poses: 0, ack: 0, nack: 0 };

function connect([index, auth, query]) {
  return new Promise((resolve, reject) => {
    const socket = io(spec.url, { auth, query: query || {}, transports: ["websocket"], reconnection: false,
                                  forceNew: true, timeout: 30000 });
    socket.on("event", (message) => {
      counts.event += 1;
      const label = message.data && message.data.label;
      if (label) received[`${label}|${index}`] = now();
    });
    socket.on("poses", () => { counts.poses += 1; });
    socket.on("connect", () => resolve([index, socket]));
    socket.on("connect_error", (error) => reject(new Error(`client ${index}: ${error.message}`)));
  });
}

async function load(index, socket) {
  const rng = random(index);
  await sleep(spec.start - now() + rng() / spec.pose_hz);
  let nextPose = now();
  let nextOp = nextPose + rng() / spec.op_hz;
  let n = 0;
  while (now() < spec.stop) {
    if (now() >= nextOp) {
      const label = `c${index}-${n++}`;
      emitted[label] = now();
      socket.emit("op", { kind: "annotation.create", type: "point", position: [rng() * 100 - 50, 0, 0], label },
                  (ack) => { counts[ack && ack.ok ? "ack" : "nack"] += 1; });
      nextOp += 1 / spec.op_hz;
    }
    const x = rng() * 2 - 1;
    socket.volatile.emit("pose", {
      head: { position: [x, 1.6, 0.4], quaternion: [0, 0, 0, 1] },
      left: { position: [x - 0.2, 1.2, 0.3], quaternion: [0, 0, 0, 1] },
      right: { position: [x + 0.2, 1.2, 0.3], quaternion: [0, 0, 0, 1] },
    });
    nextPose += 1 / spec.pose_hz;
    await sleep(Math.min(nextPose, nextOp) - now());
  }
}

const sockets = await Promise.all(spec.clients.map(connect));
await Promise.all(sockets.map(([index, socket]) => load(index, socket)));
await sleep(spec.settle);
for (const [, socket] of sockets) socket.disconnect();
// a pipe is written asynchronously: exit only once the whole report is out
process.stdout.write(JSON.stringify({ emitted, received, counts }) + "\n", () => process.exit(0));
