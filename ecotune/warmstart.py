"""Warm start: a study begins where an earlier study of the same model and task left off.

A scheduled study (or any study given ``warm_start: {journal: ...}``) reads the journal of
an earlier study and takes two things from it:

* **configs**: its champion (:func:`ecotune.best.best_trial`) first, then its other best
  configs, ``top_k`` in all, clipped into this study's space and canonical. EcoTune runs
  them first (before the HELM default and before any space-filling design), so a good
  earlier config is confirmed for the price of one low-fidelity trial, and promoted from
  there when it still leads;
* **observations** (when ``observations`` is on and both studies have the same task
  config, model, search space and fixed settings, :func:`study_identity`): every scored
  trial of the earlier study, as prior data. They enter
  :meth:`StudyState.observations <ecotune.optimizers.state.StudyState.observations>`, which
  every GP of the package fits on, so the surrogate starts informed and the space-filling
  initial design is skipped; and the token cost model learns from their token counts.
  They are **not** this study's trials: they are charged nothing, never count as its
  results or its best (a champion must be measured again on today's engine), and do not
  count towards ``max_trials`` or patience. A score measured on more than this study's
  r_max instances counts as measured on r_max (its noise is overstated, never understated).
  When the studies differ, only the configs are taken.

What was taken is written into the new study's journal header (:meth:`WarmStart.to_dict`),
and a study that resumes uses the recorded warm start, never the source again, so a
resumed study replays identically even when the source journal has changed or is gone
(:func:`ecotune.construct.build_optimizer`).

Example:
    >>> ws = read_warm_start("runs/last-week/journal.jsonl", space=space,   # doctest: +SKIP
    ...                      identity=study_identity(new_header), top_k=3)
    >>> ws.configs[0], len(ws.observations), ws.reason                      # doctest: +SKIP
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from ecotune.best import best_trial
from ecotune.journal import JournalError, open_journal
from ecotune.space import CategoricalParam, SearchSpace

#: the keyword ``warm_start.journal`` takes for "the study's previous run" (pipeline runs)
PREVIOUS = "previous"


class WarmStartError(RuntimeError):
    """The warm-start source cannot be read or holds no study."""


@dataclass(frozen=True)
class WarmStart:
    """What a study takes from an earlier one (see the module docstring).

    Attributes:
        source: the earlier study's journal.
        configs: initial configs, champion first, in this study's space (canonical).
        observations: prior data, each ``{config, n, score, prompt_tokens,
            completion_tokens}``; empty unless the studies match.
        matched: True when task, model, space and fixed settings are the same.
        reason: why observations were or were not taken (for the record).
    """

    source: str
    configs: list[dict[str, Any]] = field(default_factory=list)
    observations: list[dict[str, Any]] = field(default_factory=list)
    matched: bool = False
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form, as the journal header records it."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WarmStart:
        return cls(source=str(data["source"]), configs=list(data.get("configs") or []),
                   observations=list(data.get("observations") or []),
                   matched=bool(data.get("matched")), reason=str(data.get("reason", "")))


def study_identity(header: dict[str, Any]) -> dict[str, Any]:
    """What must be equal for one study's scores to inform another's: the task (its full
    config when the header records one, else its name), the model, the search space and
    the fixed settings, read from a journal header (or the header a new study will write)."""
    tags = header.get("tags") or {}
    task = (header.get("study_config") or {}).get("task") or tags.get("ecotune.task")
    return {"task": task, "model": tags.get("ecotune.model"), "space": header.get("space"),
            "fixed": (header.get("options") or {}).get("fixed") or {}}


def mismatch(a: dict[str, Any], b: dict[str, Any]) -> str | None:
    """The first field on which two identities differ (an unknown task or model never
    matches), or None."""
    for k in ("task", "model", "space", "fixed"):
        if a.get(k) is None and k in ("task", "model"):
            return f"the earlier study records no {k}"
        if _canon(a.get(k)) != _canon(b.get(k)):
            return f"the {k} differs"
    return None


def read_warm_start(source: str, *, space: SearchSpace, identity: dict[str, Any],
                    top_k: int = 3, observations: bool = True, r_max: int | None = None
                    ) -> WarmStart:
    """Read an earlier study's journal into a :class:`WarmStart` for a study over ``space``.

    Args:
        source: the earlier study's journal (local path or ``s3://``).
        space: this study's search space (configs are clipped into it).
        identity: this study's :func:`study_identity`.
        top_k: configs to take, its champion first (0: none).
        observations: take its scored trials as prior data when the studies match.
        r_max: this study's r_max (prior instance counts are capped at it).

    Raises:
        WarmStartError: the source cannot be read or holds no study header.
    """
    try:
        records = open_journal(source).records()
    except (JournalError, OSError) as e:
        raise WarmStartError(f"warm start: cannot read journal {source}: {e}") from e
    head = next((r for r in records if r.get("type") == "study"), None)
    if head is None:
        raise WarmStartError(f"warm start: no study journal at {source}")
    asks = {int(r["trial"]["id"]): r["trial"] for r in records if r.get("type") == "ask"}
    told = [(int(r["trial_id"]), r["result"]) for r in records
            if r.get("type") == "tell" and int(r["trial_id"]) in asks]
    scored = [(tid, res) for tid, res in told if res.get("score") is not None
              and res.get("status") != "failed" and int(res.get("n_evaluated", 0)) > 0]
    configs = _ranked_configs(scored, asks, int(head.get("r_max") or 1), space, top_k)
    why = mismatch(study_identity(head), identity)
    obs: list[dict[str, Any]] = []
    if why is None and observations:
        cap = int(r_max) if r_max else None
        for tid, res in scored:
            n = int(res["n_evaluated"])
            obs.append({"config": dict(asks[tid]["config"]),
                        "n": min(n, cap) if cap else n, "score": float(res["score"]),
                        "prompt_tokens": int(res.get("prompt_tokens", 0)),
                        "completion_tokens": int(res.get("completion_tokens", 0))})
    reason = (f"{len(obs)} observations taken" if why is None and observations
              else "observations not wanted" if why is None
              else f"configs only: {why}")
    return WarmStart(source=str(source), configs=configs, observations=obs,
                     matched=why is None, reason=reason)


def clip_config(space: SearchSpace, config: dict[str, Any]) -> dict[str, Any]:
    """An earlier study's config in ``space``: settings the space lacks are dropped, values
    outside it clipped (an unknown choice, or a value of another type, takes the
    parameter's neutral value), missing ones neutral; canonical."""
    kept: dict[str, Any] = {}
    for name, p in space.params.items():
        if name not in config:
            continue
        v = config[name]
        if isinstance(p, CategoricalParam):
            kept[name] = v if v in p.choices else p.neutral()
        elif isinstance(v, int | float) and not isinstance(v, bool):
            kept[name] = v
    return space.canonical(space.validate_config(kept))


def _ranked_configs(scored: list[tuple[int, dict[str, Any]]], asks: dict[int, dict[str, Any]],
                    prev_r_max: int, space: SearchSpace, top_k: int) -> list[dict[str, Any]]:
    """Champion first, then each config's most-measured score: full-fidelity ones first,
    higher score first; clipped into ``space``, distinct, at most ``top_k``."""
    if top_k <= 0 or not scored:
        return []
    best = best_trial(scored, prev_r_max)
    per_config: dict[str, tuple[int, float, int]] = {}  # key -> (n, score, trial id)
    for tid, res in scored:
        key = _canon(asks[tid]["config"])
        n, s = int(res["n_evaluated"]), float(res["score"])
        if key not in per_config or (n, tid) >= per_config[key][::2]:
            per_config[key] = (n, s, tid)
    order = sorted(per_config.values(), key=lambda v: (-(v[0] >= prev_r_max), -v[1], -v[0], v[2]))
    ids = ([best[0]] if best is not None else []) + [tid for _, _, tid in order]
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for tid in ids:
        cfg = clip_config(space, asks[tid]["config"])
        key = _canon(cfg)
        if key not in seen:
            seen.add(key)
            out.append(cfg)
        if len(out) >= top_k:
            break
    return out


def _canon(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=str)
