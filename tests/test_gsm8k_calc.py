"""``gsm8k_calc`` as a registered task gives exactly what ``bench_task`` built before the move.

A benchmark table records scores of the task's prompts at positions of its nested order, so
the registered task must reproduce them byte for byte. ``BEFORE`` was computed with
``bench_task("gsm8k_calc")`` as it was (a ``jsonl`` task over ``benchmarks/data``, commit
0bf85d7), before any of this code changed: hashes over every instance's id, nested order
(three seeds), prompt at 0-8 shots and default, and scores of a set of completions.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import pytest

from ecotune.bench.collect import bench_task
from ecotune.subsets import nested_order
from ecotune.tasks import make_task
from ecotune.tasks.gsm8k_calc import CALC_DATA, SHOTS_FILE, TEST_FILE, GSM8KCalc, build_gsm8k_calc

ROOT = Path(__file__).resolve().parents[1]
GSM8K = ROOT.parent / "shared" / "data" / "gsm8k"
COMPLETIONS = [" 18", "18", " 18\n", "The answer is 18", "", " 1,800", " 18.0", " -18", "abc 18",
               " 0", " 1", " 3 ", "x"]

BEFORE = {
    "default_few_shot": 3,
    "default_max_tokens": 8,
    "helm": {"decoding": "greedy", "few_shot": 5, "length_penalty": 1.0, "max_tokens": 8,
             "repetition_penalty": 1.0},
    "ids_sha": "6eebcca507289c84d3d400a1eed636a96118e81046e587b0600161f1a66cdb78",
    "key": "gsm8k_calc",
    "metric": "accuracy",
    "n": 400,
    "name": "gsm8k_calc",
    "order0_head": [
        "calc-test-339", "calc-test-161", "calc-test-381", "calc-test-204", "calc-test-16",
        "calc-test-99", "calc-test-295", "calc-test-111",
    ],
    "order0_sha": "9d4a0a3cdcc8f187cde108207f1cdfbf7e06a9d3d976505875859beb20ccc290",
    "order1_head": [
        "calc-test-391", "calc-test-303", "calc-test-190", "calc-test-110", "calc-test-106",
        "calc-test-304", "calc-test-272", "calc-test-297",
    ],
    "order1_sha": "6ec959f66d7228a604a3f3b6cf4a686655607c7c81b650269421976d314e931e",
    "order7_head": [
        "calc-test-263", "calc-test-335", "calc-test-167", "calc-test-176", "calc-test-223",
        "calc-test-233", "calc-test-237", "calc-test-234",
    ],
    "order7_sha": "feed055d7d97d70924908d3ee0fb9660c43941e87a72c35f3a3e807413c6f049",
    "prompt_first_k3": (
        "Question: What is 48 divided by 2?\n"
        "Answer: 24\n"
        "\n"
        "Question: What is 48 plus 24?\n"
        "Answer: 72\n"
        "\n"
        "Question: What is 100 divided by 2?\n"
        "Answer: 50\n"
        "\n"
        "Question: What is 36 plus 10?\n"
        "Answer:"
    ),
    "prompts_default_sha": "feb46fa27674bff7113307d4c749629f44e30c814faaa30da7990ed370b72b74",
    "prompts_k0_sha": "12b18e2a8e7129271a04fd013fc9e6b3f45cafd9ca8fb0bfc17e79367a759193",
    "prompts_k1_sha": "d1a4ae1a2dff6bad6073a932c537d88d730e63705c944138d83500a4387ed035",
    "prompts_k2_sha": "741cab470f98e66d1c842d69b89702fb3714e8dccac368f869d39410a157d8bf",
    "prompts_k3_sha": "feb46fa27674bff7113307d4c749629f44e30c814faaa30da7990ed370b72b74",
    "prompts_k4_sha": "cb067a443997512060f82971050477d4282dcf4fa12c318583b033d785f2d564",
    "prompts_k5_sha": "da9b3f3fca6739f17829ee18111bfca2c9c2475c24a5a9851bd7cfef51bc3d78",
    "prompts_k6_sha": "496aae19da8c18f2771f45131472fd8635817449b3812543651072583ef0a7c0",
    "prompts_k7_sha": "8ce3c83efc5752436b600865d447f75c7865125d72bebf41a9707882bfeee67c",
    "prompts_k8_sha": "058c8c4d3beeeb9d9bb44d1301f10e7ef77cd157a45110809a8c08d7e017544c",
    "scores_head": [
        "111100101000010", "000000000010010", "000000000001010", "000000000000010",
        "000000000000010", "000000000000010",
    ],
    "scores_sha": "2ca95ef89daac32212d47debbcd5fd6505517440400342a779067274508a5403",
    "source_sha256": "c67b08082e0ed8f1afe9a62b05c4695f8f8d7a81fe076e06997e4d6d7ea8700c",
    "stop": ["\n"],
    "strata": ["*", "+", "-", "/"],
}


def _sha(items: list[str]) -> str:
    return hashlib.sha256("\n\x00".join(items).encode()).hexdigest()


def _snapshot(task) -> dict:
    """The same figures as ``BEFORE``, from a task."""
    insts = task.instances()
    out = {"name": task.name, "key": task.key, "metric": task.metric,
           "default_few_shot": task.default_few_shot,
           "default_max_tokens": task.default_max_tokens, "stop": task.stop_sequences,
           "source_sha256": task.source_sha256(), "n": len(insts),
           "ids_sha": _sha([i.id for i in insts]), "strata": sorted({i.stratum for i in insts})}
    for seed in (0, 1, 7):
        order = nested_order(insts, seed)
        out[f"order{seed}_sha"], out[f"order{seed}_head"] = _sha(order), order[:8]
    for k in range(9):
        out[f"prompts_k{k}_sha"] = _sha([task.build_prompt(i, {"few_shot": k}) for i in insts])
    out["prompts_default_sha"] = _sha([task.build_prompt(i, {}) for i in insts])
    first = task.instance(nested_order(insts, 0)[0])
    out["prompt_first_k3"] = task.build_prompt(first, {"few_shot": 3})
    scores = ["".join(str(int(task.score(i, c)))
                      for c in [*COMPLETIONS, " " + i.reference, i.reference + ".5"])
              for i in insts]
    out["scores_sha"], out["scores_head"] = _sha(scores), scores[:6]
    return out


def test_registered_task_is_byte_identical_to_the_recorded_one():
    want = {k: v for k, v in BEFORE.items() if k != "helm"}
    assert _snapshot(make_task("gsm8k_calc")) == want


def test_bench_task_uses_the_registered_task_with_the_same_space_and_default():
    task, space, helm, spec = bench_task("gsm8k_calc")
    assert isinstance(task, GSM8KCalc) and spec == {"name": "gsm8k_calc"}
    assert helm == BEFORE["helm"]
    assert space.params["max_tokens"].high == 32 and space.params["few_shot"].high == 5
    assert _snapshot(make_task(spec))["prompts_k5_sha"] == BEFORE["prompts_k5_sha"]


def test_the_shipped_table_was_recorded_in_this_order():
    table = ROOT / "benchmarks" / "gsm8k_calc.jsonl.gz"
    if not table.exists():
        pytest.skip("no recorded gsm8k_calc table in this checkout")
    with gzip.open(table, "rt") as f:
        head = json.loads(f.readline())
    order = nested_order(make_task("gsm8k_calc").instances(), head["seed"])
    assert head["order"] == order[: head["instances"]]


@pytest.mark.skipif(not (GSM8K / "train.jsonl").exists(), reason="no GSM8K in ../shared/data")
def test_the_task_builds_its_data_when_missing_to_the_same_bytes(tmp_path):
    task = make_task({"name": "gsm8k_calc", "data_path": str(tmp_path / "built"),
                      "source_path": str(GSM8K)})
    assert not (tmp_path / "built").exists()  # built on first use, not on construction
    assert _snapshot(task) == {k: v for k, v in BEFORE.items() if k != "helm"}
    make_task("gsm8k_calc").instances()  # the default folder, built if this checkout lacks it
    test, shots = build_gsm8k_calc(GSM8K, tmp_path / "again")  # the builder alone
    for name, path in ((TEST_FILE, test), (SHOTS_FILE, shots)):
        assert (tmp_path / "built" / name).read_bytes() == (CALC_DATA / name).read_bytes()
        assert path.read_bytes() == (CALC_DATA / name).read_bytes()
