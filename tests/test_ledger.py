"""The token ledger (authorize, then capture) and the journal's upper bound of the bill."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ecotune.ledger import TokenLedger, journal_charged, orphan_holds


def test_authorize_settle_keep_release() -> None:
    ledger = TokenLedger(limit=30, charged_before=4)
    a, b = ledger.authorize(10, index=0), ledger.authorize(10, index=1)
    assert a is not None and b is not None
    assert ledger.charged == 24 and ledger.reserved == 20
    assert ledger.authorize(7, index=2) is None  # 24 + 7 > 30: not sent
    a.settle(6)   # answered: usage
    b.keep()      # outcome unknown: the worst case stays
    c = ledger.authorize(10, index=2)
    assert c is not None
    c.release()   # refused before any work: nothing
    assert (ledger.settled, ledger.kept, ledger.reserved, ledger.charged) == (6, 10, 0, 20)
    assert ledger.kept_for(1) == 10 and ledger.kept_for(0) == 0
    assert ledger.seqs_for(2) == [2]
    with pytest.raises(RuntimeError, match="already settled"):
        a.keep()
    with pytest.raises(ValueError, match="negative"):
        ledger.authorize(-1)


def test_hooks_see_each_hold_before_it_is_used() -> None:
    seen: list[tuple[int, int]] = []
    ledger = TokenLedger(on_hold=lambda h: seen.append((h.index, h.tokens)))
    ledger.authorize(5, index=3).settle(2)
    assert seen == [(3, 5)] and ledger.limit is None and ledger.charged == 2


def test_open_holds_are_kept_when_a_run_ends_mid_request() -> None:
    ledger = TokenLedger(limit=100)
    ledger.authorize(10, 0).settle(3)
    ledger.authorize(20, 1)
    ledger.keep_open_holds()
    assert (ledger.kept, ledger.reserved, ledger.charged) == (20, 0, 23)


@given(st.lists(st.tuples(st.integers(0, 50), st.integers(0, 50),
                          st.sampled_from(["settle", "keep", "release"])), max_size=40),
       st.integers(0, 400))
def test_charged_never_passes_the_limit_and_bounds_the_bill(ops, limit) -> None:
    """Whatever the outcomes, nothing is sent past the limit, and what is charged is at least
    what a server billing at most the worst case of every request it saw could bill."""
    ledger = TokenLedger(limit=limit)
    billed = 0
    for worst, used, outcome in ops:
        hold = ledger.authorize(worst)
        if hold is None:
            continue
        used = min(used, worst)
        if outcome == "settle":
            hold.settle(used)
            billed += used
        elif outcome == "keep":
            hold.keep()
            billed += used  # the server may have generated: billed, unseen
        else:
            hold.release()
        assert ledger.charged <= limit
    assert billed <= ledger.charged <= limit


def _journal() -> list[dict]:
    return [
        {"type": "ask", "key": "ask:0", "trial": {"id": 0}},
        {"type": "ask", "key": "ask:1", "trial": {"id": 1}},
        {"type": "hold", "key": "hold:0:r:0", "trial_id": 0, "tokens": 9},
        {"type": "instance", "key": "inst:0:a", "trial_id": 0, "prompt_tokens": 3,
         "completion_tokens": 2, "holds": ["hold:0:r:0"]},
        {"type": "tell", "key": "tell:0", "trial_id": 0, "result": {"tokens": 5}},
        # trial 1 was killed: one answered instance, one failed attempt kept, one in flight
        {"type": "hold", "key": "hold:1:r:0", "trial_id": 1, "tokens": 9},
        {"type": "hold", "key": "hold:1:r:1", "trial_id": 1, "tokens": 9},
        {"type": "instance", "key": "inst:1:a", "trial_id": 1, "prompt_tokens": 3,
         "completion_tokens": 1, "unsettled_tokens": 9, "holds": ["hold:1:r:0", "hold:1:r:1"]},
        {"type": "hold", "key": "hold:1:r:2", "trial_id": 1, "tokens": 8},
    ]


def test_orphan_holds_and_journal_total() -> None:
    recs = _journal()
    assert orphan_holds(recs, 0) == 0
    assert orphan_holds(recs, 1) == 8
    # told trial 0 at its tell (5); trial 1: usage 4 + kept 9 + orphan 8
    assert journal_charged(recs) == 5 + 4 + 9 + 8
