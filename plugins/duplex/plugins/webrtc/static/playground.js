// duplex playground: one WebRTC call to the agent, its transcript, tools and latency.
// No dependencies; everything is served by `agent dev`. `window.duplexTest` is the hook
// automated tests use (record what the agent said, read the transcript, speak a file).
"use strict";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
if (params.get("echo") === "0") $("echo").checked = false;

const call = {
  pc: null, dc: null, sessionId: null, mic: null, ctx: null, mix: null,
  recorder: null, recorded: [], onStopped: null, timers: [], connected: null,
};
const events = [];        // every message from the agent, in order
const waiters = new Set(); // pending duplexTest.waitFor calls

// ---------------------------------------------------------------- log and UI state
function log(text, cls) {
  const li = document.createElement("li");
  li.textContent = `${new Date().toLocaleTimeString()} ${text}`;
  if (cls) li.className = cls;
  $("log").prepend(li);
}

function setState(id, who, state) {
  const el = $(id);
  el.dataset.state = state;
  el.textContent = `${who}: ${state}`;
}

function setConnected(on) {
  $("connect").disabled = on;
  $("hangup").disabled = !on;
  $("text").disabled = !on;
  $("send").disabled = !on;
}

// ---------------------------------------------------------------- rendering messages
function transcriptItem(itemId, role) {
  let li = document.querySelector(`#transcript li[data-item="${CSS.escape(itemId)}"]`);
  if (!li) {
    li = document.createElement("li");
    li.dataset.item = itemId;
    li.dataset.role = role;
    li.dataset.final = "false";
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = role === "user" ? "you" : "agent";
    const text = document.createElement("span");
    text.className = "text";
    li.append(who, text);
    $("transcript").append(li);
  }
  return li;
}

function onTranscript(m) {
  const li = transcriptItem(m.item_id, m.role);
  const text = li.querySelector(".text");
  // Partials stream as deltas; the final message carries the whole (possibly cut) text.
  text.textContent = m.final ? m.text : text.textContent + m.text;
  li.dataset.final = String(m.final);
  $("transcript").scrollTop = $("transcript").scrollHeight;
}

function toolItem(m) {
  let li = document.querySelector(`#tools li[data-call="${CSS.escape(m.call_id)}"]`);
  if (!li) {
    li = document.createElement("li");
    li.dataset.call = m.call_id;
    li.className = "pending";
    const sig = document.createElement("span");
    sig.textContent = `${m.name}(${m.arguments})`;
    const out = document.createElement("span");
    out.className = "out";
    li.append(sig, out);
    $("tools").prepend(li);
  }
  return li;
}

function onMetrics(m) {
  const row = document.createElement("tr");
  const cells = [
    $("latency").tBodies[0].rows.length + 1,
    fmtMs(m.end_to_end_ms) + (m.interrupted ? " (interrupted)" : ""),
    fmtMs(m.backend_ttfa_ms),
    m.played_ms ? fmtMs(m.played_ms) : "no audio",
  ];
  for (const c of cells) {
    const td = document.createElement("td");
    td.textContent = c;
    row.append(td);
  }
  $("latency").tBodies[0].append(row);
}

const fmtMs = (v) => (v === null || v === undefined ? "–" : `${Math.round(v)} ms`);

function onMessage(m) {
  events.push(m);
  switch (m.type) {
    case "session":
      call.sessionId = m.session_id;
      $("meta").textContent = [m.app, m.backend && `backend: ${m.backend}`, `call ${m.session_id}`]
        .filter(Boolean).join(" · ");
      break;
    case "agent_state": setState("agent-state", "agent", m.state); break;
    case "user_state": setState("user-state", "you", m.state); break;
    case "transcript": onTranscript(m); break;
    case "tool_call": toolItem(m); log(`tool ${m.name} called`); break;
    case "tool_result": {
      const li = toolItem(m);
      li.className = m.is_error ? "error" : "";
      li.querySelector(".out").textContent = `→ ${m.output} (${fmtMs(m.duration_ms)})`;
      break;
    }
    case "metrics": onMetrics(m); break;
    case "interrupted": {
      const li = m.item_id && document.querySelector(`#transcript li[data-item="${CSS.escape(m.item_id)}"]`);
      if (li) li.classList.add("truncated");
      log(`interrupted after ${fmtMs(m.played_ms)} (stopped in ${fmtMs(m.latency_ms)})`);
      break;
    }
    case "error": log(`error ${m.code}: ${m.message}`, "error"); break;
    case "closed": log(`call closed (${m.reason})`); break;
    default: break;
  }
  for (const w of [...waiters]) w.check(m);
}

