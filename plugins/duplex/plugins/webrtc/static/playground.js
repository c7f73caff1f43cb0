// duplex playground: one WebRTC call to the agent, its transcript, tools and latency.
// No dependencies; everything is served by `agent dev`. `window.duplexTest` is the hook
// automated tests use (record what the agent said, read the transcript, speak a file).
"use strict";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
if (params.get("echo") === "0") $("echo").checked = false;

const token = params.get("token"); // passed on to the server when it asks for one
const call = {
  pc: null, dc: null, sessionId: null, mic: null, micSource: null, micGain: null, ctx: null,
  mix: null, recorder: null, recorded: [], onStopped: null, timers: [], connected: null,
  latency: null, onLatencyRecording: null, turn: 0, typedAt: null, pageLatency: null,
  number: 0, muted: false,
};
const pageLatencies = []; // {ms, kind: "speech"|"typed", call} per reply heard in this page
const CHARS_PER_S = 15;   // captions are revealed about as fast as speech goes
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
  $("mute").disabled = !on;
}

// A new call starts clean: states, numbering, and a divider in every list.
function resetForCall() {
  call.turn = 0;
  call.typedAt = null;
  call.pageLatency = null;
  call.sessionId = null;
  setState("agent-state", "agent", "idle");
  setState("user-state", "you", "idle");
  $("link-state").hidden = true;
  $("active-agent").hidden = true;
  $("meta").textContent = "connecting…";
}

// Once connected: the call gets its number, and every list a divider (from the second on).
function markCallStart() {
  call.number += 1;
  if (call.number > 1) {
    for (const id of ["transcript", "tools"]) {
      const li = document.createElement("li");
      li.className = "divider";
      li.textContent = `call ${call.number}`;
      $(id).append(li);
    }
    const row = $("latency").tBodies[0].insertRow();
    row.className = "divider";
    const td = row.insertCell();
    td.colSpan = 4;
    td.textContent = `call ${call.number}`;
  }
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
    li.dataset.full = "";
    $("transcript").append(li);
    if (role === "user") call.turn += 1;
  }
  return li;
}

function onTranscript(m) {
  const li = transcriptItem(m.item_id, m.role);
  // Partials stream as deltas; the final message carries the whole (possibly cut) text.
  li.dataset.full = m.final ? m.text : li.dataset.full + m.text;
  li.dataset.final = String(m.final);
  if (m.role !== "assistant") li.querySelector(".text").textContent = li.dataset.full;
  else {
    // A final that comes after the reply went quiet: it has been heard in full.
    if (m.final && li.dataset.heardFrom && $("agent-state").dataset.state !== "speaking") {
      li.dataset.done = "true";
    }
    reveal(li);
  }
  $("transcript").scrollTop = $("transcript").scrollHeight;
}

// The agent's words show as they are heard: text arrives ahead of its audio, so a
// caption grows with the time its reply has been audible, and is whole once it ends.
function reveal(li) {
  const full = li.dataset.full;
  let shown = full;
  if (li.dataset.heardFrom) {
    const heardS = (performance.now() - Number(li.dataset.heardFrom)) / 1000;
    if (li.dataset.done !== "true") shown = full.slice(0, Math.floor(heardS * CHARS_PER_S));
  } else if (li.dataset.done !== "true") {
    shown = "";
  }
  const text = li.querySelector(".text");
  if (text.textContent !== shown) text.textContent = shown;
}

function revealTick() {
  const speaking = $("agent-state").dataset.state === "speaking";
  for (const li of document.querySelectorAll('#transcript li[data-role="assistant"]')) {
    if (li.dataset.done === "true") continue;
    if (speaking && !li.dataset.heardFrom) li.dataset.heardFrom = String(performance.now());
    reveal(li);
  }
}

