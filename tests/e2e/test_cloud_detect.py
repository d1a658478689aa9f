"""Cloud detection with the real detector libraries against fake metadata services.

Each test makes a network namespace of its own where 169.254.169.254 sits on the
loopback interface (and /etc/netns/<ns>/hosts names metadata.google.internal), runs a
fake metadata server there answering as AWS IMDSv2, GCP or Azure from recorded
responses, and runs `detect_cloud` in a subprocess inside that namespace. Nothing is
ever sent to the real link-local address. Run as a script, this file is the server.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from urllib.parse import urlparse

import pytest

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "cloud"
PYTHON = str(REPO / ".venv" / "bin" / "python")
TOKEN = "AQAEAJ-recorded-imdsv2-token=="

pytestmark = pytest.mark.e2e


# --- the fake metadata service (runs inside the namespace) -------------------------------

def _answers(provider: str, handler) -> tuple[int, bytes]:
    """(status, body) for one request, as the provider's metadata service answers."""
    url, headers = urlparse(handler.path), handler.headers
    if provider == "aws":
        if handler.command == "PUT" and url.path == "/latest/api/token":
            ok = headers.get("X-aws-ec2-metadata-token-ttl-seconds")
            return (200, TOKEN.encode()) if ok else (400, b"")
        if headers.get("X-aws-ec2-metadata-token") != TOKEN:
            return 401, b""  # IMDSv2 only: no token, no data
        files = {"/latest/dynamic/instance-identity/document": "aws_identity.json",
                 "/latest/meta-data/hostname": "aws_hostname.txt"}
    elif provider == "gcp":
        if headers.get("Metadata-Flavor") != "Google":
            return 403, b""
        files = {"/computeMetadata/v1/": "gcp_metadata.json",
                 "/computeMetadata/v1/instance/": "gcp_metadata.json"}
    else:
        if (headers.get("Metadata") or "").lower() != "true":
            return 400, b""
        files = {"/metadata/instance/compute": "azure_compute.json"}
    name = files.get(url.path)
    return (200, (FIXTURES / name).read_bytes()) if name else (404, b"")


def serve(provider: str) -> None:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _answer(self):
            status, body = _answers(provider, self)
            self.send_response(status)
            if provider == "gcp":
                self.send_header("Metadata-Flavor", "Google")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_PUT = _answer

    server = HTTPServer(("169.254.169.254", 80), Handler)
    print("ready", flush=True)
    server.serve_forever()


# --- namespaces and the detection subprocess ---------------------------------------------

def _sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


@contextmanager
def metadata_namespace(provider: str | None):
    """A namespace with 169.254.169.254 on lo; `provider` answers there, None drops SYNs."""
    name = f"nrd{secrets.token_hex(2)}m"
    etc = Path("/etc/netns") / name
    server = None
    try:
        _sh("ip", "netns", "add", name)
        _sh("ip", "netns", "exec", name, "ip", "link", "set", "lo", "up")
        _sh("ip", "netns", "exec", name, "ip", "addr", "add", "169.254.169.254/32", "dev", "lo")
        etc.mkdir(parents=True)
        (etc / "hosts").write_text("127.0.0.1 localhost\n169.254.169.254 metadata.google.internal\n")
        if provider is None:  # nothing answers: connects hang until the client gives up
            _sh("ip", "netns", "exec", name, "iptables", "-A", "INPUT", "-p", "tcp",
                "--dport", "80", "-j", "DROP")
        else:
            server = subprocess.Popen(
                ["ip", "netns", "exec", name, PYTHON, __file__, "serve", provider],
                stdout=subprocess.PIPE, text=True, env=_clean_env())
            assert server.stdout.readline().strip() == "ready"
        yield name
    finally:
        if server is not None:
            server.kill()
            server.wait(5)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
        shutil.rmtree(etc, ignore_errors=True)


def _clean_env() -> dict:
    """No proxies and no hints of Kubernetes/FaaS from the test runner's environment."""
    drop = ("proxy", "KUBERNETES_", "K_CONFIGURATION", "FUNCTION_TARGET", "GAE_")
    env = {k: v for k, v in os.environ.items() if not any(d in k for d in drop)}
    env["PYTHONPATH"] = str(REPO)
    return env


DETECT = """
import json, sys, threading, time
from otel_netreceiver.enrich.cloud import detect_cloud
started = time.monotonic()
attributes = detect_cloud(sys.argv[1].split(","), float(sys.argv[2]))
elapsed = time.monotonic() - started
waiting = sorted(t.name for t in threading.enumerate() if t.name in sys.argv[1].split(","))
print(json.dumps({"attributes": attributes, "elapsed": elapsed, "waiting": waiting}))
"""


def detect_in(namespace: str, detectors: str, timeout_s: float) -> dict:
    result = subprocess.run(
        ["ip", "netns", "exec", namespace, PYTHON, "-c", DETECT, detectors, str(timeout_s)],
        capture_output=True, text=True, env=_clean_env(), timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


ALL = "eks,ec2,gcp,azure"
AWS = {
    "cloud.provider": "aws", "cloud.platform": "aws_ec2", "cloud.region": "eu-west-1",
    "cloud.availability_zone": "eu-west-1b", "cloud.account.id": "123456789012",
    "host.id": "i-0f1e2d3c4b5a69788", "host.type": "m6i.large",
    "host.name": "ip-172-31-20-117.eu-west-1.compute.internal",
}
GCP = {
    "cloud.provider": "gcp", "cloud.platform": "gcp_compute_engine",
    "cloud.region": "europe-west4", "cloud.availability_zone": "europe-west4-a",
    "cloud.account.id": "demo-project-4711", "host.id": "4520031799277581759",
    "host.name": "netreceiver-1", "host.type": "projects/830911234567/machineTypes/e2-standard-2",
}
AZURE = {
    "cloud.provider": "azure", "cloud.platform": "azure_vm", "cloud.region": "westeurope",
    "cloud.availability_zone": "2", "cloud.account.id": "0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b",
    "cloud.resource_id": "/subscriptions/0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b/resourceGroups/"
                         "rg-observability/providers/Microsoft.Compute/virtualMachines/netreceiver-vm-1",
    "host.id": "5c08b38e-4d57-4c23-ac45-aca61037f084", "host.name": "netreceiver-vm-1",
    "host.type": "Standard_D2s_v5", "azure.vm.sku": "12-gen2",
    "azure.resourcegroup.name": "rg-observability",
}


@pytest.mark.parametrize("provider, expected", [("aws", AWS), ("gcp", GCP), ("azure", AZURE)])
def test_detectors_read_the_metadata_service(provider, expected):
    with metadata_namespace(provider) as namespace:
        found = detect_in(namespace, ALL, timeout_s=5.0)
    assert found["attributes"] == expected


def test_nothing_answering_delays_start_by_at_most_the_timeout():
    timeout_s = 1.0
    with metadata_namespace(None) as namespace:
        found = detect_in(namespace, ALL, timeout_s)
    assert found["attributes"] == {}
    # GCP's client alone would wait 2 s for the connect: the deadline cut it off
    assert "gcp" in found["waiting"]
    assert found["elapsed"] <= timeout_s + 0.25


if __name__ == "__main__" and sys.argv[1:2] == ["serve"]:
    serve(sys.argv[2])