// ---------------------------------------------------------------- audio graph
function meter(ctx, node, el) {
  const an = ctx.createAnalyser();
  an.fftSize = 1024;
  node.connect(an);
  const buf = new Float32Array(an.fftSize);
  const timer = setInterval(() => {
    an.getFloatTimeDomainData(buf);
    let sum = 0;
    for (const v of buf) sum += v * v;
    const rms = Math.sqrt(sum / buf.length);
    el.style.width = `${Math.min(100, rms * 400)}%`;
    el.dataset.level = rms.toFixed(4);
  }, 60);
  call.timers.push(timer);
}

async function attachRemote(stream) {
  $("remote").srcObject = stream; // Chrome only feeds remote WebRTC audio to WebAudio when played
  const src = call.ctx.createMediaStreamSource(stream);
  meter(call.ctx, src, $("agent-level"));
  if (!call.ctx.audioWorklet) return;
  const rec = new AudioWorkletNode(call.ctx, "duplex-recorder");
  rec.port.onmessage = (e) => {
    if (e.data === "stopped") { if (call.onStopped) call.onStopped(); }
    else call.recorded.push(e.data);
  };
  const sink = call.ctx.createGain();
  sink.gain.value = 0; // keeps the recorder pulled without playing the audio twice
  src.connect(rec).connect(sink).connect(call.ctx.destination);
  call.recorder = rec;
}

// ---------------------------------------------------------------- the call
function iceGathered(pc, ms) {
  return new Promise((resolve) => {
    if (pc.iceGatheringState === "complete") return resolve();
    const t = setTimeout(resolve, ms);
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") { clearTimeout(t); resolve(); }
    });
  });
}

async function connect() {
  if (call.pc) throw new Error("already connected");
  $("connect").disabled = true;
  try {
    if (call.ctx) await call.ctx.close();
    call.ctx = new AudioContext({ sampleRate: 48000 });
    await call.ctx.resume(); // a context made after an await may start suspended
    // AudioWorklet (the recorder behind duplexTest) needs a secure context, like the mic.
    if (call.ctx.audioWorklet) await call.ctx.audioWorklet.addModule("/static/recorder-worklet.js");
    // Mic and test/file audio are mixed into the one track the agent hears.
    call.mix = call.ctx.createGain();
    const out = call.ctx.createMediaStreamDestination();
    call.mix.connect(out);
    meter(call.ctx, call.mix, $("mic-level"));

    const pc = new RTCPeerConnection();
    call.pc = pc;
    pc.addTrack(out.stream.getAudioTracks()[0], out.stream);
    const dc = pc.createDataChannel("duplex");
    call.dc = dc;
    call.connected = new Promise((resolve, reject) => {
      dc.onopen = () => { setConnected(true); log("connected"); resolve(); };
      pc.addEventListener("connectionstatechange", () => {
        if (pc.connectionState === "failed") reject(new Error("connection failed"));
      });
    });
    dc.onmessage = (e) => onMessage(JSON.parse(e.data));
    dc.onclose = () => teardown("data channel closed");
    pc.ontrack = (e) => attachRemote(e.streams[0] || new MediaStream([e.track]));
    pc.addEventListener("connectionstatechange", () => {
      log(`connection ${pc.connectionState}`);
      if (["failed", "closed"].includes(pc.connectionState)) teardown(pc.connectionState);
    });

    await pc.setLocalDescription(await pc.createOffer());
    await iceGathered(pc, 3000);
    const res = await fetch("/offer", {
      method: "POST",
      headers: offerHeaders(),
      body: JSON.stringify({ type: "offer", sdp: pc.localDescription.sdp }),
    });
    const body = await res.json();
    if (!res.ok) throw new Error(body.error || `offer refused (${res.status})`);
    call.sessionId = body.session_id;
    await pc.setRemoteDescription({ type: "answer", sdp: body.sdp });
    await call.connected;
    await openMic();
  } catch (err) {
    log(`could not connect: ${err.message}`, "error");
    teardown("error");
    throw err;
  }
}

// A server started with a token (`agent dev --token`) is opened as `/?token=...`.
function offerHeaders() {
  const headers = { "Content-Type": "application/json" };
  const token = params.get("token");
  if (token) headers.Authorization = `Bearer ${token}`;
  return headers;
}

