"""Record a config × instance table with a real engine, for replay benchmarks.

A table holds, for a Sobol design of K configurations over a task's search space plus the
HELM default, the score and the exact token counts (``usage``) of every one of the first N
instances of the task's nested order. Replaying optimizers on it (``ecotune.bench.replay``)
then costs no engine time, and every method sees the same recorded outcomes.

File format: gzip'd JSON lines, appended in gzip members (so collection resumes):

* ``{"type": "header", "task": ..., "task_spec": {...}, "model": ..., "space": {...},
  "order": [instance ids], "seed": ..., "n_configs": K, "instances": N}`` (once, first);
* ``{"type": "config", "config_id": k, "config": {...}, "helm": bool}``;
* ``{"type": "row", "c": k, "i": position, "s": [score, ...], "p": prompt_tokens,
  "t": [completion_tokens, ...], "f": [finish_reason, ...]}``: one entry per repeat, a
  single one for a greedy config, ``repeats`` for a sampled one (each repeat is its own
  request, so its usage is its own). Tables of format 1 (before repeats) hold scalars
  ``s`` and ``t`` and no ``f``; :class:`ecotune.bench.replay.Table` reads both.

Example:
    ecotune bench collect --task arithmetic --engine-url http://127.0.0.1:8011 \\
        --model smollm2-135m-instruct --n-configs 48 --instances 80 \\
        --out benchmarks/arithmetic.jsonl.gz
"""

from __future__ import annotations

import gzip
import json
import logging
import warnings
import zlib
from pathlib import Path
from typing import Any

from ecotune.decoding import SamplingParams
from ecotune.space import SearchSpace, default_llm_space, helm_default
from ecotune.subsets import nested_order
from ecotune.tasks.base import Task

log = logging.getLogger(__name__)


def bench_task(name: str, data_dir: str | Path | None = None) -> tuple[Task, SearchSpace, dict[str, Any], dict[str, Any]]:
    """The task, search space, HELM default and task spec a benchmark table uses.

    ``arithmetic``: the generated addition task (200 questions), ``max_tokens`` in [1, 32]
    and 0-5 shots. ``gsm8k_calc``: questions from GSM8K's calculator annotations (the
    registered task, :mod:`ecotune.tasks.gsm8k_calc`; ``data_dir``: the GSM8K folder its
    data is built from when missing), same space. Other names: the task with its own
    defaults and ``max_tokens`` in [1, 64].
    """
    from ecotune.tasks import make_task

    if name == "gsm8k_calc":
        spec = {"name": "gsm8k_calc"}
        task = make_task({**spec, "source_path": str(data_dir)} if data_dir else spec)
        space = default_llm_space(max_tokens=(1, 32), few_shot=5)
    elif name == "arithmetic":
        spec = {"name": "arithmetic"}
        task = make_task(spec)
        space = default_llm_space(max_tokens=(1, 32), few_shot=5)
    else:
        spec = {"name": name}
        task = make_task(spec)
        space = default_llm_space(max_tokens=(1, 64), few_shot=5)
    helm = helm_default(space, max_tokens=min(task.default_max_tokens,
                                              int(space.params["max_tokens"].high)))
    return task, space, helm, spec


def sobol_configs(space: SearchSpace, k: int, seed: int) -> list[dict[str, Any]]:
    """K configs of a scrambled Sobol design over the space."""
    from scipy.stats import qmc

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # balance warning when k is not a power of two
        U = qmc.Sobol(space.dim, scramble=True, seed=seed).random(k)
    return [space.decode(u) for u in U]


def read_jsonl_gz(path: str | Path) -> tuple[list[dict[str, Any]], bool]:
    """The records of an appended-to ``.jsonl.gz`` file up to the first torn one (a line or
    gzip member cut short by a crash), and whether one was torn."""
    p = Path(path)
    if not p.exists():
        return [], False
    out = []
    try:
        with gzip.open(p, "rt") as f:
            for line in f:
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    return out, True
    except (EOFError, OSError, zlib.error):  # a member cut off by a crash
        return out, True
    return out, False


def rewrite_jsonl_gz(path: str | Path, records: list[dict[str, Any]]) -> None:
    """Replace an appended-to ``.jsonl.gz`` file by ``records`` (one member), e.g. the whole
    records before a torn write, so later appends stay readable."""
    with gzip.open(path, "wt") as f:
        f.write("".join(json.dumps(r, separators=(",", ":"), default=str) + "\n"
                        for r in records))


def read_table_records(path: str | Path) -> list[dict[str, Any]]:
    """All records of a table file (tolerates a truncated last line from a crash)."""
    return read_jsonl_gz(path)[0]


