"""``ecotune bench suite --verify N``: do the recorded runs repeat here?

The suite claims that one command reproduces every table of ``docs/benchmarks.md`` (issue
#11), so a recorded row has to come out the same when it is run again: the same anytime
trajectory (tokens spent and the incumbent's true score after every trial), the same number
of trials and the same final score. The code is versioned (:mod:`ecotune.bench.suite_versions`),
but a row can also stop repeating while the code stays the same: the peers run through their
own libraries, DEHB in an environment of its own, SMAC3 under one hash seed, and on
2026-12-07 most of DEHB's rows recorded on 2026-12-03 did not repeat on this machine, whose
environment repeats DEHB's earlier rows of 2026-12-02 (docs/benchmarks.md).

:func:`verify` runs the first ``seeds`` seeds of every recorded (problem, method) of the
current suite version again, exactly as the suite ran them
(:func:`ecotune.bench.suite_workers.run_job`, with the row's own budget), and compares.
``mfkg`` is left out unless it is named (one run takes up to 95 minutes of a core).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from ecotune.bench.suite_versions import SUITE_VERSION, latest, version
from ecotune.bench.suite_workers import Job, run_jobs

log = logging.getLogger(__name__)
#: left out of a verification unless named: hours of one core per seed on some problems
SLOW = ("mfkg",)


class Check(NamedTuple):
    """One recorded row, run again."""

    problem: str
    method: str
    seed: int
    repeats: bool  # the same tokens after every trial, the same scores to within RTOL
    parts_at: int | None  # the first trial where they differ; None: at none
    recorded: float       # the recorded final true score
    now: float            # the final true score of the run today
    trials: tuple[int, int]  # (recorded, now)
    exact: bool = True    # the scores too, bit for bit


#: scores that differ by less than this (relative) repeat: a function evaluated by torch or
#: NumPy on another CPU can come out a few units in the last place apart (BoTorch's
#: Borehole: 0.7740856925638301 recorded, 0.7740856925638258 here), and such a difference
#: only counts where it changes what the optimizer does next, which the tokens show
RTOL = 1e-9


def _same(x: Sequence[float], y: Sequence[float]) -> bool:
    return x[0] == y[0] and math.isclose(x[1], y[1], rel_tol=RTOL, abs_tol=1e-12)


def compare(recorded: dict[str, Any], now: dict[str, Any]) -> Check:
    """How the run ``now`` compares with the ``recorded`` row of the same job."""
    a, b = recorded["trajectory"], now["trajectory"]
    parts = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if not _same(x, y)),
                 None if len(a) == len(b) else min(len(a), len(b)))
    same = (parts is None and recorded["trials"] == now["trials"]
            and _same((0, recorded["final_true"]), (0, now["final_true"])))
    bits = [list(p) for p in a] == [list(p) for p in b]
    exact = same and bits and recorded["final_true"] == now["final_true"]
    return Check(recorded["problem"], recorded["method"], int(recorded["seed"]), same,
                 parts, float(recorded["final_true"]), float(now["final_true"]),
                 (int(recorded["trials"]), int(now["trials"])), exact)


def jobs_to_verify(rows: Sequence[dict[str, Any]], names: dict[str, str], seeds: int,
                   methods: Sequence[str] | None = None) -> list[tuple[Job, dict[str, Any]]]:
    """(job, recorded row) for seeds ``0 .. seeds − 1`` of each recorded (problem, method)
    of the current version; ``names`` maps a row's problem to the name the suite loads it
    by; problems not in it are skipped; ``methods`` (default: all but :data:`SLOW`)."""
    out = []
    for r in latest(rows):
        if version(r) != SUITE_VERSION or r["problem"] not in names or int(r["seed"]) >= seeds:
            continue
        wanted = r["method"] in methods if methods else r["method"] not in SLOW
        if not wanted:
            continue
        job = (names[r["problem"]], r["method"], int(r["seed"]), int(r["budget"]), r["kind"])
        out.append((job, r))
    return sorted(out, key=lambda jr: (jr[0][2], jr[0][0], jr[0][1]))


def verify(path: str | Path, seeds: int = 1, problems: Sequence[str] | None = None,
           methods: Sequence[str] | None = None, workers: int = 1) -> Iterator[Check]:
    """Run the chosen recorded rows of the runs file ``path`` again (``problems`` as the
    suite names them, default: the whole suite) and yield how each compares, as it
    finishes. Raises :class:`ecotune.bench.suite_workers.RunsFailed` after the others if
    a run raises."""
    from ecotune.bench.runs import load_bench
    from ecotune.bench.suite import read_runs, suite_problems

    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, not {seeds}")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no recorded runs to verify")
    benches = {n: load_bench(n, held_out=True) for n in (problems or suite_problems())}
    names = {b.name: n for n, b in benches.items()}
    todo = jobs_to_verify(read_runs(path), names, seeds, methods)
    if any(job[1] == "smac_bohb" for job, _ in todo) and os.environ.get("PYTHONHASHSEED") != "0":
        log.warning("smac_bohb's runs follow Python's string hashes: its rows were recorded "
                    "with PYTHONHASHSEED=0 and repeat only under it")
    recorded = {(row["problem"], row["method"], int(row["seed"])): row for _, row in todo}
    for now in run_jobs([job for job, _ in todo], workers, benches):
        yield compare(recorded[now["problem"], now["method"], int(now["seed"])], now)


def summary_lines(checks: Sequence[Check]) -> list[str]:
    """Each row that does not repeat, then per method how many of its rows repeat."""
    lines = [f"{c.problem} {c.method} seed {c.seed}: parts at trial {c.parts_at} "
             f"(final {c.recorded:.4f} recorded, {c.now:.4f} now; trials {c.trials[0]} / "
             f"{c.trials[1]})" for c in checks if not c.repeats]
    by: dict[str, list[bool]] = {}
    for c in checks:
        by.setdefault(c.method, []).append(c.repeats)
    lines += [f"{m}: {sum(v)} of {len(v)} rows repeat" for m, v in sorted(by.items())]
    close = sum(c.repeats and not c.exact for c in checks)
    lines.append(f"{sum(c.repeats for c in checks)} of {len(checks)} recorded rows repeat"
                 + (f" ({close} with scores equal to within {RTOL:g}, not bit for bit)"
                    if close else ""))
    return lines
