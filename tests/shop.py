"""The pizza shop agent the whole-call behaviour lists run against every backend."""

from __future__ import annotations

import asyncio

from duplex.agents import Agent, function_tool


class Shop(Agent):
    """Orders pizzas; a test may hold `order_pizza` at `gate` to run two calls at once."""

    instructions = "You sell pizza."

    def __init__(self) -> None:
        super().__init__()
        self.orders: list[str] = []
        self.gate: asyncio.Event | None = None
        self.started: list[str] = []
        self.both_started = asyncio.Event()
        self.one_started = asyncio.Event()

    @function_tool
    async def order_pizza(self, size: str) -> str:
        """Order a pizza. size: small or large."""
        self.started.append(size)
        self.one_started.set()
        if len(self.started) == 2:
            self.both_started.set()
        if self.gate is not None:
            await self.gate.wait()
        self.orders.append(size)
        return f"order #{len(self.orders)} placed: {size}"
