// Drive a Theatrum room with the official JavaScript socket.io-client and print what happened, as JSON.
//
//     node tests/tools/socketio_client.mjs URL INVITE_TOKEN
//
// socket.io-client is web-client's npm dependency (run `npm ci` in web-client). The script joins with the
// invite, sends an op (ack), a malformed op (negative ack), a resume on the live socket, a volatile pose, waits
// for a `poses` tick with its own avatar, reconnects with auth.last_seq, and tries a forged token. It prints one
// JSON report on stdout; tests/test_hub_node.py checks it against the server. Exit status 2 on a timeout.
import { createRequire } from "node:module";

const require = createRequire(new URL("../../web-client/package.json", import.meta.url));
const { io } = require("socket.io-client");

const [url, token] = process.argv.slice(2);
if (!url || !token) {
  console.error("usage: node socketio_client.mjs URL INVITE_TOKEN");
  process.exit(2);
}

function waitFor(predicate, what, ms = 10000) {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const poll = () => {
      if (predicate()) return resolve();
      if (Date.now() - started > ms) return reject(new Error(`timed out waiting for ${what}`));
      setTimeout(poll, 5);
    };
    poll();
  });
}

function join(auth) {
  const seen = { snapshots: [], events: [], poses: [] };
  const socket = io(url, { auth, transports: ["websocket"], reconnection: false, forceNew: true });
  socket.on("snapshot", (snapshot) => seen.snapshots.push(snapshot));
  socket.on("event", (event) => seen.events.push(event));
  socket.on("poses", (frame) => seen.poses.push(frame));
  socket.on("connect_error", (error) => { seen.refusal = { message: error.message, data: error.data ?? null }; });
  return { socket, seen };
}

const report = {};
try {
  const { socket, seen } = join({ token });
  await waitFor(() => seen.snapshots.length && seen.poses.length, "the snapshot and the live avatars");
  report.snapshot = seen.snapshots[0];
  const me = report.snapshot.you.id;

  const op = { kind: "annotation.create", type: "measurement", a: [0, 0, 0], b: [3, 4, 12], label: "cochlear height" };
  report.create = await socket.timeout(10000).emitWithAck("op", op);
  await waitFor(() => seen.events.some((e) => e.seq === report.create.seq), "the op's event");
  report.invalid = await socket.timeout(10000).emitWithAck("op", { kind: "annotation.paint" });
  report.resume = await socket.timeout(10000).emitWithAck("resume", { last_seq: report.create.seq - 1 });

  socket.volatile.emit("pose", { head: { position: [0.1, 1.6, 0.4], quaternion: [0, 0, 0, 1] } });
  await waitFor(() => seen.poses.some((frame) => me in frame.poses), "a tick with our own pose");
  report.pose = seen.poses.find((frame) => me in frame.poses).poses[me];
  report.events = seen.events;

  const lastSeq = Math.max(report.snapshot.seq, ...seen.events.map((e) => e.seq));
  socket.disconnect();
  await new Promise((resolve) => setTimeout(resolve, 200)); // the server logs our leave
  const again = join({ token, last_seq: lastSeq });
  await waitFor(() => again.seen.poses.length, "the resumed history");
  report.last_seq = lastSeq;
  report.missed = again.seen.events;
  report.resnapshots = again.seen.snapshots.length;
  again.socket.disconnect();

  const forged = join({ token: token + "x" }); // a signature that does not match
  await waitFor(() => forged.seen.refusal, "the refusal of a forged token");
  report.refusal = forged.seen.refusal;
  forged.socket.close();
} catch (error) {
  report.error = String(error);
  process.stdout.write(JSON.stringify(report) + "\n", () => process.exit(2));
}
if (!report.error) process.stdout.write(JSON.stringify(report) + "\n", () => process.exit(0));
