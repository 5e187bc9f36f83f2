"""start_engine and the exit handler's stop through ``python_func``, on a loopback
Kubernetes API found through ``KUBECONFIG`` (the components load their own config)."""

import json

import pytest

from components.finalize_study import finalize_study
from components.start_engine import start_engine
from components.testing import final_status, study_config
from ecotune.run_engine import engine_name
from ecotune.testing.kube import KubeApi


def gpu_study() -> dict:
    cfg = study_config()
    cfg["engine"] = {"type": "gpuEvaluator", "base_url": "", "served_model_name": "fake-model",
                     "gpu_evaluator": {"accelerator_label": "nvidia.com/gpu.product",
                                       "accelerator_type": "NVIDIA-H100", "gpu_count": 1,
                                       "startup_timeout_s": 5}}
    cfg["kfp"] = {"namespace": "ml", "image_pull_secrets": ["regcred"]}
    return cfg


@pytest.fixture
def kube(tmp_path, monkeypatch):
    with KubeApi(ready_after=1) as api:
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        monkeypatch.setenv("KUBECONFIG", str(api.write_kubeconfig(tmp_path / "kubeconfig")))
        yield api


def test_start_engine_creates_it_and_finalize_deletes_it(kube, prepared):
    cfg = gpu_study()
    url = start_engine.python_func(study=cfg, run_key="run-0")
    name = engine_name("unit", "run-0")
    assert url == f"http://{name}.ml.svc.cluster.local:8000"
    assert set(kube.objects) == {("ml", "deployments", name), ("ml", "services", name)}
    dep = kube.objects[("ml", "deployments", name)]
    pod = dep["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100"}
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    # the exit handler of the same run deletes it, succeeded or not
    _, journal, _ = prepared
    base, key = journal.rsplit("/", 1)
    start_engine.python_func(study=cfg, run_key=key)
    assert len(kube.objects) == 4
    summary = json.loads(finalize_study.python_func(
        study=cfg, journal_uri=base, engine_url="", status=final_status("FAILED"),
        run_key=key, stop_engine=True))
    assert summary["state"] == "FAILED"
    assert set(kube.objects) == {("ml", "deployments", name), ("ml", "services", name)}


def test_start_engine_fails_clearly_when_never_ready(tmp_path, monkeypatch):
    with KubeApi(ready_after=0) as api:
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        monkeypatch.setenv("KUBECONFIG", str(api.write_kubeconfig(tmp_path / "kc")))
        cfg = gpu_study()
        cfg["engine"]["gpu_evaluator"]["startup_timeout_s"] = 0.5
        with pytest.raises(TimeoutError, match="not ready"):
            start_engine.python_func(study=cfg, run_key="run-1")


def test_the_exit_handler_deletes_the_engine_even_when_the_journal_is_unreadable(kube,
                                                                                   tmp_path):
    cfg = gpu_study()
    start_engine.python_func(study=cfg, run_key="run-9")
    assert len(kube.objects) == 2
    bad = tmp_path / "journal-is-a-dir"
    (bad / "run-9").mkdir(parents=True)  # the run's journal path cannot be read as a file
    with pytest.raises(IsADirectoryError):
        finalize_study.python_func(study=cfg, journal_uri=str(bad), engine_url="",
                                   status=final_status("FAILED"), run_key="run-9",
                                   stop_engine=True)
    assert kube.objects == {}
