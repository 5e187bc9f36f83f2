"""``dehb``: DEHB (differential evolution over Hyperband), the ``dehb`` package's own code.

DEHB (Awad, Mallik & Hutter, IJCAI 2021) runs Hyperband brackets whose rungs are
differential-evolution subpopulations, one per budget: a lower rung's best configs are
promoted in the first brackets and mutate the higher rungs' populations after. It is used
through its own ask/tell (``DEHB.ask`` / ``DEHB.tell``) with the instance count as the
budget (``min_fidelity = r_min``, ``max_fidelity = r_max``, η = the reduction factor); a
budget it asks for is rounded to whole instances. DEHB minimises: it is told ``−score``
(a failed trial: ``inf``) and the trial's tokens as its cost.

DEHB 0.1.2 pins numpy < 2, which vLLM's stack cannot share, so DEHB runs in its own
environment (``.venv-dehb``, made by ``scripts/install.sh`` from ``requirements/dehb.txt``;
``ECOTUNE_DEHB_PYTHON`` names another interpreter) as a child process speaking JSON lines
(:mod:`ecotune.optimizers.dehb_worker`). Its space has no conditions: it sees every
setting; what EcoTune sends is the canonical config. On a finite candidate set EcoTune
snaps DEHB's proposal to the nearest candidate and DEHB is told that score for its job.
Replays restart DEHB with the same seed, ask it again in the journal's order (it is
deterministic given its seed) and tell it the recorded results.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import weakref
from pathlib import Path
from typing import Any

from ecotune.optimizers.base import Optimizer, Proposal
from ecotune.space import CategoricalParam, FloatParam, SearchSpace
from ecotune.trial import Trial, TrialResult, TrialStatus

WORKER = Path(__file__).with_name("dehb_worker.py")


def space_spec(space: SearchSpace) -> list[dict[str, Any]]:
    """The search space's ranges as plain JSON (what ``dehb_worker.config_space`` reads)."""
    spec: list[dict[str, Any]] = []
    for name, p in space.params.items():
        if isinstance(p, CategoricalParam):
            spec.append({"name": name, "type": "categorical", "choices": list(p.choices)})
        else:
            spec.append({"name": name, "type": "float" if isinstance(p, FloatParam) else "int",
                         "low": p.low, "high": p.high, "log": bool(p.log)})
    return spec


def dehb_python() -> str:
    """The interpreter of DEHB's environment: ``$ECOTUNE_DEHB_PYTHON``, else ``.venv-dehb``
    beside the main environment or in the source checkout."""
    named = os.environ.get("ECOTUNE_DEHB_PYTHON")
    roots = (Path(sys.prefix).parent, Path(__file__).resolve().parents[2])
    for python in [Path(named)] if named else [r / ".venv-dehb" / "bin" / "python" for r in roots]:
        if python.exists():
            return str(python)
    raise RuntimeError(f"no {named or '.venv-dehb'}: optimizer 'dehb' runs DEHB 0.1.2 in its "
                       "own environment (it pins numpy < 2): `make install` creates "
                       ".venv-dehb, or set ECOTUNE_DEHB_PYTHON to a Python with "
                       "requirements/dehb.txt")


class DEHBWorker:
    """DEHB in its own process: send one JSON message, read one JSON reply."""

    def __init__(self, start: dict[str, Any]):
        self._log = tempfile.TemporaryFile(mode="w+")
        # -I: isolated; above all, the worker's folder (which holds this dehb.py) is not
        # put on sys.path, so `import dehb` finds the package
        self.proc = subprocess.Popen([dehb_python(), "-I", str(WORKER)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._log, text=True,
                                     bufsize=1)
        weakref.finalize(self, _close, self.proc, self._log)
        self.version = self.call(start)["dehb"]

    def call(self, msg: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(json.dumps(msg) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass  # the worker died: its log says why (below)
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(timeout=10)
            self._log.seek(0)
            raise RuntimeError(f"the DEHB process exited ({self.proc.returncode}): "
                               f"{self._log.read()[-2000:]}")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"DEHB failed: {reply['error']}")
        return reply


def _close(proc: subprocess.Popen, log: Any) -> None:
    if proc.poll() is None:
        proc.stdin.close()  # the worker's loop ends at end of input
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    log.close()


class DEHBOptimizer(Optimizer):
    """DEHB (the ``dehb`` package, in its own environment) behind ask/tell.

    Args:
        reduction_factor: η of DEHB's Hyperband brackets.
    """

    name = "dehb"
    single_fidelity = False

    def __init__(self, *args: Any, reduction_factor: int = 3, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._rf = int(reduction_factor)
        self.worker = DEHBWorker({"space": space_spec(self.space), "min_fidelity": self.r_min,
                                  "max_fidelity": self.r_max, "eta": self._rf,
                                  "seed": int(self.seed)})
        self._jobs: dict[int, int] = {}     # ecotune trial id -> DEHB job number
        self._asked: dict[str, Any] | None = None  # the job of the proposal in flight
        self._options.update(reduction_factor=self._rf)

    def _propose(self) -> Proposal:
        job = self.worker.call({"op": "ask"})
        self._asked = job
        r = min(max(int(round(job["fidelity"])), self.r_min), self.r_max)
        return dict(job["config"]), r, {"dehb_config": job["config"],
                                        "fidelity": job["fidelity"]}

    def _on_ask(self, trial: Trial, meta: dict[str, Any]) -> None:
        job, self._asked = self._asked, None
        if job is None:  # replay: ask DEHB again, in the same order
            job = self.worker.call({"op": "ask"})
            if job["config"] != meta["dehb_config"] or job["fidelity"] != meta["fidelity"]:
                raise RuntimeError("DEHB replay diverged from the journal")
        self._jobs[trial.id] = job["job"]

    def _on_tell(self, trial: Trial, result: TrialResult) -> None:
        failed = result.score is None or result.status == TrialStatus.FAILED
        self.worker.call({"op": "tell", "job": self._jobs.pop(trial.id),
                          "fitness": float("inf") if failed else -float(result.score),
                          "cost": float(result.tokens)})
