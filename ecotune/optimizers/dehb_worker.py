"""DEHB's side of the ``dehb`` optimizer: a process in DEHB's own environment.

DEHB 0.1.2 pins numpy < 2, which the vLLM stack of the main environment cannot share, so
it runs here, in ``.venv-dehb`` (``scripts/install.sh``), driven over JSON lines on
stdin/stdout by :mod:`ecotune.optimizers.dehb`. This file imports nothing of EcoTune: it
is run by path, isolated (``.venv-dehb/bin/python -I dehb_worker.py``).

Protocol (one JSON object per line; every reply has ``ok``, or ``error`` with a traceback):

* first line: ``{"space": [...], "min_fidelity", "max_fidelity", "eta", "seed"}``, the
  search space as ``{"name", "type": "categorical"|"float"|"int", "choices" | "low",
  "high", "log"}``; reply ``{"ok": true, "dehb": version}``;
* ``{"op": "ask"}``: DEHB's next job; reply ``{"ok": true, "job": n, "config": {...},
  "fidelity": f}`` (the job's ``job_info`` stays here, under ``n``);
* ``{"op": "tell", "job": n, "fitness": f, "cost": c}``: DEHB minimises ``fitness``.

DEHB's log (loguru) is sent to stderr, never to the protocol's stdout.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import traceback
from typing import Any


def config_space(spec: list[dict[str, Any]], seed: int):
    """The search space as a ConfigSpace ``ConfigurationSpace`` (no conditions)."""
    from ConfigSpace import Categorical, ConfigurationSpace, Float, Integer

    cs = ConfigurationSpace(seed=seed)
    for p in spec:
        if p["type"] == "categorical":
            cs.add(Categorical(p["name"], list(p["choices"])))
        elif p["type"] == "float":
            cs.add(Float(p["name"], (p["low"], p["high"]), log=p["log"]))
        else:
            cs.add(Integer(p["name"], (p["low"], p["high"]), log=p["log"]))
    return cs


def _plain(value: Any) -> Any:
    """numpy scalars as Python numbers, for JSON."""
    return value.item() if hasattr(value, "item") else value


def main() -> int:
    proto = os.fdopen(os.dup(1), "w", buffering=1)  # the protocol keeps the real stdout
    os.dup2(2, 1)                                   # anything else printed goes to stderr
    sys.stdout = sys.stderr
    from importlib.metadata import version

    from dehb import DEHB

    start = json.loads(sys.stdin.readline())
    dehb = DEHB(cs=config_space(start["space"], start["seed"]),
                min_fidelity=start["min_fidelity"], max_fidelity=start["max_fidelity"],
                eta=start["eta"], seed=start["seed"], n_workers=1, log_level="ERROR",
                output_path=tempfile.mkdtemp(prefix="ecotune-dehb-"), save_freq=None)
    proto.write(json.dumps({"ok": True, "dehb": version("dehb")}) + "\n")
    jobs: dict[int, dict[str, Any]] = {}
    asked = 0
    for line in sys.stdin:
        try:
            msg = json.loads(line)
            if msg["op"] == "ask":
                job = dehb.ask()
                n, asked = asked, asked + 1
                jobs[n] = job
                reply = {"ok": True, "job": n, "fidelity": float(job["fidelity"]),
                         "config": {k: _plain(v) for k, v in dict(job["config"]).items()}}
            elif msg["op"] == "tell":
                dehb.tell(jobs.pop(msg["job"]), {"fitness": msg["fitness"], "cost": msg["cost"]})
                reply = {"ok": True}
            else:
                reply = {"error": f"unknown op {msg['op']!r}"}
        except Exception:  # reported to the caller, which raises it there
            reply = {"error": traceback.format_exc()}
        proto.write(json.dumps(reply) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
