"""Test your agents offline: an in-memory call and a scripted backend.

```python
backend = ScriptedBackend([Reply(text="Hi there", audio_ms=600)])
transport = MemoryTransport(playout="manual")
session = AgentSession(agent=MyAgent(), backend=backend, vad=WebRTCVAD())
await session.start(transport)
```
"""

from ..wav import read_wav, write_wav
from .clock import ManualScheduler
from .memory import (
    MemoryAudioInput,
    MemoryAudioOutput,
    MemoryTransport,
    PlayedFrame,
    tone,
)
from .scripted import Call, Reply, ScriptedBackend, ScriptedCall, ScriptedSession

__all__ = [
    "Call",
    "ManualScheduler",
    "MemoryAudioInput",
    "MemoryAudioOutput",
    "MemoryTransport",
    "PlayedFrame",
    "Reply",
    "ScriptedBackend",
    "ScriptedCall",
    "ScriptedSession",
    "read_wav",
    "tone",
    "write_wav",
]
