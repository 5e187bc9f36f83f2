"""S3Store, the S3 journal and the sampler against a real local S3 server (SeaweedFS)."""

from __future__ import annotations

import uuid

import pytest

pytestmark = pytest.mark.integration


@pytest.fixture()
def s3_uri(s3_server):
    return f"s3://{s3_server['bucket']}/t-{uuid.uuid4().hex[:8]}"


def test_store_round_trip(s3_uri):
    from ecotune.storage import open_store

    store = open_store(s3_uri)
    assert store.list() == [] and not store.exists("a/b.json")
    store.write_bytes("a/b.json", b'{"x": 1}')
    store.write_bytes("a/c.json", b"2")
    store.write_bytes("z.txt", b"")
    assert store.read_bytes("a/b.json") == b'{"x": 1}'
    assert store.exists("a/b.json") and store.read_bytes("z.txt") == b""
    assert store.list("a/") == ["a/b.json", "a/c.json"]
    assert store.list() == ["a/b.json", "a/c.json", "z.txt"]
    with pytest.raises(FileNotFoundError):
        store.read_bytes("missing")


def test_missing_bucket_and_create(s3_server):
    from ecotune.s3 import S3Error, S3Store

    name = f"nb-{uuid.uuid4().hex[:10]}"
    with pytest.raises(S3Error, match=f"bucket '{name}' does not exist"):
        S3Store.from_uri(f"s3://{name}/p").read_bytes("x")
    store = S3Store.from_uri(f"s3://{name}/p", create_bucket=True)
    store.write_bytes("k", b"v")
    assert store.read_bytes("k") == b"v"


def test_bad_credentials_and_unreachable_endpoint(s3_server, monkeypatch):
    from ecotune.s3 import S3Error, S3Store

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
    with pytest.raises(S3Error, match="refused the credentials") as e:
        S3Store.from_uri(f"s3://{s3_server['bucket']}/x", max_attempts=1).list()
    assert "wrong-secret" not in str(e.value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    with pytest.raises(S3Error, match="cannot reach S3 endpoint http://127.0.0.1:9"):
        S3Store.from_uri(f"s3://{s3_server['bucket']}/x", max_attempts=1).list()
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(var)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(S3Error, match="no S3 credentials"):
        S3Store.from_uri(f"s3://{s3_server['bucket']}/x")


def test_journal_on_s3(s3_uri):
    from ecotune.journal import open_journal

    j = open_journal(s3_uri + "/journal")
    j.append({"type": "study", "key": "study", "name": "demo"})
    j.append({"type": "ask", "key": "ask:0", "trial": {"id": 0}})
    j.append({"type": "ask", "key": "ask:0", "trial": {"id": 99}})  # duplicate key: ignored
    j.append({"type": "tell", "key": "tell:0", "trial_id": 0, "result": {"score": 0.5}})
    recs = open_journal(s3_uri + "/journal").records()
    assert [r["key"] for r in recs] == ["study", "ask:0", "tell:0"]
    assert recs[1]["trial"]["id"] == 0


def test_sampler_on_s3_is_idempotent(s3_uri):
    from ecotune.storage import open_store
    from ecotune.subsets import build_subsets, load_subset
    from ecotune.tasks import make_task

    task = make_task({"name": "arithmetic", "n": 30})
    m1 = build_subsets(task, r_max=20, seed=7, store_uri=s3_uri)
    keys = open_store(s3_uri).list("subsets/")
    assert keys == ["subsets/arithmetic/7/manifest.json", "subsets/arithmetic/7/order.json"]
    m2 = build_subsets(task, r_max=20, seed=7, store_uri=s3_uri)
    assert m1 == m2  # created_at unchanged: nothing was rewritten
    small, big = load_subset(s3_uri, task, 7, 5), load_subset(s3_uri, task, 7, 20)
    assert big[:5] == small and len(set(big)) == 20


def test_task_data_from_s3(s3_uri):
    import json

    from ecotune.storage import open_store
    from ecotune.tasks import TaskDataError, make_task

    store = open_store(s3_uri)
    store.write_bytes("data/d.jsonl", b"".join(
        json.dumps({"q": f"{i}+1", "a": str(i + 1)}).encode() + b"\n" for i in range(5)))
    task = make_task(dict(name="jsonl", data_path=f"{s3_uri}/data/d.jsonl", prompt_template="{q}=",
                          reference_field="a", scorer="numeric"))
    assert [i.reference for i in task.instances()] == ["1", "2", "3", "4", "5"]
    with pytest.raises(TaskDataError, match="not found"):
        make_task(dict(name="jsonl", data_path=f"{s3_uri}/data/none.jsonl", prompt_template="{q}",
                       reference_field="a")).instances()


def test_a_recurring_run_finds_the_previous_run_on_s3(s3_uri):
    """``#after=latest`` on S3: the run keys under the study's journal prefix, newest first
    record wins; a continued run's pointer counts as its run."""
    import time

    from ecotune.continuation import LATEST, continuation_uri, latest_run_key, run_journal
    from ecotune.journal import open_journal

    prefix = f"{s3_uri}/journal"
    assert latest_run_key(prefix, "run-1") is None
    assert run_journal(continuation_uri(prefix, LATEST), "run-1") == f"{prefix}/run-1"
    open_journal(f"{prefix}/run-1").append({"type": "study", "key": "study"})
    open_journal(f"{prefix}/run-1").append({"type": "round", "key": "round:0",
                                            "decision": "stop", "stop_reason": "max_rounds"})
    time.sleep(0.01)
    # run-2 continues run-1 (it stopped for want of rounds)
    assert run_journal(continuation_uri(prefix, LATEST), "run-2") == f"{prefix}/run-1#run=run-2"
    assert open_journal(f"{prefix}/run-2").first()["type"] == "continued"
    assert latest_run_key(prefix, "run-3") == "run-2"
    assert latest_run_key(prefix, "run-2") == "run-1"
