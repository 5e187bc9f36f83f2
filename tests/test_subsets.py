"""Nested, stratified, idempotent fidelity subsets."""

from __future__ import annotations

import json

import pytest

from ecotune.subsets import SubsetError, build_subsets, load_manifest, load_subset, nested_order
from ecotune.tasks import make_task
from ecotune.tasks.base import Instance


def _insts(spec: dict[str, int]) -> list[Instance]:
    return [Instance(id=f"{s}-{i}", data={}, stratum=s) for s, n in spec.items() for i in range(n)]


def test_order_is_a_seeded_permutation_with_balanced_prefixes():
    insts = _insts({"a": 10, "b": 10, "c": 4})
    order = nested_order(insts, seed=1)
    assert sorted(order) == sorted(i.id for i in insts)
    assert order == nested_order(insts, seed=1)
    assert order != nested_order(insts, seed=2)
    first6 = [x.split("-")[0] for x in order[:6]]
    assert sorted(first6) == ["a", "a", "b", "b", "c", "c"]


def test_subsets_are_nested_and_idempotent(tmp_path):
    task = make_task({"name": "arithmetic", "n": 50})
    m1 = build_subsets(task, r_max=40, seed=3, store_uri=str(tmp_path))
    ids = {r: load_subset(str(tmp_path), task, 3, r) for r in (5, 10, 40)}
    assert ids[10][:5] == ids[5] and ids[40][:10] == ids[10]
    assert len(set(ids[40])) == 40
    order_file = tmp_path / "subsets" / "arithmetic" / "3" / "order.json"
    mtime = order_file.stat().st_mtime_ns
    m2 = build_subsets(task, r_max=40, seed=3, store_uri=str(tmp_path))
    assert m2 == m1 and order_file.stat().st_mtime_ns == mtime
    assert load_manifest(str(tmp_path), "arithmetic", 3).counts == {"all": 40}
    manifest = json.loads((order_file.parent / "manifest.json").read_text())
    assert manifest["task"] == "arithmetic" and len(manifest["order_sha256"]) == 64


def test_mmlu_subsets_cover_subjects(tmp_path):
    task = make_task({"name": "mmlu", "subjects": ["anatomy", "virology", "astronomy"]})
    build_subsets(task, r_max=30, seed=0, store_uri=str(tmp_path))
    m = load_manifest(str(tmp_path), task, 0)
    assert m.counts == {"anatomy": 10, "virology": 10, "astronomy": 10}


def test_errors(tmp_path):
    task = make_task({"name": "arithmetic", "n": 20})
    with pytest.raises(SubsetError, match="r_max=21"):
        build_subsets(task, r_max=21, seed=0, store_uri=str(tmp_path))
    with pytest.raises(SubsetError, match="build_subsets first"):
        load_subset(str(tmp_path), task, 0, 5)
    build_subsets(task, r_max=10, seed=0, store_uri=str(tmp_path))
    with pytest.raises(SubsetError, match="outside"):
        load_subset(str(tmp_path), task, 0, 11)
    with pytest.raises(SubsetError, match="different ordering"):
        build_subsets(task, r_max=12, seed=0, store_uri=str(tmp_path))
