"""Rigs by name, and the seeded random script of a long call."""

from __future__ import annotations

import inspect
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from duplex.agents import AgentSession
from duplex.agents.events import AgentInterrupted

from .call import Call
from .rig import ReplySpec, Rig

BACKENDS = ("scripted", "openai", "vllm")

#: The reply lifecycle rework (issue 10) is not in this core yet: the whole-call bugs it
#: fixes make these tests fail here. Once it lands they must pass (strict xfail flips).
NEEDS_I10 = "resume_false_interruption" not in inspect.signature(AgentSession).parameters
HAS_RESUMED = "resumed" in {f for f in getattr(AgentInterrupted, "__dataclass_fields__", {})}


def make_rig(name: str, make_default: Callable[[], ReplySpec]) -> Rig:
    if name == "scripted":
        from .rig_scripted import ScriptedRig

        return ScriptedRig(make_default)
    if name == "openai":
        from .rig_openai import OpenAIRig

        return OpenAIRig(make_default)
    if name == "vllm":
        from .rig_vllm import VLLMRig

        rig: Rig = VLLMRig(make_default)
        return rig
    raise ValueError(name)


@asynccontextmanager
async def open_call(name: str, *, seed: int = 0, **options: Any) -> AsyncIterator[Call]:
    holder: list[Call] = []
    rig = make_rig(name, lambda: holder[0].new_reply())
    call = Call(rig, seed=seed, **options)
    holder.append(call)
    await call.start()
    try:
        yield call
    finally:
        await call.aclose()


STEPS = [
    ("turn", 6),
    ("two_then_barge", 2),
    ("barge_in:early", 1),
    ("barge_in:mid", 2),
    ("barge_in:late", 1),
    ("false_interruption:noise", 1),
    ("false_interruption:mmhm", 1),
    ("tool:fast", 1),
    ("tool:slow", 1),
    ("tool:failing", 1),
    ("tool:interrupted", 1),
    ("drop", 1),
]


def script(seed: int, steps: int, *, can_drop: bool) -> list[str]:
    rng = random.Random(seed)
    names = [n for n, _ in STEPS if can_drop or n != "drop"]
    weights = [w for n, w in STEPS if can_drop or n != "drop"]
    out = rng.choices(names, weights, k=steps)
    # Every kind of step at least once, wherever the dice put them.
    for n in names:
        if n not in out:
            out.insert(rng.randrange(len(out) + 1), n)
    return out


async def run_step(call: Call, step: str) -> None:
    kind, _, arg = step.partition(":")
    if kind == "turn":
        await call.turn()
    elif kind == "two_then_barge":
        await call.turn()
        await call.settle_and_check()
        await call.barge_in("mid")
    elif kind == "barge_in":
        await call.barge_in(arg)
    elif kind == "false_interruption":
        await call.false_interruption(arg)
    elif kind == "tool":
        await call.tool_turn(arg)
    elif kind == "drop":
        await call.drop()
    else:
        raise ValueError(step)
