"""Authorize, then capture: the token account of one trial.

Every request is charged *before* it is sent, at its worst case (exact prompt tokens +
``max_tokens`` × ``n``), against the trial's token limit, like a card payment that reserves
an amount before the goods ship. When the answer comes, the hold is settled to the
``usage`` the engine reported. When the outcome stays unknown (a timeout, a dropped
connection, a 500, a 200 whose body cannot be read), the engine may well have generated
and billed the tokens, so the hold is *kept* at its worst case. Only an answer that says
the request was refused before any work (429, 503, another 4xx) releases it.

So what a ledger has charged is always an upper bound of what the engine billed, and a
request that would take the trial past its limit is never sent, retries included (a retry
is a new request under the same rule).

A ledger can announce each hold before the request goes out (``on_hold``): the trial
runner writes it to the study journal, so a study killed mid-request still counts the
requests it had in flight when it resumes (:func:`orphan_holds`).

Example:
    >>> ledger = TokenLedger(limit=100)
    >>> hold = ledger.authorize(60, index=0)
    >>> ledger.authorize(60, index=1) is None     # would pass the limit: not sent
    True
    >>> hold.settle(25)                           # the answer reported 25 tokens
    >>> ledger.charged
    25
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any


class OverLimit(RuntimeError):
    """A request (first attempt or retry) would not fit the trial's token limit."""


@dataclass
class Hold:
    """One request's reservation; exactly one of settle / keep / release ends it."""

    ledger: TokenLedger
    seq: int
    index: int
    tokens: int
    state: str = "held"  # held -> settled | kept | released

    def settle(self, used: int) -> None:
        """The engine answered and reported ``used`` tokens (prompt + completion)."""
        self.ledger._close(self, "settled", int(used))

    def keep(self) -> None:
        """The outcome is unknown: the worst case stays charged."""
        self.ledger._close(self, "kept", self.tokens)

    def release(self) -> None:
        """The engine refused the request before doing any work: nothing is charged."""
        self.ledger._close(self, "released", 0)


@dataclass
class TokenLedger:
    """A trial's token account.

    Args:
        limit: Most tokens the trial may be charged; None for no limit.
        charged_before: Tokens charged before this ledger was opened (instances a resumed trial
            already paid for, holds a killed run left open).
        on_hold: Called with each new :class:`Hold` before its request is sent.

    Attributes:
        settled: Tokens the engine reported in ``usage``.
        kept: Worst cases kept for requests whose outcome is unknown.
        reserved: Worst cases of requests in flight.
    """

    limit: int | None = None
    charged_before: int = 0
    on_hold: Callable[[Hold], Any] | None = None
    settled: int = 0
    kept: int = 0
    reserved: int = 0
    holds: list[Hold] = field(default_factory=list)
    closed: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def charged(self) -> int:
        """Everything this trial may have cost: before + settled + kept + in flight."""
        return self.charged_before + self.settled + self.kept + self.reserved

    def fits(self, tokens: int) -> bool:
        return self.limit is None or self.charged + int(tokens) <= self.limit

    def authorize(self, tokens: int, index: int = 0, *, retry: bool = False) -> Hold | None:
        """Reserve ``tokens`` for a request, or None when it would pass the limit (or, for
        a new request rather than the ``retry`` of one in flight, when the ledger is
        closed)."""
        if tokens < 0:
            raise ValueError(f"a worst case cannot be negative: {tokens}")
        with self._lock:
            if (self.closed and not retry) or not self.fits(tokens):
                return None
            hold = Hold(self, len(self.holds), int(index), int(tokens))
            self.holds.append(hold)
            self.reserved += hold.tokens
        if self.on_hold is not None:
            self.on_hold(hold)
        return hold

    def _close(self, hold: Hold, state: str, amount: int) -> None:
        with self._lock:
            if hold.state != "held":
                raise RuntimeError(f"hold {hold.seq} is already {hold.state}")
            hold.state = state
            self.reserved -= hold.tokens
            if state == "settled":
                self.settled += amount
            elif state == "kept":
                self.kept += amount

    def close(self) -> None:
        """Authorize nothing more (requests in flight still settle): the trial stops."""
        with self._lock:
            self.closed = True

    def kept_for(self, index: int) -> int:
        """Worst cases kept for the request at ``index`` (failed attempts before an answer)."""
        return sum(h.tokens for h in self.holds if h.index == index and h.state == "kept")

    def seqs_for(self, index: int) -> list[int]:
        return [h.seq for h in self.holds if h.index == index]

    def keep_open_holds(self) -> None:
        """Keep every hold still open (a run that ends mid-request cannot know)."""
        for h in list(self.holds):
            if h.state == "held":
                h.keep()


def orphan_holds(records: Iterable[dict[str, Any]], trial_id: int) -> int:
    """Tokens of ``trial_id``'s journalled holds that no instance record settled.

    A hold record (``type: hold``) is written before its request is sent; the instance
    record that follows lists the holds it settles. A hold left without one belongs to a
    run that stopped mid-request (killed, crashed): the engine may have billed it, so it
    counts at its worst case.
    """
    holds: dict[str, int] = {}
    settled: set[str] = set()
    for r in records:
        if r.get("trial_id") != trial_id:
            continue
        if r.get("type") == "hold":
            holds[str(r["key"])] = int(r["tokens"])
        elif r.get("type") == "instance":
            settled.update(str(k) for k in r.get("holds", ()))
    return sum(t for k, t in holds.items() if k not in settled)


def journal_charged(records: list[dict[str, Any]]) -> int:
    """Every token the journal says a study may have cost the engine: told trials at what
    they were told, trials never told at their instance records and orphaned holds. An upper bound of the engine's bill when every request was journalled
    before it was sent (see :class:`TokenLedger`)."""
    told = {int(r["trial_id"]): r for r in records if r.get("type") == "tell"}
    total = sum(int(r["result"]["tokens"]) for r in told.values())
    untold = {int(r["trial"]["id"]) for r in records if r.get("type") == "ask"} - set(told)
    holds: dict[str, int] = {}
    settled: set[str] = set()
    for r in records:  # one pass: instance usage and holds of trials never told
        if r.get("trial_id") is None or int(r["trial_id"]) not in untold:
            continue
        if r.get("type") == "instance":
            total += int(r["prompt_tokens"]) + int(r["completion_tokens"])
            total += int(r.get("unsettled_tokens", 0))
            settled.update(str(k) for k in r.get("holds", ()))
        elif r.get("type") == "hold":
            holds[str(r["key"])] = int(r["tokens"])
    return total + sum(t for k, t in holds.items() if k not in settled)
