"use strict";
// The page does nothing until its user acts. (Tests and scripts/bench-browser drive it through
// the browser's DevTools protocol, calling the functions below; the server ships no way to run
// it from its address.)
const $ = (id) => document.getElementById(id);
const status = (text) => { $("status").textContent = text; };

function headers() {
  const headers = { "content-type": "application/json" };
  const key = $("key").value.trim();
  if (key) headers.authorization = "Bearer " + key;
  return headers;
}

async function api(method, path, body) {
  const response = await fetch(path, { method, headers: headers(), body: body && JSON.stringify(body) });
  const json = await response.json();
  if (!response.ok) throw new Error(json.error ? json.error.message : response.statusText);
  return json;
}

// One connection: a peer connection with a data channel "api" (and the camera when asked).
// With `vision` (a task name), the server analyses the camera and answers on channel "vision".
async function connect(camera, vision) {
  const started = performance.now();
  // Milliseconds from `started` to each step of the setup (scripts/bench-browser prints them).
  const phases = {};
  const mark = (name) => { if (!(name in phases)) phases[name] = performance.now() - started; };
  const pc = new RTCPeerConnection();
  pc.oniceconnectionstatechange = () => mark("ice_" + pc.iceConnectionState);
  pc.onconnectionstatechange = () => mark("connection_" + pc.connectionState);
  const channel = pc.createDataChannel("api");
  const visionResults = [];
  let visionArrived = null;
  const firstVision = new Promise((resolve) => { visionArrived = resolve; });
  if (vision) {
    const results = pc.createDataChannel("vision");
    results.onmessage = (event) => {
      const result = JSON.parse(event.data);
      visionResults.push(result);
      $("reply").textContent = JSON.stringify(result.result || result.error);
      visionArrived(result);
    };
  }
  if (camera) {
    const stream = await navigator.mediaDevices.getUserMedia({ video: true });
    for (const track of stream.getTracks()) pc.addTrack(track, stream);
  }
  // Candidates found before the session exists wait for its id; later ones trickle at once.
  let sessionId = null;
  const early = [];
  const trickle = (candidate) =>
    api("POST", `/v1/webrtc/sessions/${sessionId}/candidates`, { candidate: candidate.candidate }).catch(() => {});
  pc.onicecandidate = (event) => {
    if (!event.candidate) return;
    if (sessionId) trickle(event.candidate); else early.push(event.candidate);
  };
  await pc.setLocalDescription(await pc.createOffer());
  mark("offer_made");
  const offer = { type: "offer", sdp: pc.localDescription.sdp };
  if (vision) offer.vision = { task: vision };
  const answer = await api("POST", "/v1/webrtc/offer", offer);
  mark("answer_received");
  sessionId = answer.session_id;
  await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
  mark("answer_applied");
  early.forEach(trickle);
  await new Promise((resolve, reject) => {
    channel.onopen = resolve;
    channel.onerror = (event) => reject(new Error("the data channel failed: " + event.error));
  });
  mark("channel_open");
  return { pc, channel, sessionId, setupMs: performance.now() - started, phases, client: new Client(channel), visionResults, firstVision };
}

// The message protocol: requests by id; replies, stream events, and pieces of long replies.
class Client {
  constructor(channel) {
    this.channel = channel;
    this.next = 0;
    this.waiting = new Map();
    this.pieces = new Map();
    channel.onmessage = (event) => this.receive(JSON.parse(event.data));
  }
  receive(message) {
    if ("part" in message) {
      const text = (this.pieces.get(message.id) || "") + message.part;
      if (message.more) { this.pieces.set(message.id, text); return; }
      this.pieces.delete(message.id);
      message = JSON.parse(text);
    }
    const handler = this.waiting.get(message.id);
    if (handler) handler(message);
  }
  // Resolves with the reply; `onEvent` gets each event of a stream, which resolves at `done`.
  request(path, body, onEvent) {
    const id = "r" + this.next++;
    return new Promise((resolve) => {
      this.waiting.set(id, (message) => {
        if (message.event && onEvent) { onEvent(message.event); return; }
        this.waiting.delete(id);
        resolve(message);
      });
      this.channel.send(JSON.stringify(body === undefined ? { id, path } : { id, path, body }));
    });
  }
}

async function chat(client, model, prompt, maxTokens, show) {
  const result = { deltas: [], finish_reason: null, errors: [] };
  const reply = await client.request("/v1/chat/completions", {
    model, messages: [{ role: "user", content: prompt }], max_tokens: maxTokens, temperature: 0, stream: true,
  }, (event) => {
    const choice = (event.choices || [])[0] || {};
    if (choice.delta && choice.delta.content) { result.deltas.push(choice.delta.content); show(result.deltas.join("")); }
    if (choice.finish_reason) result.finish_reason = choice.finish_reason;
  });
  if (!reply.done) result.errors.push(reply);
  return result;
}

async function waitForFrames(sessionId, wanted) {
  for (;;) {
    const session = await api("GET", `/v1/webrtc/sessions/${sessionId}`);
    if (session.video.frames_decoded >= wanted) return session.video;
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

async function bench(client, count) {
  const times = [];
  for (let i = 0; i < count; i++) {
    const start = performance.now();
    const reply = await client.request("/v1/health");
    if (reply.status !== 200) throw new Error("health answered " + reply.status);
    times.push(performance.now() - start);
  }
  times.sort((a, b) => a - b);
  const at = (q) => times[Math.min(times.length - 1, Math.floor(q * times.length))];
  return { count, p50_ms: at(0.5), p99_ms: at(0.99) };
}

let connection = null;
$("send").onclick = async () => {
  try {
    if (!connection) { status("connecting…"); connection = await connect($("camera").checked, null); }
    status(`connected (session ${connection.sessionId})`);
    await chat(connection.client, $("model").value, $("prompt").value, 256, (text) => { $("reply").textContent = text; });
  } catch (err) { status("error: " + err.message); }
};
