"""Run an adapter's independent upstream calls concurrently and keep every outcome.

anyio task groups cancel the siblings of a failing task and wrap its exception in an
`ExceptionGroup`; an adapter fanning `n` out wants neither: one refused image must not
cancel three good ones, and callers expect a plain `GatewayError`. `settle` returns each
call's result or the `GatewayError` it raised, in call order; anything else is a bug and
propagates.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import anyio

from app.errors import GatewayError

T = TypeVar("T")


async def settle(calls: Sequence[Callable[[], Awaitable[T]]]) -> list[T | GatewayError]:
    outcomes: list[T | GatewayError | None] = [None] * len(calls)

    async def run(index: int) -> None:
        try:
            outcomes[index] = await calls[index]()
        except GatewayError as exc:
            outcomes[index] = exc

    if len(calls) == 1:  # the common case: no task group, no extra task
        await run(0)
    else:
        async with anyio.create_task_group() as tg:
            for index in range(len(calls)):
                tg.start_soon(run, index)
    return outcomes  # type: ignore[return-value]  # every slot was filled above


def successes(outcomes: Sequence[T | GatewayError]) -> list[T]:
    """The results, or the first error when every call failed."""
    results = [o for o in outcomes if not isinstance(o, GatewayError)]
    if not results and outcomes:
        raise next(o for o in outcomes if isinstance(o, GatewayError))
    return results
