"""finalize_study through ``python_func`` after a run that succeeded or failed."""

import json

import pytest

from components.finalize_study import finalize_study
from components.testing import final_status, run_rounds
from ecotune.journal import open_journal


@pytest.mark.parametrize("state", ["SUCCEEDED", "FAILED"])
def test_finalize_writes_summary_either_way(prepared, state):
    cfg, journal, manifest = prepared
    if state == "SUCCEEDED":
        run_rounds(cfg, journal, manifest, max_rounds=1)
    base, key = journal.rsplit("/", 1)
    summary = json.loads(finalize_study.python_func(study=cfg, journal_uri=base,
                                                    engine_url="fake://",
                                                    status=final_status(state), run_key=key))
    assert summary["state"] == state
    final = [r for r in open_journal(journal).records() if r["type"] == "final"]
    assert len(final) == 1 and final[0]["summary"]["tokens_used"] == summary["tokens_used"]
