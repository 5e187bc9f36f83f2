"""The study's tables and plots, built from plain trial rows (no MLflow here).

A *trial row* is a flat dict: ``id, fidelity, token_limit, status, score, tokens,
prompt_tokens, completion_tokens, wall_time_s, cumulative_tokens, best_score`` plus
``config.<name>`` per setting, and ``instance_ids``/``instance_scores`` (lists, for
:mod:`ecotune.best`; not CSV columns). :func:`trial_rows` accepts what the runner hands over
(``{"trial": Trial.to_dict(), "result": TrialResult.to_dict()}`` pairs, or rows that are
already flat) and fills in the running totals when missing.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from typing import Any

# figures are built with matplotlib's object API (no pyplot, so no backend is chosen and
# nothing global is set: it works headless, in a pod, and leaves a notebook's backend alone)
from matplotlib.figure import Figure

from ecotune.best import best_trial

_RESULT_KEYS = ("status", "score", "tokens", "prompt_tokens", "completion_tokens",
                "unsettled_tokens", "reused_tokens", "n_evaluated", "wall_time_s", "error")
BASE_COLUMNS = ["id", "fidelity", "token_limit", "status", "score", "tokens", "prompt_tokens",
                "completion_tokens", "unsettled_tokens", "reused_tokens", "n_evaluated",
                "wall_time_s", "cumulative_tokens", "best_score", "error"]
#: per-instance lists a row carries for :mod:`ecotune.best`, left out of the CSV
INSTANCE_KEYS = ("instance_ids", "instance_scores")


def _flat_row(item: Mapping[str, Any]) -> dict[str, Any]:
    trial = item.get("trial", item)
    result = item.get("result", item)
    row: dict[str, Any] = {
        "id": trial.get("id"),
        "fidelity": trial.get("fidelity"),
        "token_limit": trial.get("token_limit"),
    }
    for k in (*_RESULT_KEYS, *INSTANCE_KEYS):
        row[k] = result.get(k)
    if row["tokens"] is None and row["prompt_tokens"] is not None:
        row["tokens"] = int(row["prompt_tokens"]) + int(row["completion_tokens"] or 0)
    for k in ("cumulative_tokens", "best_score"):
        row[k] = item.get(k)
    for k, v in (trial.get("config") or {}).items():
        row[f"config.{k}"] = v
    for k, v in item.items():  # already-flat config columns
        if k.startswith("config."):
            row[k] = v
    return row


def running_best(rows: list[dict[str, Any]], fidelity: int | None = None) -> None:
    """Fill ``cumulative_tokens`` and ``best_score`` (in place, where missing).

    ``best_score`` is the score of the best trial so far (:mod:`ecotune.best`, with
    ``fidelity`` as r_max; default: the most instances any row measured); ``None`` before
    any trial is scored.
    """
    r_max = fidelity if fidelity is not None else max(
        (int(r.get("n_evaluated") or 0) for r in rows), default=0)
    total, seen = 0, []
    for r in rows:
        total += int(r.get("tokens") or 0)
        if r.get("n_evaluated") is not None:
            seen.append((r["id"], r))
        best = best_trial(seen, r_max) if r_max else None
        if r.get("cumulative_tokens") is None:
            r["cumulative_tokens"] = total
        if r.get("best_score") is None:
            r["best_score"] = None if best is None else best[1]


def best_row(rows: list[dict[str, Any]], fidelity: int | None = None) -> dict[str, Any] | None:
    """The row of the best trial (:mod:`ecotune.best`, ``fidelity`` as r_max)."""
    r_max = fidelity if fidelity is not None else max(
        (int(r.get("n_evaluated") or 0) for r in rows), default=0)
    by_id = {r["id"]: r for r in rows if r.get("n_evaluated") is not None}
    best = best_trial(by_id.items(), r_max) if r_max else None
    return None if best is None else by_id[best[0]]


def trial_rows(trials: Iterable[Mapping[str, Any]], fidelity: int | None = None
               ) -> list[dict[str, Any]]:
    """Normalise runner trial records into flat rows ordered by trial id."""
    rows = sorted((_flat_row(t) for t in trials), key=lambda r: (r["id"] is None, r["id"]))
    running_best(rows, fidelity)
    return rows


def trials_csv(rows: list[dict[str, Any]]) -> str:
    """The trials table as CSV text: base columns, then ``config.*`` columns sorted."""
    extra = sorted({k for r in rows for k in r} - set(BASE_COLUMNS) - set(INSTANCE_KEYS))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=BASE_COLUMNS + extra, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if v is None else v) for k, v in r.items() if k not in INSTANCE_KEYS})
    return buf.getvalue()


def best_vs_tokens_figure(rows: list[dict[str, Any]]) -> Figure:
    """Best score so far (step line) against cumulative tokens spent."""
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    pts = [(r["cumulative_tokens"], r["best_score"]) for r in rows if r.get("best_score") is not None]
    if pts:
        xs, ys = zip(*pts, strict=True)
        ax.step(xs, ys, where="post", marker="o")
    ax.set_xlabel("cumulative tokens")
    ax.set_ylabel("best score so far")
    ax.set_title("Best score vs tokens spent")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def score_vs_tokens_figure(rows: list[dict[str, Any]]) -> Figure:
    """Each trial's score against its own token spend, coloured by fidelity."""
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    pts = [r for r in rows if r.get("score") is not None]
    if pts:
        sc = ax.scatter([r["tokens"] or 0 for r in pts], [r["score"] for r in pts],
                        c=[r["fidelity"] or 0 for r in pts], cmap="viridis")
        fig.colorbar(sc, ax=ax, label="fidelity (instances)")
    ax.set_xlabel("tokens (trial)")
    ax.set_ylabel("score")
    ax.set_title("Score vs tokens per trial")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def close(fig: Figure) -> None:
    """Free a figure's drawing state (figures here are not registered with pyplot, so
    dropping the last reference frees them too)."""
    fig.clear()
