"""Batch helpers shared by every engine: ordered batches, results-as-they-finish, sync wrappers.

An engine only implements ``acomplete_one`` (and token counting); :class:`BatchMixin` builds
``agenerate``/``agenerate_iter`` on it and runs all of them from synchronous code through one
private event loop on a daemon thread. That loop persists for the engine's lifetime, so
connection pools are reused across calls, and the sync API works even when the caller is
itself inside a running event loop (a notebook, a KFP component).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any, TypeVar

from ecotune.engines.base import Completion, Prompt
from ecotune.sampling import SamplingParams

T = TypeVar("T")

#: Called just before prompt ``i`` is submitted; returning False stops further submission
#: (requests already in flight still finish and are yielded, so their tokens are counted).
MaySubmit = Callable[[int], bool]


class _LoopThread:
    """An event loop running forever on a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True,
                                       name="ecotune-engine-loop")  # fmt: skip
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and wait for it.

        If the wait is interrupted (Ctrl-C lands in the calling thread), the coroutine is
        cancelled and left to unwind on the loop (its ``finally`` blocks cancel the requests
        it has in flight) before the interrupt propagates, so no task is left half-run for a
        loop that is about to be closed.
        """
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return fut.result()
        except BaseException:
            if not fut.done() and self.loop.is_running():
                fut.cancel()
                settle = asyncio.run_coroutine_threadsafe(_settle(coro), self.loop)
                try:
                    settle.result(timeout=10)
                except (concurrent.futures.TimeoutError, concurrent.futures.CancelledError):
                    pass
            raise

    def stop(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=5)
        if not self.loop.is_running():
            self.loop.close()


class BatchMixin:
    """Batch and sync APIs on top of ``acomplete_one``.

    Subclasses set ``max_concurrency`` and implement ``acomplete_one`` and ``_aclose``.
    """

    max_concurrency: int = 8
    _loop_thread: _LoopThread | None = None

    async def acomplete_one(
        self, prompt: Prompt, params: SamplingParams, index: int = 0
    ) -> Completion:  # pragma: no cover - abstract
        raise NotImplementedError

    async def _aclose(self) -> None:  # pragma: no cover - default: nothing to release
        return None

    # -- async -----------------------------------------------------------------------------
    async def agenerate(self, prompts: list[Prompt], params: SamplingParams) -> list[Completion]:
        """All prompts concurrently (bounded by ``max_concurrency``), results in input order."""
        out: list[Completion | None] = [None] * len(prompts)
        async for c in self.agenerate_iter(prompts, params):
            out[c.index] = c
        return [c for c in out if c is not None]

    async def agenerate_iter(
        self,
        prompts: list[Prompt],
        params: SamplingParams,
        max_in_flight: int | None = None,
        may_submit: MaySubmit | None = None,
    ) -> AsyncIterator[Completion]:
        """Yield completions as they finish (``Completion.index`` gives the prompt).

        Prompts are submitted lazily, at most ``max_in_flight`` at a time, in order;
        ``may_submit(i)`` is asked just before prompt ``i`` goes out and runs after every
        earlier-finished result was yielded, so a caller that tracks spend in its loop body
        can stop before a token limit would be passed. Closing the iterator early cancels
        requests still in flight (their tokens are then unknown), so prefer ``may_submit``.
        """
        limit = max(1, max_in_flight or self.max_concurrency)
        pending: set[asyncio.Future[Completion]] = set()
        todo = iter(enumerate(prompts))
        exhausted = False
        try:
            while True:
                while not exhausted and len(pending) < limit:
                    nxt = next(todo, None)
                    if nxt is None or (may_submit is not None and not may_submit(nxt[0])):
                        exhausted = True
                        break
                    i, p = nxt
                    pending.add(asyncio.ensure_future(self.acomplete_one(p, params, index=i)))
                if not pending:
                    return
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for fut in sorted(done, key=_index_or_inf):
                    yield fut.result()
        finally:
            for fut in pending:
                fut.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)

    # -- sync ------------------------------------------------------------------------------
    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._loop_thread is None:
            self._loop_thread = _LoopThread()
        return self._loop_thread.run(coro)

    def generate(self, prompts: list[Prompt], params: SamplingParams) -> list[Completion]:
        """Sync :meth:`agenerate`."""
        return self._run(self.agenerate(prompts, params))

    def complete_one(self, prompt: Prompt, params: SamplingParams) -> Completion:
        """Sync :meth:`acomplete_one`."""
        return self._run(self.acomplete_one(prompt, params))

    def generate_iter(
        self,
        prompts: list[Prompt],
        params: SamplingParams,
        max_in_flight: int | None = None,
        may_submit: MaySubmit | None = None,
    ) -> Iterator[Completion]:
        """Sync :meth:`agenerate_iter`: a generator yielding completions as they finish."""
        agen = self.agenerate_iter(prompts, params, max_in_flight, may_submit)
        try:
            while True:
                try:
                    yield self._run(agen.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            try:
                self._run(agen.aclose())
            except (RuntimeError, asyncio.CancelledError, concurrent.futures.CancelledError):
                # the loop is already stopped (an interrupt is unwinding): nothing to release,
                # and the error must not replace the exception in flight
                pass

    def close(self) -> None:
        """Release connections and the private event loop."""
        if self._loop_thread is not None:
            try:
                self._run(self._aclose())
            finally:
                self._loop_thread.stop()
                self._loop_thread = None

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def _settle(coro: Coroutine[Any, Any, Any]) -> None:
    """Wait until the task running ``coro`` (already cancelled) has finished unwinding."""
    for task in asyncio.all_tasks():
        if task.get_coro() is coro:
            await asyncio.wait([task], timeout=10)


def _index_or_inf(fut: asyncio.Future[Completion]) -> float:
    if fut.cancelled() or fut.exception() is not None:
        return float("inf")
    return float(fut.result().index)