function finishCaptions() {
  for (const li of document.querySelectorAll('#transcript li[data-role="assistant"]')) {
    if (li.dataset.done === "true" || !li.dataset.heardFrom) continue;
    if (li.dataset.final === "true") { li.dataset.done = "true"; reveal(li); }
  }
}
setInterval(revealTick, 100);

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
  const page = m.played_ms ? call.pageLatency : null;
  if (page) call.pageLatency = null;
  row.dataset.pageMs = page ? String(page.ms) : "";
  const cells = [
    call.turn || "greeting",
    page ? `${fmtMs(page.ms)}${page.kind === "typed" ? " (typed)" : ""}` : "–",
    fmtMs(m.end_to_end_ms) + (m.interrupted ? " (interrupted)" : ""),
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
    case "agent_state":
      setState("agent-state", "agent", m.state);
      if (m.state !== "speaking") finishCaptions();
      break;
    case "reconnecting": case "reconnected": {
      const pill = $("link-state");
      pill.hidden = false;
      pill.dataset.state = m.type === "reconnecting" ? "reconnecting" : "back";
      pill.textContent = m.type === "reconnecting" ? "reconnecting…" : "back";
      log(m.type === "reconnecting" ? "backend connection lost: reconnecting…" : "backend connection back");
      break;
    }
    case "agent_handoff": {
      // The call moved to another agent: name it, and mark the place in the transcript.
      const pill = $("active-agent");
      pill.hidden = false;
      pill.textContent = `now: ${m.to}`;
      const li = document.createElement("li");
      li.className = "divider handoff";
      li.textContent = `${m.from} → ${m.to}`;
      $("transcript").append(li);
      log(`handed off from ${m.from} to ${m.to}`);
      break;
    }
    case "user_idle": log(`caller silent for ${Math.round(m.idle_s)} s (${m.count})`); break;
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
      if (li) { li.classList.add("truncated"); li.dataset.done = "true"; reveal(li); }
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

function visualize(ctx, node, canvas) {
  const an = ctx.createAnalyser();
  an.fftSize = 256;
  node.connect(an);
  const bins = new Uint8Array(an.frequencyBinCount);
  const g = canvas.getContext("2d");
  const draw = () => {
    if (!call.pc) { g.clearRect(0, 0, canvas.width, canvas.height); return; }
    an.getByteFrequencyData(bins);
    g.clearRect(0, 0, canvas.width, canvas.height);
    g.fillStyle = "#3157d5";
    const bars = 32, w = canvas.width / bars;
    for (let i = 0; i < bars; i++) {
      const h = (bins[i] / 255) * canvas.height;
      g.fillRect(i * w, canvas.height - h, w - 1, h);
    }
    requestAnimationFrame(draw);
  };
  requestAnimationFrame(draw);
}

async function attachRemote(stream) {
  $("remote").srcObject = stream; // Chrome only feeds remote WebRTC audio to WebAudio when played
  const src = call.ctx.createMediaStreamSource(stream);
  meter(call.ctx, src, $("agent-level"));
  visualize(call.ctx, src, $("agent-viz"));
  if (call.latency) src.connect(call.latency, 0, 1);
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
  resetForCall();
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
    if (call.ctx.audioWorklet) {
      // Latency where the caller is: what this page sends vs. what it receives.
      call.latency = new AudioWorkletNode(call.ctx, "duplex-latency", { numberOfInputs: 2 });
      call.latency.port.onmessage = (e) => onLatencyMessage(e.data);
      call.mix.connect(call.latency, 0, 0);
      const mute = call.ctx.createGain();
      mute.gain.value = 0;
      call.latency.connect(mute).connect(call.ctx.destination);
    }

    const pc = new RTCPeerConnection();
    call.pc = pc;
    pc.addTrack(out.stream.getAudioTracks()[0], out.stream);
    const dc = pc.createDataChannel("duplex");
    call.dc = dc;
    call.connected = new Promise((resolve, reject) => {
      dc.onopen = () => { markCallStart(); setConnected(true); log("connected"); resolve(); };
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
    const deviceId = $("mic-select").value;
    const audio = { echoCancellation: echo };
    if (deviceId) audio.deviceId = { exact: deviceId };
    const mic = await navigator.mediaDevices.getUserMedia({ audio });
    if (call.mic) call.mic.getTracks().forEach((t) => t.stop());
    if (call.micSource) call.micSource.disconnect();
    call.mic = mic;
    if (!call.micGain) {
      call.micGain = call.ctx.createGain();
      call.micGain.connect(call.mix);
    }
    call.micGain.gain.value = call.muted ? 0 : 1;
    call.micSource = call.ctx.createMediaStreamSource(mic);
    call.micSource.connect(call.micGain);
    await listMics();
  } catch (err) {
    log(`microphone unavailable (${err.message}); typing still works`, "error");
  }
}

// Device names are only visible once the page may use the microphone.
async function listMics() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.enumerateDevices) return;
  const select = $("mic-select");
  const chosen = select.value;
  const mics = (await navigator.mediaDevices.enumerateDevices()).filter((d) => d.kind === "audioinput");
  select.replaceChildren(new Option("default", ""));
  mics.forEach((d, i) => select.append(new Option(d.label || `microphone ${i + 1}`, d.deviceId)));
  select.value = [...select.options].some((o) => o.value === chosen) ? chosen : "";
}

function setMuted(on) {
  call.muted = on;
  if (call.micGain) call.micGain.gain.value = on ? 0 : 1;
  $("mute").setAttribute("aria-pressed", String(on));
  $("mute").textContent = on ? "Unmute" : "Mute";
  log(on ? "microphone muted" : "microphone on");
}

