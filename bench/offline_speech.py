"""Generated caller speech for the offline section: Piper sentences, some with a hesitation.

Each sentence in `PAUSED` has a comma where a hesitant caller stops for a moment
("I would like to book a table for, two people."). Two ways to make the pause:

- *comma*: Piper speaks the sentence with the comma, which it renders as a phrase
  break (the words before it often end on a falling, phrase-final pitch) and a
  short gap; the gap is found in the audio and stretched to a hesitation;
- *mid-flow*: Piper speaks the sentence without the comma, fluently, and silence is
  inserted at that word boundary (found from Piper's phoneme alignments), so the
  words before the pause keep the pitch of a sentence that goes on.

`COMPLETE` are whole sentences with no pause. All audio is made once per run with
Piper's noise off, so every run hears the same sentences.

The mid-flow cut is at the middle of Piper's word-boundary ("space") alignment.
Checked against cuts at the boundary's start and 12 / 23 ms before it, and with
20 / 40 ms fades: the middle carries the next word's onset in one sentence
("remind me to call | my": "call me?" at the middle, "call?" from the boundary's
start on), but the halves the text score gets wrong ("invoice to me.", "near the
city.", "leaves it.", "favorite colors") read the same at every cut and fade, and
the boundary's start makes "cancel my" read "cancel myself.". Fluent speech has
no silence between words (the boundaries of those halves are fully voiced), so
no cut is free of coarticulation; the cut was kept as it was.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import soxr

RATE = 16000

PAUSED = (
    "I would like to book a table for, two people.",
    "My name is John and I, live in Paris.",
    "The weather today is, quite nice.",
    "I need to go to the, train station.",
    "I was wondering if you could, help me with my order.",
    "Tomorrow I have to, pick up the kids.",
    "Can you tell me how to, reset my password?",
    "We are planning a trip to, the mountains next week.",
    "Please send the invoice to, my office address.",
    "I think the problem is that, the battery is empty.",
    "My favourite colour is, dark blue.",
    "I would like to change my, delivery address.",
    "Could you remind me to call, my sister tonight?",
    "The package should arrive on, Thursday morning.",
    "I am looking for a hotel near, the city centre.",
    "Do you know if the store is, open on Sunday?",
    "My flight leaves at, half past six.",
    "I would like to cancel my, subscription please.",
    "Set an alarm for, seven thirty.",
    "Can you play some music by, the Beatles?",
)

COMPLETE = (
    "What time is it?",
    "Please turn on the kitchen lights.",
    "I would like to order a large pizza.",
    "Can you help me with my booking?",
    "Thank you very much.",
    "What is the weather like in Paris today?",
    "Book a table for two people at seven.",
    "Tell me a joke about cats.",
    "Set a timer for ten minutes.",
    "How long does the journey take?",
    "I forgot my password again.",
    "Where is the nearest pharmacy?",
    "That sounds great.",
    "Please cancel my appointment for tomorrow.",
    "Is the museum open on Mondays?",
    "I want to send a parcel to London.",
    "Call my mother on her mobile.",
    "The meeting starts at nine.",
    "Can I pay by card?",
    "Goodbye and have a nice day.",
)


@dataclass(frozen=True)
class Utterance:
    text: str
    audio: npt.NDArray[np.int16]  # 16 kHz mono
    #: Sample range of the hesitation, for sentences that have one.
    gap: tuple[int, int] | None = None

    def with_pause(self, seconds: float) -> npt.NDArray[np.int16]:
        if self.gap is None:
            return self.audio
        pad = np.zeros(int(seconds * RATE), np.int16)
        return np.concatenate([self.audio[: self.gap[0]], pad, self.audio[self.gap[1] :]])


def longest_gap(audio: npt.NDArray[np.int16], sample_rate: int) -> tuple[int, int]:
    """The longest inner run of 10 ms windows 30 dB below the loudest one."""
    w = sample_rate // 100
    n = len(audio) // w
    rms = np.sqrt((audio[: n * w].astype(np.float64).reshape(n, w) ** 2).mean(axis=1))
    quiet = rms < rms.max() * 0.03
    best = (0, 0)
    i = 0
    while i < n:
        if not quiet[i]:
            i += 1
            continue
        j = i
        while j < n and quiet[j]:
            j += 1
        if i > 0 and j < n and j - i > best[1] - best[0]:
            best = (i, j)
        i = j
    return best[0] * w, best[1] * w


def _to_16k(pcm: npt.NDArray[np.int16], rate: int) -> npt.NDArray[np.int16]:
    if rate == RATE:
        return pcm
    out = np.asarray(soxr.resample(pcm.astype(np.float32) / 32768.0, rate, RATE, quality="HQ"))
    clipped: npt.NDArray[np.int16] = np.clip(out * 32768.0, -32768, 32767).astype(np.int16)
    return clipped


async def synthesize(texts: tuple[str, ...], *, paused: bool) -> list[Utterance]:
    from duplex.plugins.piper import PiperTTS

    tts = PiperTTS(noise_scale=0.0, noise_w_scale=0.0)
    out = []
    for text in texts:
        frames = [f async for f in tts.synthesize(text)]
        pcm = np.concatenate([f.data[:, 0] for f in frames])
        # Trim Piper's own trailing silence so "end of speech" is the last word's end.
        loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > 328)
        pcm = pcm[: int(loud[-1]) + 1] if loud.size else pcm
        audio = _to_16k(pcm, tts.sample_rate)
        out.append(Utterance(text, audio, longest_gap(audio, RATE) if paused else None))
    return out


def synthesize_midflow(texts: tuple[str, ...]) -> list[Utterance]:
    """`PAUSED` sentences spoken without their comma, with the pause at that word boundary.

    Needs the ``onnx`` package (Piper patches its model in memory to report how many
    samples each phoneme took); returns [] without it.
    """
    try:
        import onnx  # noqa: F401 - piper needs it for alignments
    except ImportError:
        return []
    from piper import PiperVoice, SynthesisConfig

    from duplex.plugins.piper import default_voice

    model, config = default_voice()
    voice = PiperVoice.load(model, config, include_alignments=True)
    syn = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)
    out = []
    for text in texts:
        before, after = text.split(", ", 1)
        words_before = len(before.split())
        chunks = list(voice.synthesize(f"{before} {after}", syn, include_alignments=True))
        if len(chunks) != 1 or not chunks[0].phoneme_alignments:
            continue
        chunk = chunks[0]
        alignments = chunk.phoneme_alignments or []
        pcm = chunk.audio_int16_array
        cut, pos, spaces = None, 0, 0
        for a in alignments:
            if a.phoneme == " ":
                spaces += 1
                if spaces == words_before:
                    cut = pos + a.num_samples // 2  # the middle of the word boundary
                    break
            pos += int(a.num_samples)
        if cut is None:
            continue
        loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > 328)
        pcm = pcm[: int(loud[-1]) + 1] if loud.size else pcm
        # 5 ms fades either side of the cut, as a speaker's voice stops and starts.
        fade = chunk.sample_rate // 200
        head, tail = pcm[:cut].astype(np.float32), pcm[cut:].astype(np.float32)
        head[-fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
        tail[:fade] *= np.linspace(0.0, 1.0, fade, dtype=np.float32)
        a16, b16 = (
            _to_16k(head.astype(np.int16), chunk.sample_rate),
            _to_16k(tail.astype(np.int16), chunk.sample_rate),
        )
        audio = np.concatenate([a16, b16])
        out.append(Utterance(text, audio, (len(a16), len(a16))))
    return out
