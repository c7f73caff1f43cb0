"""Numbers every part of the benchmark must agree on (server, callers, analysis)."""

from __future__ import annotations

#: Caller audio: a 48 kHz microphone delivering 20 ms frames.
INPUT_RATE = 48000
FRAME_MS = 20
FRAME_SAMPLES = INPUT_RATE * FRAME_MS // 1000

#: Agent audio leaves both frameworks at this rate (what a WebRTC track plays).
OUTPUT_RATE = 48000

#: A sample above this amplitude (of 32768) is speech; the microphone's noise floor
#: never reaches it. Server and callers use it to find the last speech sample.
SPEECH_LEVEL = 200
#: Standard deviation of the microphone's noise floor (about -72 dBFS).
NOISE_STD = 8.0

#: The server's VAD (OpenAI's server_vad options, energy based).
VAD_RMS = 0.02 * 32768
VAD_MIN_SPEECH_MS = 100
VAD_SILENCE_MS = 500
VAD_PREFIX_MS = 300

#: Each reply: this much 24 kHz audio in deltas of CHUNK_MS, paced at 1x with a
#: head start of LEAD_MS (a jitter allowance, as a real service's burst is).
REPLY_MS = 2500
CHUNK_MS = 50
LEAD_MS = 100
SERVER_RATE = 24000

#: The caller barges in once it has heard this much of the first reply of a cycle.
BARGE_AFTER_MS = 600
#: How long a caller waits for a reply (or for an interruption) before giving up on it.
REPLY_TIMEOUT_S = 8.0

#: Pass/fail line for "how many sessions fit": p99 output-frame lateness.
LATENESS_LIMIT_MS = 20.0
