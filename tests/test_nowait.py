"""`duplex.agents.nowait`: a coroutine stepped by hand behaves as it would in a Task."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from duplex.agents import nowait


async def test_a_coroutine_that_never_waits_finishes_inside_start() -> None:
    done: list[int] = []

    async def work() -> None:
        done.append(1)

    assert nowait.start(work()) is None
    assert done == [1]


async def test_a_waiting_coroutine_is_finished_with_the_futures_result() -> None:
    fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    seen: list[object] = []

    async def work() -> None:
        seen.append(await fut)
        await asyncio.sleep(0)  # a bare yield too
        seen.append("end")

    waiting = nowait.start(work())
    assert waiting is not None and seen == []
    task = asyncio.create_task(waiting.finish())
    await asyncio.sleep(0)
    fut.set_result(7)
    await asyncio.wait_for(task, 5)
    assert seen == [7, "end"]


async def test_the_futures_exception_is_the_coroutines_to_handle() -> None:
    fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    caught: list[str] = []

    async def work() -> None:
        try:
            await fut
        except ValueError as e:
            caught.append(str(e))

    waiting = nowait.start(work())
    assert waiting is not None
    task = asyncio.create_task(waiting.finish())
    fut.set_exception(ValueError("bad"))
    await asyncio.wait_for(task, 5)
    assert caught == ["bad"]


async def test_cancelling_the_finisher_runs_the_coroutines_cleanup() -> None:
    event = asyncio.Event()
    cleaned: list[bool] = []

    async def work() -> None:
        try:
            await event.wait()
        finally:
            cleaned.append(True)

    waiting = nowait.start(work())
    assert waiting is not None
    task = asyncio.create_task(waiting.finish())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned == [True]
    event.set()  # nobody is left waiting on it
    await asyncio.sleep(0)


async def test_a_cancel_arriving_after_the_future_is_done_still_stops_the_coroutine() -> None:
    fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    after: list[str] = []

    async def work() -> None:
        await fut
        after.append("resumed")  # must not run: the finisher was cancelled first

    waiting = nowait.start(work())
    assert waiting is not None
    task = asyncio.create_task(waiting.finish())
    await asyncio.sleep(0)
    fut.set_result(None)  # the finisher is woken ...
    task.cancel()  # ... and cancelled before it runs
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert task.cancelled() and after == []
