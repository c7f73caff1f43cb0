"""The caller's words reach the item the client already knows (committed before the STT ended).

The cascade names a turn's message itself when its transcript is final; the client was
given its own item id at commit. Turns finish in commit order, so the oldest waiting id is
the one: its placeholder takes the words and the cascade's duplicate goes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from duplex.agents.backend import UserTranscript
from duplex.agents.conversation import AudioPart, Message

if TYPE_CHECKING:
    from .connection import RealtimeConnection


async def transcribed(conn: RealtimeConnection, ev: UserTranscript) -> None:
    """The STT finished a committed turn: its words move onto the item the client knows."""
    if not conn.awaiting_transcript:
        return
    item_id = conn.awaiting_transcript.popleft()
    spoken = conn.get_item(ev.item_id)
    placeholder = conn.get_item(item_id)
    if placeholder is not None:
        text = ev.text if ev.error is None else ""
        content = (
            spoken.content
            if isinstance(spoken, Message)
            else (AudioPart(transcript=text, sample_rate=conn.stt_rate),)
        )
        new = Message(role="user", content=content, id=item_id)
        await conn.set_items(
            [new if it.id == item_id else it for it in conn.items if it.id != ev.item_id]
        )
    elif spoken is not None:  # the client deleted the turn meanwhile: so does the model
        await conn.set_items([it for it in conn.items if it.id != ev.item_id])
    if conn.config.transcription is None:
        return
    base = {"item_id": item_id, "content_index": 0}
    if ev.error is not None:
        error = {
            "type": "transcription_error",
            "code": "audio_unintelligible",
            "message": ev.error,
        }
        conn.wire.send(
            {
                "type": "conversation.item.input_audio_transcription.failed",
                **base,
                "error": error,
            }
        )
        return
    if ev.text:
        conn.wire.send(
            {
                "type": "conversation.item.input_audio_transcription.delta",
                **base,
                "delta": ev.text,
            }
        )
    seconds = 0.0
    if isinstance(placeholder, Message):
        seconds = placeholder.audio_ms / 1000.0
    conn.wire.send(
        {
            "type": "conversation.item.input_audio_transcription.completed",
            **base,
            "transcript": ev.text,
            "usage": {"type": "duration", "seconds": round(seconds, 3)},
        }
    )
