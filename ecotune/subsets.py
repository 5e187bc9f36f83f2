"""Nested fidelity subsets: one seeded ordering of a task's instances, fidelity r = first r.

Because every fidelity is a prefix of the same ordering, a trial at a higher fidelity
re-uses (and extends) the instances of a lower one: the subsets are nested by construction.
The ordering is stratified round-robin (one instance per stratum in turn, e.g. per MMLU
subject, strata in a seeded order, instances shuffled within each stratum), so every prefix
covers the strata evenly.

``build_subsets`` writes ``subsets/<task>/<seed>/order.json`` and ``manifest.json`` to a
store (local folder or ``s3://``) once; re-running it with the same data is a no-op.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from ecotune.storage import open_store
from ecotune.tasks.base import Instance, Task


class SubsetError(ValueError):
    """A subset cannot be built or read (too large, missing, or inconsistent)."""


class Manifest(BaseModel):
    """What a stored ordering was built from (compared on rebuild for idempotence)."""

    task: str
    seed: int
    r_max: int
    n_instances: int
    counts: dict[str, int]
    order_sha256: str
    source_sha256: str
    created_at: str


def _ids_sha(ids: list[str]) -> str:
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()


def nested_order(instances: list[Instance], seed: int) -> list[str]:
    """All instance ids in the stratified, seeded round-robin order."""
    strata: dict[str, list[str]] = defaultdict(list)
    for inst in instances:
        strata[inst.stratum or ""].append(inst.id)
    names = sorted(strata)
    random.Random(f"strata:{seed}").shuffle(names)
    queues = []
    for name in names:
        ids = list(strata[name])
        random.Random(f"{seed}:{name}").shuffle(ids)
        queues.append(ids)
    order, depth = [], 0
    while len(order) < len(instances):
        for q in queues:
            if depth < len(q):
                order.append(q[depth])
        depth += 1
    return order


def _prefix(task: Task | str, seed: int) -> str:
    name = task if isinstance(task, str) else task.key
    return f"subsets/{name}/{seed}/"


def build_subsets(task: Task, r_max: int, seed: int, store_uri: str) -> Manifest:
    """Write the ordering's first ``r_max`` ids and its manifest, unless already there.

    Raises:
        SubsetError: ``r_max`` exceeds the number of instances, or a different ordering is
            already stored under the same task and seed.
    """
    instances = task.instances()
    if not 1 <= r_max <= len(instances):
        raise SubsetError(f"r_max={r_max} but task {task.key!r} has {len(instances)} instances")
    order = nested_order(instances, seed)[:r_max]
    by_id = {i.id: i for i in instances}
    counts: dict[str, int] = defaultdict(int)
    for iid in order:
        counts[by_id[iid].stratum or "all"] += 1
    manifest = Manifest(
        task=task.key, seed=seed, r_max=r_max, n_instances=len(instances), counts=dict(counts),
        order_sha256=_ids_sha(order), source_sha256=task.source_sha256(),
        created_at=datetime.now(UTC).isoformat(),
    )
    store, prefix = open_store(store_uri), _prefix(task, seed)
    if store.exists(prefix + "manifest.json"):
        old = Manifest(**json.loads(store.read_bytes(prefix + "manifest.json")))
        if (old.order_sha256, old.source_sha256) == (manifest.order_sha256, manifest.source_sha256):
            return old
        raise SubsetError(
            f"{store.uri}/{prefix}: a different ordering is stored (data or r_max changed); "
            "use another seed or store"
        )
    store.write_bytes(prefix + "order.json", json.dumps({"ids": order}).encode())
    store.write_bytes(prefix + "manifest.json", manifest.model_dump_json(indent=2).encode())
    return manifest


def load_manifest(store_uri: str, task: Task | str, seed: int) -> Manifest:
    store, prefix = open_store(store_uri), _prefix(task, seed)
    if not store.exists(prefix + "manifest.json"):
        raise SubsetError(f"no subsets at {store.uri}/{prefix}: run build_subsets first")
    return Manifest(**json.loads(store.read_bytes(prefix + "manifest.json")))


def load_subset(store_uri: str, task: Task | str, seed: int, r: int) -> list[str]:
    """The first ``r`` instance ids of the stored ordering (checked against its manifest)."""
    manifest = load_manifest(store_uri, task, seed)
    store, prefix = open_store(store_uri), _prefix(task, seed)
    ids: list[Any] = json.loads(store.read_bytes(prefix + "order.json"))["ids"]
    if _ids_sha(ids) != manifest.order_sha256:
        raise SubsetError(f"{store.uri}/{prefix}order.json does not match its manifest")
    if not 1 <= r <= len(ids):
        raise SubsetError(f"fidelity r={r} outside 1..{len(ids)} (the stored r_max)")
    return ids[:r]
