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