// The microphone opens once the call is up, so the first words reach the agent.
// Without one (refused, or a page not served from localhost/https) the call stays up for text.
async function openMic() {
  if (!navigator.mediaDevices) {
    log("no microphone: open the playground via http://localhost or https; typing works", "error");
    return;
  }
  try {
    const echo = $("echo").checked;
    call.mic = await navigator.mediaDevices.getUserMedia({ audio: { echoCancellation: echo } });
    call.ctx.createMediaStreamSource(call.mic).connect(call.mix);
  } catch (err) {
    log(`microphone unavailable (${err.message}); typing still works`, "error");
  }
}

function teardown(reason) {
  if (!call.pc) return;
  const pc = call.pc;
  call.pc = null;
  if (call.dc && call.dc.readyState === "open") call.dc.send(JSON.stringify({ type: "hangup" }));
  pc.close();
  if (call.mic) call.mic.getTracks().forEach((t) => t.stop());
  call.timers.forEach(clearInterval);
  call.timers = [];
  setConnected(false);
  setState("agent-state", "agent", "closed");
  log(`hung up (${reason})`);
}

function sendText(text) {
  if (!call.dc || call.dc.readyState !== "open") throw new Error("not connected");
  call.dc.send(JSON.stringify({ type: "text", text }));
}

// Plays a WAV/any decodable file into the call as if spoken into the microphone.
async function speak(bytes) {
  if (!call.ctx || !call.mix) throw new Error("not connected");
  const audio = await call.ctx.decodeAudioData(bytes);
  const node = call.ctx.createBufferSource();
  node.buffer = audio;
  node.connect(call.mix);
  const ended = new Promise((resolve) => { node.onended = resolve; });
  node.start();
  await ended;
  return audio.duration;
}

// ---------------------------------------------------------------- wiring
$("connect").onclick = () => connect().catch(() => {});
$("hangup").onclick = () => teardown("hang up");
$("text-form").onsubmit = (e) => {
  e.preventDefault();
  const text = $("text").value.trim();
  if (!text) return;
  sendText(text);
  $("text").value = "";
};

// ---------------------------------------------------------------- test hook
function b64ToBytes(b64) {
  const bin = atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out.buffer;
}

function pcmToB64(chunks) {
  const n = chunks.reduce((a, c) => a + c.length, 0);
  const pcm = new Int16Array(n);
  let at = 0;
  for (const c of chunks) {
    for (let i = 0; i < c.length; i++) pcm[at++] = Math.max(-32768, Math.min(32767, Math.round(c[i] * 32767)));
  }
  const bytes = new Uint8Array(pcm.buffer);
  let bin = "";
  for (let i = 0; i < bytes.length; i += 0x8000) bin += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(bin);
}

window.duplexTest = {
  events,
  connect,
  hangup: () => teardown("test"),
  sendText,
  speak: (b64) => speak(b64ToBytes(b64)),
  sessionId: () => call.sessionId,
  sampleRate: () => (call.ctx ? call.ctx.sampleRate : null),
  // Resolves with the first message (from index `from` on) that `pred` accepts.
  waitFor(pred, timeoutMs = 10000, from = 0) {
    for (const m of events.slice(from)) if (pred(m)) return Promise.resolve(m);
    return new Promise((resolve, reject) => {
      const w = {
        check: (m) => { if (pred(m)) { waiters.delete(w); clearTimeout(t); resolve(m); } },
      };
      const t = setTimeout(() => { waiters.delete(w); reject(new Error(`timed out waiting (${pred})`)); }, timeoutMs);
      waiters.add(w);
    });
  },
  startRecording() {
    if (!call.recorder) throw new Error("no agent audio yet");
    call.recorded = [];
    call.recorder.port.postMessage("start");
  },
  // The agent's audio since startRecording, as base64 little-endian PCM16 mono.
  stopRecording() {
    return new Promise((resolve) => {
      call.onStopped = () => { call.onStopped = null; resolve(pcmToB64(call.recorded)); };
      call.recorder.port.postMessage("stop");
    });
  },
  // What the transcript panel shows: [{role, text, final, interrupted}].
  transcript() {
    return [...document.querySelectorAll("#transcript li")].map((li) => ({
      role: li.dataset.role,
      text: li.querySelector(".text").textContent,
      final: li.dataset.final === "true",
      interrupted: li.classList.contains("truncated"),
    }));
  },
  tools() {
    return [...document.querySelectorAll("#tools li")].map((li) => li.textContent);
  },
  micLevel: () => Number($("mic-level").dataset.level || 0),
};

if (params.get("autoconnect") === "1") connect().catch(() => {});
