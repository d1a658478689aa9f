"""The pod watcher against a local API server serving recorded responses.

The real `kubernetes` client (kubeconfig pointing at 127.0.0.1) lists pods, then
watches: ADDED, MODIFIED, DELETED, then an ERROR 410 Gone, after which it must relist.
The server hands out one watch event at a time when the test says so, so each step's
effect on the pod attributes is checked on its own.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from otel_netreceiver.enrich.cgroups import ContainerInfo
from otel_netreceiver.enrich.kubernetes import core_api, start_pod_metadata

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "k8s"
NODE = "nrd-node-1"
CHECKOUT = ContainerInfo("c1" * 32, "containerd", "5b0c8d6e-1f2a-4b3c-8d9e-0a1b2c3d4e5f")
REDIS = ContainerInfo("d2" * 32, "containerd", "6c1d9e7f-2a3b-4c4d-9e0f-1b2c3d4e5f60")
REPORT = ContainerInfo("f4" * 32, "", "8e3f1091-4c5d-4e6f-9012-3d4e5f607182")  # cgroupfs path
WEB = ContainerInfo("a5" * 32, "containerd", "9f402102-5d6e-4f70-8123-4e5f60718293")


class FakeApiServer:
    """Serves /api/v1/pods: recorded lists, and watch events released one by one."""

    def __init__(self, failed_lists: int = 0, events: list[bytes] | None = None) -> None:
        self.lists = [json.loads((FIXTURES / name).read_bytes())
                      for name in ("pods_list.json", "pods_relist.json")]
        self.events = events if events is not None else \
            (FIXTURES / "watch_events.jsonl").read_bytes().splitlines()
        self.failed_lists = failed_lists  # answer the first lists with 500
        self.gate = threading.Semaphore(0)
        self.closing = threading.Event()
        self.requests: list[dict] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                url = urlparse(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                fake.requests.append({"path": url.path, **query})
                if url.path != "/api/v1/pods":
                    self.send_error(404)
                elif query.get("watch") == "true":
                    fake.stream_watch(self, sum(1 for r in fake.requests if r.get("watch")))
                elif sum(1 for r in fake.requests if not r.get("watch")) <= fake.failed_lists:
                    self.send_error(500, "etcdserver: request timed out")
                else:
                    lists = sum(1 for r in fake.requests if not r.get("watch")) - fake.failed_lists
                    body = json.dumps(fake.lists[min(lists, 2) - 1]).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)

        return Handler

    def stream_watch(self, handler, number: int) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        if number == 1:  # the recorded events, each when the test releases it
            for line in self.events:
                if not self.gate.acquire(timeout=20):
                    break
                _chunk(handler, line + b"\n")
        else:  # after the relist: a quiet watch, open until the test ends
            self.closing.wait(20)
        _chunk(handler, b"")

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.closing.set()
        self.server.shutdown()
        self.server.server_close()


def _chunk(handler, data: bytes) -> None:
    try:
        handler.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        handler.wfile.flush()
    except OSError:
        pass  # the client went away


def _kubeconfig(path: Path, server: str) -> str:
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "fake",
        "clusters": [{"name": "fake", "cluster": {"server": server}}],
        "users": [{"name": "agent", "user": {"token": "recorded-not-secret"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "agent"}}],
    }))
    return str(path)


def _wait_for(condition, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def watched(tmp_path):
    with FakeApiServer() as server:
        api = core_api(_kubeconfig(tmp_path / "kubeconfig", server.url))
        store, watcher = start_pod_metadata(
            api, NODE, labels=["app", "team"], annotations=["prometheus.io/scrape"])
        try:
            yield server, store, watcher
        finally:
            server.closing.set()
            watcher.shutdown(timeout=5)


def test_pod_attributes_follow_list_watch_and_relist(watched):
    server, store, watcher = watched
    assert store.synced.is_set()
    assert store.pod_attributes(CHECKOUT) == {
        "k8s.pod.name": "checkout-7d9f8b6c5-x2k4p", "k8s.namespace.name": "shop",
        "k8s.node.name": NODE, "k8s.replicaset.name": "checkout-7d9f8b6c5",
        "k8s.deployment.name": "checkout", "k8s.pod.label.app": "checkout",
        "k8s.pod.label.team": "payments", "k8s.pod.annotation.prometheus.io/scrape": "true",
        "k8s.container.name": "app",
    }
    assert store.pod_attributes(REDIS)["k8s.statefulset.name"] == "redis"
    assert store.by_ip("10.244.1.9").attributes["k8s.pod.name"] == "redis-0"
    assert store.by_ip("198.18.40.254") is None  # host-network DaemonSet pod owns no IP
    assert store.pod_attributes(REPORT) == {}

    server.gate.release()  # ADDED: a CronJob's pod, CRI-O, cgroupfs driver
    _wait_for(lambda: store.pod_attributes(REPORT), "ADDED")
    report = store.pod_attributes(REPORT)
    assert (report["k8s.job.name"], report["k8s.cronjob.name"]) == ("report-29399040", "report")
    assert report["container.runtime"] == "cri-o"  # from the pod status: the path did not say

    server.gate.release()  # MODIFIED: label team changed
    _wait_for(lambda: store.pod_attributes(CHECKOUT)["k8s.pod.label.team"] == "checkout-squad",
              "MODIFIED")

    server.gate.release()  # DELETED: redis-0
    _wait_for(lambda: store.pod_attributes(REDIS) == {}, "DELETED")
    assert store.by_ip("10.244.1.9") is None

    server.gate.release()  # ERROR 410 Gone: the client must list again
    _wait_for(lambda: watcher.lists == 2, "relist after 410")
    assert store.pod_attributes(WEB)["k8s.deployment.name"] == "web"
    assert store.pod_attributes(CHECKOUT)["k8s.pod.label.team"] == "checkout-squad"
    _wait_for(lambda: sum(1 for r in server.requests if r.get("watch")) == 2, "second watch")

    lists = [r for r in server.requests if not r.get("watch")]
    watches = [r for r in server.requests if r.get("watch")]
    assert all(r["fieldSelector"] == f"spec.nodeName={NODE}" for r in server.requests)
    assert [r["resourceVersion"] for r in watches] == ["48250", "48320"]
    assert len(lists) == 2


def test_reconnects_after_errors_and_resumes_a_closed_watch(tmp_path):
    """A failing list is retried; a watch the server closes resumes where it was, no relist."""
    web = json.loads((FIXTURES / "pods_relist.json").read_bytes())["items"][3]
    with FakeApiServer(failed_lists=2, events=[json.dumps({"type": "ADDED", "object": web}).encode()]) \
            as server:
        api = core_api(_kubeconfig(tmp_path / "kubeconfig", server.url))
        store, watcher = start_pod_metadata(api, NODE, sync_timeout_s=10)
        try:
            assert store.synced.is_set() and watcher.lists == 1
            server.gate.release()  # one event, then the server ends the stream normally
            _wait_for(lambda: sum(1 for r in server.requests if r.get("watch")) == 2, "rewatch")
            assert store.pod_attributes(WEB)["k8s.pod.name"] == "web-5f6d7c8b9-abcde"
        finally:
            server.closing.set()
            watcher.shutdown(timeout=5)
    watches = [r["resourceVersion"] for r in server.requests if r.get("watch")]
    assert watches == ["48250", "48310"]  # resumed from the ADDED object's version
    assert sum(1 for r in server.requests if not r.get("watch")) == 3  # 2 failed + 1
