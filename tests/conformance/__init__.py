"""Whole-call conformance: over a long call, the model's memory equals what the caller heard.

One driver (`call.Call`) plays seeded scripts of turns, barge-ins (early/mid/late, and on
the second of two replies), false interruptions (noise, a wordless "mm-hm"), tool calls
(fast, slow, failing, overtaken by the caller) and dropped connections against three
backends, each with its real test server behind it (`rig_scripted`, `rig_openai`,
`rig_vllm`). After every step `invariants.check_call` compares the server's truth with
the client's conversation and with the audio the transport actually played: reply audio
names its reply and sample offset (`signal`), so heard milliseconds are measured, not
taken from the session.

CI runs one 40-step call per backend, short regressions and a small hypothesis state
machine (about 1.5 min); ``make conformance`` adds the heavy budgets.
To add a backend, write a `rig.Rig` and name it in `script.make_rig`.
"""
