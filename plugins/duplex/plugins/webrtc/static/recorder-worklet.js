// Copies the agent's audio (first channel) to the page while recording is on.
// Runs on the audio thread, so it only batches samples and posts them.
class DuplexRecorder extends AudioWorkletProcessor {
  constructor() {
    super();
    this.recording = false;
    this.batch = [];
    this.batched = 0;
    this.port.onmessage = (e) => {
      if (e.data === "start") { this.recording = true; }
      if (e.data === "stop") { this.flush(); this.recording = false; this.port.postMessage("stopped"); }
    };
  }
  flush() {
    if (!this.batched) return;
    const out = new Float32Array(this.batched);
    let at = 0;
    for (const b of this.batch) { out.set(b, at); at += b.length; }
    this.batch = []; this.batched = 0;
    this.port.postMessage(out, [out.buffer]);
  }
  process(inputs) {
    const ch = inputs[0] && inputs[0][0];
    if (this.recording && ch) {
      this.batch.push(new Float32Array(ch));
      this.batched += ch.length;
      if (this.batched >= 4800) this.flush();
    }
    return true;
  }
}
registerProcessor("duplex-recorder", DuplexRecorder);

// Measures, where the caller is, how long the agent took to answer: input 0 is what the
// page sends (microphone + test audio), input 1 what it receives from the agent. Per
// 128-sample block it tracks when the caller's voice was last above the threshold and
// posts {type: "reply", speechEnd, agentStart} (context seconds) when agent audio starts
// after a silence. Optionally records both inputs (for tests that check the figure).
class DuplexLatency extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const o = (options && options.processorOptions) || {};
    this.micThreshold = o.micThreshold || 0.01;     // RMS; ~ -40 dBFS
    this.agentThreshold = o.agentThreshold || 0.005;
    this.agentGap = o.agentGapS || 0.3;             // silence that separates two replies
    this.lastVoiceEnd = null;   // end of the last voiced block from the caller
    this.lastAgentSound = -1e9; // end of the last audible block from the agent
    this.lastReplyStart = -1e9;
    this.recording = false;
    this.rec = [[], []];
    this.port.onmessage = (e) => {
      if (e.data === "start") { this.recording = true; this.rec = [[], []]; this.recStart = currentTime; }
      if (e.data === "stop") {
        this.recording = false;
        const join = (chunks) => {
          const n = chunks.reduce((a, c) => a + c.length, 0);
          const out = new Float32Array(n);
          let at = 0;
          for (const c of chunks) { out.set(c, at); at += c.length; }
          return out;
        };
        const mic = join(this.rec[0]); const agent = join(this.rec[1]);
        this.port.postMessage({ type: "recording", start: this.recStart, mic, agent }, [mic.buffer, agent.buffer]);
      }
    };
  }
  static rms(ch) {
    let s = 0;
    for (let i = 0; i < ch.length; i++) s += ch[i] * ch[i];
    return Math.sqrt(s / ch.length);
  }
  process(inputs) {
    const n = 128;
    const mic = inputs[0] && inputs[0][0];
    const agent = inputs[1] && inputs[1][0];
    const end = currentTime + n / sampleRate;
    if (mic && DuplexLatency.rms(mic) > this.micThreshold) this.lastVoiceEnd = end;
    if (agent && DuplexLatency.rms(agent) > this.agentThreshold) {
      if (end - this.lastAgentSound > this.agentGap + n / sampleRate) {
        // First sound of a reply: find the sample that crosses, for a figure finer than a block.
        let k = 0;
        while (k < agent.length && Math.abs(agent[k]) < this.agentThreshold * 2) k++;
        const start = currentTime + Math.min(k, n - 1) / sampleRate;
        const spoke = this.lastVoiceEnd !== null && this.lastVoiceEnd > this.lastReplyStart;
        this.port.postMessage({ type: "reply", agentStart: start, speechEnd: spoke ? this.lastVoiceEnd : null });
        this.lastReplyStart = start;
      }
      this.lastAgentSound = end;
    }
    if (this.recording) {
      this.rec[0].push(new Float32Array(mic || n));
      this.rec[1].push(new Float32Array(agent || n));
    }
    return true;
  }
}
registerProcessor("duplex-latency", DuplexLatency);
