"""evaluate_trial through ``python_func`` on a sampled local study with a FakeEngine."""

from components.evaluate_trial import evaluate_trial, evaluate_trial_gpu_op
from components.images import EVALUATOR_IMAGE
from components.testing import ask, evaluate
from ecotune.journal import open_journal


def test_the_gpu_variant_is_the_same_function_in_the_evaluator_image():
    assert evaluate_trial_gpu_op.python_func is evaluate_trial.python_func
    assert evaluate_trial_gpu_op.component_spec.implementation.container.image == \
        EVALUATOR_IMAGE


def test_evaluator_accepts_float_ids_from_the_local_runner(prepared):
    cfg, journal, manifest = prepared
    [item] = ask(cfg, journal, manifest, 1)
    assert evaluate(cfg, {**item, "trial_id": float(item["trial_id"])}) in ("complete", "partial")
    assert evaluate(cfg, item) == "already-told"


def test_evaluator_tells_once(prepared):
    cfg, journal, manifest = prepared
    [item] = ask(cfg, journal, manifest, 1)
    assert evaluate(cfg, item) in ("complete", "partial")
    assert evaluate(cfg, item) == "already-told"
    recs = open_journal(journal).records()
    tells = [r for r in recs if r["type"] == "tell"]
    insts = [r for r in recs if r["type"] == "instance"]
    assert len(tells) == 1 and tells[0]["result"]["n_evaluated"] == len(insts) > 0
    assert tells[0]["result"]["prompt_tokens"] == sum(r["prompt_tokens"] for r in insts)


def test_evaluator_failure_is_told_as_failed(prepared):
    cfg, journal, manifest = prepared
    [item] = ask(cfg, journal, manifest, 1)
    assert evaluate(cfg, item, engine_url="http://127.0.0.1:9") == "failed"
