"""control_budget through ``python_func`` after rounds of a sampled local study."""

from components._common import rounds
from components.control_budget import control_budget
from components.testing import run_rounds
from ecotune.journal import open_journal


def test_controller_records_rounds_and_stops_at_max_rounds(prepared):
    cfg, journal, manifest = prepared
    assert run_rounds(cfg, journal, manifest, max_rounds=2) == ["continue", "stop"]
    recs = open_journal(journal).records()
    rr = rounds(recs)
    assert [r["round"] for r in rr] == [0, 1]
    assert rr[-1]["stop_reason"] == "max_rounds"
    spent = sum(r["result"]["prompt_tokens"] + r["result"]["completion_tokens"]
                for r in recs if r["type"] == "tell")
    assert rr[-1]["B_used"] == spent and rr[-1]["B_remain"] == 20000 - spent
    assert {"eta", "T_hat", "decision"} <= set(rr[-1])
    # a retried controller returns the recorded decision and writes nothing new
    n = len(recs)
    assert control_budget.python_func(study=cfg, journal_uri=journal, round_index=1,
                                      max_rounds=2) == "stop"
    assert len(open_journal(journal).records()) == n
