"""OTLP metrics receivers for tests: gRPC (generated stubs of opentelemetry-proto) and HTTP.

Both keep every ExportMetricsServiceRequest they receive; `points()` flattens them into
rows a test can filter and compare with ground truth.
"""

from __future__ import annotations

import gzip
import threading
import time
from concurrent import futures
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc


@dataclass
class PointRow:
    """One received data point with everything around it."""

    resource: dict
    scope: str
    name: str
    description: str
    unit: str
    kind: str  # sum, gauge, histogram
    monotonic: bool
    temporality: int  # 1 delta, 2 cumulative (0 for gauges)
    attributes: dict
    start_ns: int
    time_ns: int
    value: float | int | None
    count: int | None = None
    buckets: tuple = ()
    bounds: tuple = ()


def _any_value(value):
    field = value.WhichOneof("value")
    return getattr(value, field) if field else None


def _attributes(key_values) -> dict:
    return {kv.key: _any_value(kv.value) for kv in key_values}


class Received:
    """Thread-safe list of requests, plus the headers that came with them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: list = []
        self.headers: list[dict] = []

    def add(self, request, headers: dict) -> None:
        with self._lock:
            self.requests.append(request)
            self.headers.append(headers)

    def points(self) -> list[PointRow]:
        with self._lock:
            requests = list(self.requests)
        return [row for request in requests for row in _rows(request)]

    def wait_for(self, predicate, timeout_s: float = 60.0) -> list[PointRow]:
        """Poll until predicate(points) is true; returns the points (asserts on timeout)."""
        deadline = time.monotonic() + timeout_s
        while True:
            points = self.points()
            if predicate(points):
                return points
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met within {timeout_s}s; {len(points)} points received")
            time.sleep(0.2)


def _rows(request):
    for rm in request.resource_metrics:
        resource = _attributes(rm.resource.attributes)
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                yield from _metric_rows(resource, sm.scope.name, metric)


def _metric_rows(resource, scope, metric):
    kind = metric.WhichOneof("data")
    data = getattr(metric, kind)
    temporality = getattr(data, "aggregation_temporality", 0)
    monotonic = getattr(data, "is_monotonic", False)
    for p in data.data_points:
        common = dict(resource=resource, scope=scope, name=metric.name, description=metric.description,
                      unit=metric.unit, kind=kind,
                      monotonic=monotonic, temporality=temporality, attributes=_attributes(p.attributes),
                      start_ns=p.start_time_unix_nano, time_ns=p.time_unix_nano)
        if kind == "histogram":
            yield PointRow(**common, value=p.sum, count=p.count, buckets=tuple(p.bucket_counts),
                           bounds=tuple(p.explicit_bounds))
        else:
            yield PointRow(**common, value=getattr(p, p.WhichOneof("value")))


class _Servicer(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, received: Received) -> None:
        self.received = received

    def Export(self, request, context):
        self.received.add(request, dict(context.invocation_metadata()))
        return metrics_service_pb2.ExportMetricsServiceResponse()


@dataclass
class TlsFiles:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate (PEM files)."""

    ca: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str


def make_tls_files(directory) -> TlsFiles:
    """Generate a throwaway CA and certificates with the openssl command."""
    import subprocess
    from pathlib import Path

    d = Path(directory)

    def run(*argv):
        subprocess.run(["openssl", *argv], check=True, capture_output=True, cwd=d)
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=test-ca",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout", "ca.key", "-out", "ca.pem")
    common = "authorityKeyIdentifier=keyid\nsubjectKeyIdentifier=hash\nbasicConstraints=CA:FALSE\n" \
             "keyUsage=critical,digitalSignature,keyEncipherment"
    for name, extension in (("server", f"{common}\nextendedKeyUsage=serverAuth\n"
                                       "subjectAltName=IP:127.0.0.1,DNS:localhost"),
                            ("client", f"{common}\nextendedKeyUsage=clientAuth")):
        run("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", f"{name}.key",
            "-out", f"{name}.csr")
        (d / f"{name}.ext").write_text(extension + "\n")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "1", "-extfile", f"{name}.ext", "-out", f"{name}.pem")
    return TlsFiles(str(d / "ca.pem"), str(d / "server.pem"), str(d / "server.key"),
                    str(d / "client.pem"), str(d / "client.key"))


class GrpcReceiver:
    """An OTLP/gRPC server on 127.0.0.1 and a free port; a `with` block.

    With `tls`, it serves TLS and requires a client certificate signed by the CA.
    """

    def __init__(self, tls: TlsFiles | None = None) -> None:
        self.received = Received()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(_Servicer(self.received), self._server)
        if tls is None:
            self.port = self._server.add_insecure_port("127.0.0.1:0")
            self.endpoint = f"http://127.0.0.1:{self.port}"
            return
        read = lambda path: open(path, "rb").read()  # noqa: E731
        credentials = grpc.ssl_server_credentials([(read(tls.server_key), read(tls.server_cert))],
                                                  root_certificates=read(tls.ca), require_client_auth=True)
        self.port = self._server.add_secure_port("127.0.0.1:0", credentials)
        self.endpoint = f"https://127.0.0.1:{self.port}"

    def __enter__(self):
        self._server.start()
        return self

    def __exit__(self, *exc):
        self._server.stop(grace=None)


class HttpReceiver:
    """An OTLP/HTTP (protobuf) server on 127.0.0.1 and a free port; a `with` block.

    With `tls`, it serves HTTPS and requires a client certificate signed by the CA.
    """

    def __init__(self, tls: TlsFiles | None = None) -> None:
        self.received = received = Received()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                request = metrics_service_pb2.ExportMetricsServiceRequest.FromString(body)
                received.add(request, {k.lower(): v for k, v in self.headers.items()} | {"path": self.path})
                reply = metrics_service_pb2.ExportMetricsServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        if tls is not None:
            import ssl
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=tls.ca)
            context.load_cert_chain(tls.server_cert, tls.server_key)
            context.verify_mode = ssl.CERT_REQUIRED
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
            self.endpoint = f"https://127.0.0.1:{self.port}"

    def __enter__(self):
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()