def _measure(engine: Any, prompts: list[Any], params: SamplingParams, n: int) -> list[list[Any]]:
    """``n`` samples of every prompt (``out[j][r]``): one request with ``n`` choices on the
    offline engine (:class:`ecotune.bench.offline.OfflineEngine`), ``n`` requests of one
    choice each on a server (whose ``usage`` is per request)."""
    from ecotune.bench.offline import Sample

    if hasattr(engine, "sample"):
        return engine.sample(prompts, params, n)
    comps = engine.generate([p for p in prompts for _ in range(n)], params)
    bad = [c.error for c in comps if c.error]
    if bad:  # a failed request is not a measurement: stop, the run resumes from here
        raise RuntimeError(f"request failed: {bad[0]}")
    flat = [Sample(c.texts[0], int(c.prompt_tokens), int(c.completion_tokens),
                   str(c.finish_reason)) for c in comps]
    return [flat[j * n:(j + 1) * n] for j in range(len(prompts))]


def _row(k: int, i: int, task: Task, inst: Any, samples: list[Any]) -> dict[str, Any]:
    """The table row of config ``k`` on instance position ``i`` from its repeats."""
    return {"type": "row", "c": k, "i": i,
            "s": [float(task.score(inst, x.text)) for x in samples],
            "p": int(samples[0].prompt_tokens), "t": [int(x.completion_tokens) for x in samples],
            "f": [x.finish_reason for x in samples]}


def collect(task_name: str, engine_url: str, model: str, n_configs: int, instances: int,
            out: str | Path, seed: int = 0, concurrency: int = 8, progress: bool = True,
            engine: Any = None, repeats: int = 3) -> Path:
    """Record (or resume recording) the table; returns the output path.

    Greedy configs are asked once per instance, sampled ones ``repeats`` times (separate
    requests), so a replay can draw a fresh sample of a sampled config's answer.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    task, space, helm, spec = bench_task(task_name)
    order = nested_order(task.instances(), seed)[:instances]
    by_id = {i.id: i for i in task.instances()}
    configs = [helm] + sobol_configs(space, n_configs, seed)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    old, torn = read_jsonl_gz(out)
    if torn:  # a write cut short by a kill: keep every whole record, append after them
        log.warning("%s: dropping a torn last write (%d whole records kept)", out, len(old))
        rewrite_jsonl_gz(out, old)
    done: set[tuple[int, int]] = set()
    have_cfg: set[int] = set()
    if old:
        head = old[0]
        if (head.get("type") != "header" or head.get("order") != order
                or head.get("task") != task_name or head.get("repeats", 1) != repeats
                or head.get("n_configs") != n_configs):
            raise ValueError(f"{out} holds another table (task, seed, instances, configs or "
                             "repeats differ)")
        for r in old:
            if r["type"] == "row":
                done.add((r["c"], r["i"]))
            elif r["type"] == "config":
                have_cfg.add(r["config_id"])
    if engine is None:
        from ecotune.engines import OpenAIEngine

        engine = OpenAIEngine(engine_url, model, max_concurrency=concurrency, send_seed=False)
    todo = [(k, i) for k in range(len(configs)) for i in range(len(order)) if (k, i) not in done]

    def write(recs: list[dict[str, Any]]) -> None:
        with gzip.open(out, "at") as f:
            f.write("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in recs))

    if not old:
        write([{"type": "header", "task": task_name, "task_spec": spec, "model": model,
                "engine_url": engine_url, "space": space.to_dict(), "order": order,
                "seed": seed, "n_configs": n_configs, "instances": instances,
                "scoring": task.metric, "format": 2, "repeats": repeats}])
    from contextlib import nullcontext

    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    bar = Progress(TextColumn(f"[bold]{task_name}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), TimeRemainingColumn()) if progress else nullcontext()
    with bar:
        tid = bar.add_task("collect", total=len(configs) * len(order),
                           completed=len(configs) * len(order) - len(todo)) if progress else None
        # config by config, a chunk of instances per write, so a crash loses little
        for k, cfg in enumerate(configs):
            pos = [i for i in range(len(order)) if (k, i) not in done]
            recs: list[dict[str, Any]] = []
            if k not in have_cfg:
                recs.append({"type": "config", "config_id": k, "config": cfg, "helm": k == 0})
            if pos:
                insts = [by_id[order[i]] for i in pos]
                params = SamplingParams.from_config(cfg, stop=task.stop_sequences or None)
                n = 1 if params.greedy else repeats
                got = _measure(engine, [task.build_prompt(inst, cfg) for inst in insts], params, n)
                for i, inst, samples in zip(pos, insts, got, strict=True):
                    recs.append(_row(k, i, task, inst, samples))
            if recs:
                write(recs)
            if progress:
                bar.update(tid, advance=len(pos))
    return out
