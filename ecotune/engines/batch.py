"""Batch helpers shared by every engine: charging, retries, results-as-they-finish, sync API.

An engine only implements ``asend`` (one attempt of one request) and token counting;
:class:`BatchMixin` builds everything else on it:

* ``acomplete_one``: one request under the retry policy of :mod:`ecotune.engines.retry`,
  each attempt authorized against a :class:`~ecotune.ledger.TokenLedger` before it is sent
  and settled, kept or released after (authorize, then capture);
* ``agenerate``/``agenerate_iter``: many requests, bounded in flight, in order, stopping
  cleanly before the first one whose worst case would pass the ledger's limit;
* sync wrappers that run all of them through one private event loop on a daemon thread.
  That loop persists for the engine's lifetime, so connection pools are reused across
  calls, and the sync API works even when the caller is itself inside a running event loop
  (a notebook, a KFP component).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator, Sequence
from typing import Any, TypeVar

from ecotune.decoding import SamplingParams
from ecotune.engines.base import Completion, Prompt
from ecotune.engines.retry import Refused, with_retries
from ecotune.ledger import Hold, OverLimit, TokenLedger

T = TypeVar("T")


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
                    pass  # settling is best effort: the exception in flight is what counts
            raise

    def stop(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=5)
        if not self.loop.is_running():
            self.loop.close()


class BatchMixin:
    """Charged, retried, batched and sync APIs on top of ``asend``.

    Subclasses set ``max_concurrency`` (and the retry settings) and implement ``asend``
    (raising :class:`~ecotune.engines.retry.Refused` or
    :class:`~ecotune.engines.retry.OutcomeUnknown` for a failed attempt) and ``_aclose``.
    """

    max_concurrency: int = 8
    max_retries: int = 0
    backoff_base_s: float = 0.5
    backoff_max_s: float = 8.0
    _loop_thread: _LoopThread | None = None

    async def asend(
        self, prompt: Prompt, params: SamplingParams, index: int = 0
    ) -> Completion:  # pragma: no cover - abstract
        raise NotImplementedError

    async def _aclose(self) -> None:  # pragma: no cover - default: nothing to release
        return None

    # -- async -----------------------------------------------------------------------------
    async def acomplete_one(
        self,
        prompt: Prompt,
        params: SamplingParams,
        index: int = 0,
        *,
        ledger: TokenLedger | None = None,
        prompt_tokens: int | None = None,
        hold: Hold | None = None,
    ) -> Completion:
        """One request, retried under the engine's policy.

        With a ``ledger`` every attempt is first authorized at its worst case
        (``prompt_tokens`` + ``max_tokens`` × ``n``; ``hold`` is the first attempt's, when
        the caller already authorized it) and then settled to ``usage``, kept (outcome
        unknown) or released (refused before any work). A retry that would not fit raises
        :class:`~ecotune.ledger.OverLimit`. The completion's ``unsettled_tokens`` are the
        worst cases kept for this request's failed attempts.
        """
        if ledger is not None and prompt_tokens is None:
            raise ValueError("charging a request needs its exact prompt token count")
        worst = (prompt_tokens or 0) + params.worst_case_completion_tokens()

        async def attempt(n: int) -> Completion:
            h = hold if n == 1 else None
            if h is None and ledger is not None:
                h = ledger.authorize(worst, index=index, retry=True)
                if h is None:
                    raise OverLimit(f"request {index}: attempt {n} ({worst} tokens worst "
                                    f"case) would pass the trial's token limit")
            c = await self._attempt(prompt, params, index, h)
            kept = ledger.kept_for(index) if ledger is not None else 0
            return dataclasses.replace(c, unsettled_tokens=kept)

        return await with_retries(attempt, f"{self!r}: request", self.max_retries,
                                  self.backoff_base_s, self.backoff_max_s)

    async def _attempt(self, prompt: Prompt, params: SamplingParams, index: int,
                       hold: Hold | None) -> Completion:
        """Send once; end ``hold`` the way the outcome says (see the module docstring)."""
        try:
            c = await self.asend(prompt, params, index)
        except Refused:
            if hold is not None:
                hold.release()
            raise
        except BaseException:  # unknown outcome, cancellation included: keep the worst case
            if hold is not None:
                hold.keep()
            raise
        if hold is not None:
            hold.settle(c.prompt_tokens + c.completion_tokens)
        return c

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
        ledger: TokenLedger | None = None,
        prompt_tokens: Sequence[int] | None = None,
    ) -> AsyncIterator[Completion]:
        """Yield completions as they finish (``Completion.index`` gives the prompt).

        Prompts are submitted lazily, at most ``max_in_flight`` at a time, in order. With a
        ``ledger`` (and the prompts' exact ``prompt_tokens``), each is authorized at its
        worst case just before it goes out, after every earlier-finished result was settled
        and yielded; the first that would pass the limit ends submission, so the prompts
        sent are always a prefix. Closing the iterator early cancels requests still in
        flight; their holds are kept (their outcome is unknown).
        """
        if ledger is not None and (prompt_tokens is None or len(prompt_tokens) != len(prompts)):
            raise ValueError("a ledger needs one exact prompt token count per prompt")
        limit = max(1, max_in_flight or self.max_concurrency)
        completion_worst = params.worst_case_completion_tokens()
        pending: set[asyncio.Future[Completion]] = set()
        todo = iter(enumerate(prompts))
        exhausted = False
        try:
            while True:
                while not exhausted and len(pending) < limit:
                    nxt = next(todo, None)
                    if nxt is None:
                        exhausted = True
                        break
                    i, p = nxt
                    hold, count = None, None
                    if ledger is not None and prompt_tokens is not None:
                        count = int(prompt_tokens[i])
                        hold = ledger.authorize(count + completion_worst, index=i)
                        if hold is None:
                            exhausted = True
                            break
                    pending.add(asyncio.ensure_future(self.acomplete_one(
                        p, params, index=i, ledger=ledger, prompt_tokens=count, hold=hold)))
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

    def complete_one(self, prompt: Prompt, params: SamplingParams, **charge: Any) -> Completion:
        """Sync :meth:`acomplete_one` (``ledger=``, ``prompt_tokens=`` pass through)."""
        return self._run(self.acomplete_one(prompt, params, **charge))

    def generate_iter(
        self,
        prompts: list[Prompt],
        params: SamplingParams,
        max_in_flight: int | None = None,
        ledger: TokenLedger | None = None,
        prompt_tokens: Sequence[int] | None = None,
    ) -> Iterator[Completion]:
        """Sync :meth:`agenerate_iter`: a generator yielding completions as they finish."""
        agen = self.agenerate_iter(prompts, params, max_in_flight, ledger, prompt_tokens)
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
