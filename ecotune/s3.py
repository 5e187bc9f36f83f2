"""An S3 (or S3-compatible: MinIO, SeaweedFS, Ceph) :class:`~ecotune.storage.Store`.

Imported only when an ``s3://`` URI is opened, so the core never loads boto3. Credentials
come from the usual AWS chain (env, profile, instance role); the endpoint from
``ECOTUNE_S3_ENDPOINT_URL``, ``AWS_ENDPOINT_URL_S3``, ``AWS_ENDPOINT_URL`` or
``MLFLOW_S3_ENDPOINT_URL`` (first set wins). Errors name the bucket and endpoint, never keys.
"""

from __future__ import annotations

import os
from typing import Any

_ENDPOINT_ENV = ("ECOTUNE_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL",
                 "MLFLOW_S3_ENDPOINT_URL")


class S3Error(RuntimeError):
    """S3 is misconfigured or unreachable (message says which and what to set)."""


def endpoint_from_env() -> str | None:
    for name in _ENDPOINT_ENV:
        if os.environ.get(name):
            return os.environ[name]
    return None


def parse_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` -> ``("bucket", "a/b/")``."""
    if not uri.startswith("s3://"):
        raise ValueError(f"not an s3:// URI: {uri!r}")
    bucket, _, prefix = uri[5:].partition("/")
    if not bucket:
        raise ValueError(f"no bucket in {uri!r}")
    prefix = prefix.strip("/")
    return bucket, (prefix + "/" if prefix else "")


class S3Store:
    """Keys under ``s3://bucket/prefix``; each ``write_bytes`` is one atomic PUT.

    Example:
        >>> store = S3Store.from_uri("s3://ecotune/studies/demo")  # doctest: +SKIP
        >>> store.write_bytes("a.json", b"{}"); store.list("")
        ['a.json']
    """

    def __init__(self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None,
                 region: str | None = None, create_bucket: bool = False, max_attempts: int = 10,
                 client: Any = None):
        self.bucket, self.prefix = bucket, prefix
        self.endpoint_url = endpoint_url or endpoint_from_env()
        self.uri = f"s3://{bucket}/{prefix}".rstrip("/")
        self._client = client or self._make_client(region, max_attempts)
        self._checked = False
        if create_bucket:
            self.ensure_bucket(create=True)

    @classmethod
    def from_uri(cls, uri: str, **kwargs: Any) -> S3Store:
        bucket, prefix = parse_uri(uri)
        return cls(bucket, prefix, **kwargs)

    def _make_client(self, region: str | None, max_attempts: int) -> Any:
        try:
            import boto3
            from botocore.config import Config
        except ImportError as e:  # pragma: no cover
            raise S3Error("s3:// URIs need boto3: pip install 'ecotune[s3]'") from e
        session = boto3.session.Session()
        if session.get_credentials() is None:
            raise S3Error("no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                          "(or a profile / role)")
        cfg = Config(retries={"max_attempts": max_attempts, "mode": "adaptive"},
                     connect_timeout=5, read_timeout=30, s3={"addressing_style": "path"})
        return session.client("s3", endpoint_url=self.endpoint_url, config=cfg,
                              region_name=region or session.region_name or "us-east-1")

    # -- error translation -----------------------------------------------------------------
    def _fail(self, e: Exception, key: str | None = None) -> Exception:
        from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

        where = f"{self.uri}/{key}" if key else self.uri
        if isinstance(e, EndpointConnectionError):
            return S3Error(f"cannot reach S3 endpoint {self.endpoint_url or 'AWS'} ({where})")
        if isinstance(e, NoCredentialsError):
            return S3Error("no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
        if isinstance(e, ClientError):
            code = e.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404", "NotFound"):
                return FileNotFoundError(where)
            if code == "NoSuchBucket":
                return S3Error(f"bucket {self.bucket!r} does not exist at "
                               f"{self.endpoint_url or 'AWS'}; create it or pass create_bucket=True")
            if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403"):
                return S3Error(f"S3 refused the credentials for {where} ({code})")
            return S3Error(f"S3 error {code} on {where}")
        return e

    def ensure_bucket(self, create: bool = False) -> None:
        """Check the bucket exists; create it when ``create`` (else :class:`S3Error`)."""
        from botocore.exceptions import ClientError

        try:
            self._client.head_bucket(Bucket=self.bucket)
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code", "")
            if code not in ("404", "NoSuchBucket", "NotFound"):
                raise self._fail(e) from None
            if not create:
                raise S3Error(f"bucket {self.bucket!r} does not exist") from None
            try:
                self._client.create_bucket(Bucket=self.bucket)
            except Exception as e2:  # noqa: BLE001
                raise self._fail(e2) from None
        except Exception as e:  # noqa: BLE001
            raise self._fail(e) from None
        self._checked = True

    # -- Store protocol --------------------------------------------------------------------
    def read_bytes(self, key: str) -> bytes:
        try:
            return self._client.get_object(Bucket=self.bucket, Key=self.prefix + key)["Body"].read()
        except Exception as e:  # noqa: BLE001
            raise self._fail(e, key) from None

    def write_bytes(self, key: str, data: bytes) -> None:
        try:
            self._client.put_object(Bucket=self.bucket, Key=self.prefix + key, Body=data)
        except Exception as e:  # noqa: BLE001
            raise self._fail(e, key) from None

    def exists(self, key: str) -> bool:
        try:
            self._client.head_object(Bucket=self.bucket, Key=self.prefix + key)
            return True
        except Exception as e:  # noqa: BLE001
            err = self._fail(e, key)
            if isinstance(err, FileNotFoundError):
                return False
            raise err from None

    def list(self, prefix: str = "") -> list[str]:
        keys: list[str] = []
        try:
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix + prefix)
            for page in pages:
                keys += [o["Key"][len(self.prefix):] for o in page.get("Contents", [])]
        except Exception as e:  # noqa: BLE001
            raise self._fail(e) from None
        return sorted(keys)
