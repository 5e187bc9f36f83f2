"""Which recorded suite runs still measure what today's code measures.

A run of the suite is a ``(problem, method, seed)`` row in ``runs.jsonl.gz``. When a change
alters what a run records (the rule that names a study's answer, a peer's source of
randomness), the suite's version goes up and every row of an older version is *stale*:
``ecotune bench suite`` runs it again, appends the new row, and the newest row of a key is
the one read (:func:`latest`); the file is compacted once nothing is left to re-run. The
report says how many rows are stale and where, so a table never silently mixes versions.

Versions (a row without ``version`` is version 1):

1. up to 2026-12-03: :mod:`ecotune.best` took the best score among the trials that
   measured the most instances; Syne Tune's ``bohb``/``asha`` drew from NumPy's global RNG
   (one seed, different runs); ``smac_bohb`` followed the interpreter's hash seed;
   ``mfkg`` drew from torch's global RNG; some ``dehb`` rows and the peers' rows on the
   noisy-prefix problems came from earlier code and no longer repeat (so it was thought;
   ``dehb``'s version-1 rows repeat again on 2026-12-07, its version-2 ones did not: its
   environment differed, and its rows are re-recorded, docs/benchmarks.md).
2. :mod:`ecotune.best` lets a trial measured on fewer instances replace the champion when
   it wins on their shared instances (one-sided sign test); Syne Tune runs on an RNG of its
   own; ``mfkg`` runs each ask on a fork of torch's RNG seeded by (seed, ask number),
   where its one-shot KG had drawn from the process's global torch RNG (a run depended on
   what ran before it); the suite is recorded under ``PYTHONHASHSEED=0`` (``smac_bohb``).
3. The BoTorch peers (``botorch``, ``eipu``, ``mfkg``) fit their GP's noise level, as
   BoTorch's tutorials do, when a score comes without per-instance scores (the function
   problems), where they had taken the binomial p(1 − p)/r that describes a mean of 0/1
   scores and not a deterministic function (EcoTune had fitted a scale of it since
   2026-12-02: the peers' model was the worse one).

A change of EcoTune's own default needs no new version when its changed rows are re-run
and the old ones kept under the variant that repeats them: on 2026-12-06 ``calibrate``
changed EcoTune's rows on the function problems; they were re-run, and the rows they
replaced are ``ecotune+uncalibrated`` (``calibrate=False``), which today's code repeats;
that evening the calibration's prior on the slope (``slope_prior``) did the same, and the
rows it replaced are ``ecotune+unshrunk`` (``slope_prior=0``).

:func:`unchanged_by` names the older rows that no later version can change, stamped without
re-running. Version 2 could not change a version-1 row on a function problem of a method
but the five above: the best-trial rule needs instance scores, which the function
problems' trials do not carry, and those methods reproduce their recorded trials exactly
(checked on seed 0 of Branin, Borehole and mf2 Currin for the peers, and on six problems
for EcoTune's variants). Version 3 changes only the BoTorch peers' rows on the function
problems.
"""

from __future__ import annotations

from typing import Any

SUITE_VERSION = 3
#: methods whose version-1 runs today's code does not repeat on the function problems
UNSEEDED_V1 = frozenset({"bohb", "asha", "smac_bohb", "dehb", "mfkg"})
#: the methods whose GP noise version 3 changed where scores carry no instance scores
BOTORCH_PEERS = frozenset({"botorch", "eipu", "mfkg"})
#: problem kinds whose trials report no per-instance scores
NO_INSTANCE_SCORES = frozenset({"biased"})


def _changes(to: int, run: dict[str, Any]) -> bool:
    """Whether going to version ``to`` changes what ``run`` records (module docstring)."""
    no_scores = run.get("kind") in NO_INSTANCE_SCORES
    if to == 2:
        return not no_scores or run["method"] in UNSEEDED_V1
    if to == 3:
        return no_scores and run["method"] in BOTORCH_PEERS
    raise ValueError(f"no suite version {to}")


def key(run: dict[str, Any]) -> tuple[str, str, int]:
    return run["problem"], run["method"], int(run["seed"])


def version(run: dict[str, Any]) -> int:
    return int(run.get("version", 1))


def latest(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The newest row of every key, in the order the keys were first recorded."""
    newest: dict[tuple[str, str, int], dict[str, Any]] = {}
    for r in runs:
        newest[key(r)] = r  # a later row replaces an earlier one, in the earlier one's place
    return list(newest.values())


def unchanged_by(run: dict[str, Any]) -> bool:
    """True for an older row that today's version records identically (module docstring)."""
    return version(run) < SUITE_VERSION and not any(
        _changes(v, run) for v in range(version(run) + 1, SUITE_VERSION + 1))


def stamp(runs: list[dict[str, Any]]) -> int:
    """Stamp the rows :func:`unchanged_by` names with the current version; how many."""
    n = 0
    for r in runs:
        if unchanged_by(r):
            r["version"] = SUITE_VERSION
            n += 1
    return n


def stale(runs: list[dict[str, Any]]) -> dict[tuple[str, str], int]:
    """``(problem, method) -> rows`` of an older version among the newest rows."""
    out: dict[tuple[str, str], int] = {}
    for r in latest(runs):
        if version(r) < SUITE_VERSION:
            out[r["problem"], r["method"]] = out.get((r["problem"], r["method"]), 0) + 1
    return out