function onLatencyMessage(d) {
  if (d.type === "recording") { if (call.onLatencyRecording) call.onLatencyRecording(d); return; }
  if (d.type !== "reply") return;
  let entry = null;
  const typed = call.typedAt;
  if (d.speechEnd !== null && (typed === null || d.speechEnd > typed)) {
    entry = { ms: (d.agentStart - d.speechEnd) * 1000, kind: "speech", call: call.number };
  } else if (typed !== null && d.agentStart > typed) {
    entry = { ms: (d.agentStart - typed) * 1000, kind: "typed", call: call.number };
  }
  call.typedAt = null;
  if (!entry) return;
  entry.speechEnd = d.speechEnd;
  entry.agentStart = d.agentStart;
  pageLatencies.push(entry);
  call.pageLatency = entry;
}

function withToken(path) {
  return token ? `${path}?token=${encodeURIComponent(token)}` : path;
}

// Before connecting: what this server runs, so the first words are not a surprise.
async function showHelp() {
  const help = $("help");
  try {
    const res = await fetch(withToken("/health"));
    const info = res.ok ? await res.json() : {};
    help.replaceChildren();
    const b = (t) => { const el = document.createElement("b"); el.textContent = t; return el; };
    if (info.app) help.append(b(info.app), " on ");
    help.append(b(info.parts || info.backend || "the agent"), ". ");
    help.append("Press Connect, allow the microphone and speak — or type below.");
  } catch (err) {
    help.textContent = "Press Connect, allow the microphone and speak — or type below.";
  }
}

function teardown(reason) {
  if (!call.pc) return;
  const pc = call.pc;
  call.pc = null;
  if (call.dc && call.dc.readyState === "open") call.dc.send(JSON.stringify({ type: "hangup" }));
  pc.close();
  if (call.mic) call.mic.getTracks().forEach((t) => t.stop());
  call.mic = null;
  call.micSource = null;
  call.micGain = null;
  call.latency = null;
  call.timers.forEach(clearInterval);
  call.timers = [];
  setConnected(false);
  setState("agent-state", "agent", "closed");
  setState("user-state", "you", "idle");
  finishCaptions();
  for (const li of document.querySelectorAll('#transcript li[data-role="assistant"]')) {
    li.dataset.done = "true";
    reveal(li);
  }
  log(`hung up (${reason})`);
}

function sendText(text) {
  if (!call.dc || call.dc.readyState !== "open") throw new Error("not connected");
  call.dc.send(JSON.stringify({ type: "text", text }));
  if (call.ctx) call.typedAt = call.ctx.currentTime; // a typed turn's latency starts here
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
$("mute").onclick = () => setMuted(!call.muted);
$("mic-select").onchange = () => { if (call.pc) openMic(); };
showHelp();
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
  // The transcript panel: [{role, text, shown, final, interrupted}] (text: what it holds,
  // shown: what is visible now; the agent's words appear as they are heard).
  transcript() {
    return [...document.querySelectorAll("#transcript li:not(.divider)")].map((li) => ({
      role: li.dataset.role,
      text: li.dataset.full,
      shown: li.querySelector(".text").textContent,
      final: li.dataset.final === "true",
      interrupted: li.classList.contains("truncated"),
    }));
  },
  // Latency measured in this page, one entry per reply: {ms, kind, call, speechEnd, agentStart}.
  latencies: () => pageLatencies.slice(),
  // The latency table as shown: [[turn, heard after, server, played], ...] (dividers: [text]).
  latencyRows() {
    return [...$("latency").tBodies[0].rows].map((r) => [...r.cells].map((c) => c.textContent));
  },
  // Both sides as this page sent and heard them, for checking the latency figure.
  startLatencyRecording() {
    if (!call.latency) throw new Error("not connected");
    call.latency.port.postMessage("start");
  },
  stopLatencyRecording() {
    return new Promise((resolve) => {
      call.onLatencyRecording = (d) => {
        call.onLatencyRecording = null;
        resolve({ start: d.start, rate: call.ctx.sampleRate, mic: pcmToB64([d.mic]), agent: pcmToB64([d.agent]) });
      };
      call.latency.port.postMessage("stop");
    });
  },
  setMuted,
  muted: () => call.muted,
  mics: () => [...$("mic-select").options].map((o) => o.textContent),
  help: () => $("help").textContent,
  states: () => ({ agent: $("agent-state").textContent, user: $("user-state").textContent,
    link: $("link-state").hidden ? null : $("link-state").textContent, meta: $("meta").textContent,
    activeAgent: $("active-agent").hidden ? null : $("active-agent").textContent }),
  // Feed a data-channel message as if the agent had sent it (rendering tests).
  inject: (m) => onMessage(m),
  tools() {
    return [...document.querySelectorAll("#tools li")].map((li) => li.textContent);
  },
  micLevel: () => Number($("mic-level").dataset.level || 0),
};

if (params.get("autoconnect") === "1") connect().catch(() => {});
