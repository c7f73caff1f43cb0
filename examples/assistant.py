"""A small voice assistant. Talk to it in the browser: ``agent dev examples/assistant.py``.

Its tools need no network, so the demo works offline; with a model that calls
tools (OpenAI, vLLM) ask "what time is it?" or "what is 12 times 7?".
"""

from __future__ import annotations

from datetime import datetime

from duplex.agents import Agent, function_tool


class Assistant(Agent):
    instructions = (
        "You are a friendly voice assistant. Answer in one or two short sentences. "
        "Use the tools for the time and for arithmetic instead of guessing."
    )

    @function_tool
    async def current_time(self) -> str:
        """The local time, for questions like "what time is it?"."""
        return datetime.now().strftime("%H:%M")

    @function_tool
    def multiply(self, a: float, b: float) -> float:
        """Multiply two numbers.

        a: the first factor.
        b: the second factor.
        """
        return a * b
