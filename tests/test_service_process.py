"""End to end: ``recsys serve`` as a real process on a real Redis follows the champion.

The service starts on a store whose champion is version 1 with its batch
lists in Redis; it answers from the cache and from the model; the champion
alias is then moved (``registry.promote_manually``, then ``registry.rollback``)
while a client keeps asking, and the new version answers without one
request failing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest
from service_harness import (
    MODEL,
    REDIS_URL,
    batch_lists,
    build_store,
    drop_prefix,
    free_port,
    redis_or_skip,
    store_env,
    unique_prefix,
)

from recsys import registry
from recsys.serving import cache

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    client = redis_or_skip()
    root = tmp_path_factory.mktemp("serve-process")
    prefix = unique_prefix()
    with store_env(root) as env:
        store = build_store(root)
        for version in (1, 2):
            lists = batch_lists(store, version, store.users[:20])
            cache.write_batch(lists, MODEL, version, REDIS_URL, prefix=prefix)
        port = free_port()
        log_path = root / "serve.log"
        with open(log_path, "w") as log_file:
            process = subprocess.Popen(
                [sys.executable, "-m", "recsys.cli", "serve", "--model", MODEL]
                + ["--port", str(port), "--redis-url", REDIS_URL, "--poll-seconds", "0.3"],
                env={**os.environ, **env, "RECSYS_CACHE_PREFIX": prefix},
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        base = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(base, process, log_path)
            yield {"base": base, "store": store, "log": log_path, "process": process}
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)
            drop_prefix(client, prefix)


def _wait_ready(base: str, process: subprocess.Popen, log_path) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"recsys serve exited {process.returncode}:\n{log_path.read_text()}")
        try:
            if httpx.get(f"{base}/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    pytest.fail(f"recsys serve not ready in 90 s:\n{log_path.read_text()}")


def _version_answering(base: str, user: object, want: int, timeout_s: float = 30) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        body = httpx.get(f"{base}/recommendations/{user}", timeout=5).json()
        if body["model_version"] == want:
            return body
        time.sleep(0.1)
    pytest.fail(f"version {want} never answered; last answer: {body}")


def test_serves_from_the_cache_and_the_model_then_follows_the_moved_alias(service):
    base, store = service["base"], service["store"]
    cached, uncached = store.users[0], store.users[60]
    assert httpx.get(f"{base}/health").json() == {"status": "ok"}
    first = httpx.get(f"{base}/recommendations/{cached}").json()
    assert (first["served_by"], first["model_version"]) == ("batch", 1)
    assert httpx.get(f"{base}/recommendations/{uncached}").json()["served_by"] == "model"

    failures: list[str] = []
    answered: list[int] = []
    stop = threading.Event()

    def keep_asking() -> None:
        with httpx.Client(base_url=base, timeout=10) as http:
            while not stop.is_set():
                answer = http.get(f"/recommendations/{uncached}")
                if answer.status_code != 200:
                    failures.append(f"{answer.status_code} {answer.text}")
                else:
                    answered.append(answer.json()["model_version"])

    asker = threading.Thread(target=keep_asking)
    asker.start()
    try:
        registry.promote_manually(2, "test: a new champion while serving", MODEL)
        moved = _version_answering(base, cached, 2)
        assert moved["served_by"] == "batch" and moved["model_type"] == "itemknn"
        expected = batch_lists(store, 2, [cached])["item_id"].tolist()
        assert [e["item_id"] for e in moved["items"]] == expected
        registry.rollback(MODEL, reason="test: back to version 1")
        back = _version_answering(base, uncached, 1)
        assert back["served_by"] == "model" and back["model_type"] == "ease"
    finally:
        stop.set()
        asker.join(timeout=30)
    assert not failures, failures[:3]
    assert {1, 2} <= set(answered)

    metrics = httpx.get(f"{base}/metrics").text
    assert 'recsys_model_reloads_total{alias="champion"} 2.0' in metrics
    assert 'recsys_model_version{alias="champion"} 1.0' in metrics
    assert "version 2 (itemknn) loaded" in service["log"].read_text()


def test_its_log_says_what_it_loaded_and_one_line_per_request(service):
    assert f"serving {MODEL} on http://127.0.0.1:" in service["log"].read_text()
    httpx.get(f"{service['base']}/recommendations/{service['store'].users[0]}")
    time.sleep(0.2)
    text = service["log"].read_text()
    assert "version 1 (ease) loaded" in text
    assert "GET /recommendations/{user_id} 200" in text
    assert "served_by=batch" in text
    assert "Traceback" not in text
