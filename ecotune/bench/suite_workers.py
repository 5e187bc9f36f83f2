"""Run the suite's missing runs, in this process or in worker processes of one thread each.

A suite run is a job ``(problem, method, seed, budget, kind)``; :func:`run_jobs` yields
each job's finished row (the fields :func:`ecotune.bench.runs.replay_one` records, plus
``problem``, ``oracle``, ``kind`` and the suite ``version``) for the caller to append. A
run that raises does not stop the others: :func:`run_jobs` logs its traceback, goes on,
and raises :class:`RunsFailed`, naming every failed run, once the rest are yielded.

With ``workers > 1`` the jobs go to a pool of spawned processes and rows come back in the
order they finish. Each worker runs with one BLAS/OpenMP thread: on this project's
two-core machine, two processes of two torch threads each ran EcoTune's runs about three
times slower than their serial times (noisy Hartmann: 1.7–12.4 s a run against 1.0–1.5 s
with one thread), while four runs re-run with one thread repeated their two-thread
trajectories exactly (docs/benchmarks.md). The thread count is set in the workers'
environment when they start, before they import NumPy or torch; this process's
environment is restored once they have started. A worker loads each problem once and keeps it, and inherits this
process's environment, ``PYTHONHASHSEED`` included (``smac_bohb`` follows it).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import traceback
import warnings
from collections.abc import Iterable, Iterator
from typing import Any
from unittest import mock

from ecotune.bench.suite_versions import SUITE_VERSION

#: (problem name as the suite loads it, method, seed, token budget, problem kind)
Job = tuple[str, str, int, int, str]
#: the thread-count variables of OpenMP, MKL, OpenBLAS and Apple's Accelerate
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
               "VECLIB_MAXIMUM_THREADS")

_benches: dict[str, Any] = {}  # a worker's loaded problems
log = logging.getLogger(__name__)


class RunsFailed(RuntimeError):
    """Some runs of the suite raised (the rows of the others are yielded and kept)."""

    def __init__(self, failed: list[tuple[Job, str]]):
        self.failed = failed
        super().__init__(f"{len(failed)} run(s) failed: " + "; ".join(
            f"{job[0]} {job[1]} seed {job[2]}: {error}" for job, error in failed))


def run_job(job: Job, benches: dict[str, Any] | None = None) -> dict[str, Any]:
    """One run of the suite, as the row it records."""
    from ecotune.bench.runs import load_bench, replay_one

    name, method, seed, budget, kind = job
    cache = _benches if benches is None else benches
    if name not in cache:
        cache[name] = load_bench(name, held_out=True)
    bench = cache[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        row = replay_one(bench, method, seed, budget, restrict=bench.table is not None)
    row.update(problem=bench.name, oracle=bench.oracle, kind=kind, version=SUITE_VERSION)
    row["trajectory"] = [[int(t), float(s)] for t, s in row["trajectory"]]
    return row


def run_jobs(jobs: Iterable[Job], workers: int = 1,
             benches: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
    """Each job's row as it finishes: in order here (``benches``: problems already loaded),
    or in whatever order ``workers`` spawned processes finish them."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, not {workers}")
    jobs = list(jobs)
    failed: list[tuple[Job, str]] = []
    if workers == 1 or len(jobs) <= 1:
        outcomes: Iterable[tuple[Job, Any, str | None]] = (
            _attempt(job, benches) for job in jobs)
        yield from _rows(outcomes, failed)
    else:
        # the workers copy this environment when they start (now); it is restored after
        with mock.patch.dict(os.environ, {v: "1" for v in THREAD_VARS}):
            pool = mp.get_context("spawn").Pool(min(workers, len(jobs)))
        with pool:
            yield from _rows(pool.imap_unordered(_attempt, jobs), failed)
    if failed:
        raise RunsFailed(failed)


def _attempt(job: Job, benches: dict[str, Any] | None = None
             ) -> tuple[Job, dict[str, Any] | None, str | None]:
    """(job, its row, None), or (job, None, the traceback) when the run raised."""
    try:
        return job, run_job(job, benches), None
    except Exception:  # noqa: BLE001 - reported by _rows and raised at the end as RunsFailed
        return job, None, traceback.format_exc()


def _rows(outcomes: Iterable[tuple[Job, Any, str | None]], failed: list[tuple[Job, str]]
          ) -> Iterator[dict[str, Any]]:
    for job, row, tb in outcomes:
        if tb is None:
            yield row
        else:
            log.error("%s %s seed %d failed:\n%s", job[0], job[1], job[2], tb)
            failed.append((job, tb.strip().splitlines()[-1]))
