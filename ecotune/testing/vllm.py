"""A local vLLM server for integration tests, shared by every fixture in one process.

``start_local_vllm()`` yields the base URL of a server that serves the embedded model
(``smollm2-135m-instruct``). If ``ECOTUNE_VLLM_URL`` is set, that server is used and nothing
is started. Otherwise one server is started on first use and reference-counted, so two
session fixtures (say ``tests/conftest.py`` and ``tests/conftest.py``) share it
instead of paying the ~40 s start twice.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from ecotune.serve_local import SERVED_MODEL_NAME, LocalVLLM, prepare_model

ENV_URL = "ECOTUNE_VLLM_URL"
MODEL = SERVED_MODEL_NAME

_lock = threading.Lock()
_server: LocalVLLM | None = None
_users = 0


@contextmanager
def start_local_vllm(max_model_len: int = 2048) -> Iterator[str]:
    """Yield the base URL (``http://127.0.0.1:PORT``) of a running local vLLM.

    Raises:
        ecotune.serve_local.ServeError: the model could not be prepared or the server
            did not come up (the message includes the tail of its log).
    """
    global _server, _users
    url = os.environ.get(ENV_URL)
    if url:
        yield url.rstrip("/").removesuffix("/v1")
        return
    with _lock:
        if _server is None:
            server = LocalVLLM(prepare_model(), port=None, max_model_len=max_model_len)
            server.start()
            _server = server
        _users += 1
        base_url = _server.base_url
    try:
        yield base_url
    finally:
        with _lock:
            _users -= 1
            if _users == 0 and _server is not None:
                _server.stop()
                _server = None
