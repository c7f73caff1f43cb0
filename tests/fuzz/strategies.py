"""Hypothesis strategies for hostile server traffic, and a way to draw a fixed budget of it.

The fuzz suites send thousands of frames through a real socket, so examples are drawn
up front (derandomized: the same frames on every run) rather than one test per example.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

#: Leaves a parser trips over: huge and negative numbers, NaN/inf, odd strings.
LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.integers(min_value=-5, max_value=5_000)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=16)
    | st.sampled_from(["", "item_1", "resp_1", "call_1", "AAAA", "not base64!"])
)
JSON = st.recursive(
    LEAVES,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)


def shaped(keys: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """An object with some of ``keys`` (each plausible or hostile) and maybe extra junk."""
    return st.fixed_dictionaries({}, optional=keys).flatmap(
        lambda d: st.dictionaries(st.text(max_size=6), JSON, max_size=2).map(
            lambda extra: {**extra, **d}
        )
    )


def frames(events: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[str]:
    """Serialized events, plus frames that are not event objects at all."""
    return st.one_of(
        events.map(json.dumps),
        JSON.map(json.dumps),
        st.sampled_from(["{not json", "", "[", '"hello"', "null", "[1]", "1e999999"]),
        st.integers(min_value=1, max_value=2000).map(lambda n: "[" * n + "]" * n),
    )


def draw(strategy: st.SearchStrategy[str], budget: int, batch: int = 20) -> list[str]:
    """About ``budget`` examples of ``strategy``, the same ones on every run.

    Drawn ``batch`` per hypothesis example: a third of the time of one per example.
    """
    out: list[str] = []
    batches = st.lists(strategy, min_size=batch, max_size=batch)

    @settings(
        max_examples=max(1, budget // batch),
        derandomize=True,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
        deadline=None,
    )
    @given(batches)
    def collect(frames: list[str]) -> None:
        out.extend(frames)

    collect()
    return out
