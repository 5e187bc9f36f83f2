"""How much of a study's spend bought answers it had already seen (``ecotune bench waste``).

Reads a study journal and counts, instance record by instance record in journal order, the
tokens spent on a (canonical config, instance) pair under deterministic (greedy) decoding
that the study had already paid for: the re-measurement the response cache and kept
measurements exist to prevent. Also reports how many trials ran below r_max and the tokens
reused. This is how the ``make demo`` target (at most 2% of the budget re-measured) is
measured.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from ecotune.decoding import SamplingParams
from ecotune.journal import open_journal


def waste(records: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Figures of one journal (see the module docstring)."""
    records = list(records)
    head = next((r for r in records if r.get("type") == "study"), {})
    r_max = int(head.get("r_max", 0))
    budget = int(head.get("budget_tokens", 0))
    configs = {int(r["trial"]["id"]): r["trial"]["config"] for r in records
               if r.get("type") == "ask"}
    seen: set[tuple[str, str]] = set()
    wasted = spent = 0
    for r in records:
        if r.get("type") != "instance":
            continue
        cfg = configs.get(int(r["trial_id"]), {})
        cost = int(r["prompt_tokens"]) + int(r["completion_tokens"])
        spent += cost
        if not SamplingParams.from_config(cfg).greedy:
            continue
        key = (json.dumps(cfg, sort_keys=True, default=str), str(r["instance_id"]))
        if key in seen and cost > 0:
            wasted += cost
        seen.add(key)
    tells = [r["result"] for r in records if r.get("type") == "tell"]
    below = sum(1 for t in tells if int(t["n_evaluated"]) < r_max)
    charged = sum(int(t["tokens"]) for t in tells)
    return {"trials": len(tells), "below_r_max": below, "budget_tokens": budget,
            "tokens_charged": charged, "instance_tokens": spent,
            "tokens_reused": sum(int(t.get("reused_tokens", 0)) for t in tells),
            "remeasured_tokens": wasted,
            "remeasured_share_of_budget": wasted / budget if budget else 0.0}


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="ecotune bench waste", description=__doc__)
    ap.add_argument("journals", nargs="+", help="study journals (path or s3://)")
    args = ap.parse_args(argv)
    for uri in args.journals:
        print(json.dumps({"journal": uri, **waste(open_journal(uri).records())}))
    return 0
