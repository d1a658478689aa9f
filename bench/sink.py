"""A null OTLP/HTTP receiver: accepts every export, keeps only counts.

It stands in for the remote Collector during benchmarks, in its own process so its CPU
is not the agent's. `python -m bench.sink PORT` serves 127.0.0.1:PORT until killed.
"""

from __future__ import annotations

import subprocess
import sys
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SINK_PORT = 43180  # bench/agent.yaml exports here


class NullHandler(BaseHTTPRequestHandler):
    """Reads the body and answers an empty ExportMetricsServiceResponse (all accepted).

    HTTP/1.1 with keep-alive, as a Collector's OTLP/HTTP receiver: the agent is not
    charged a new connection per request.
    """

    protocol_version = "HTTP/1.1"
    requests = 0
    received = 0

    def do_POST(self) -> None:  # noqa: N802 (http.server naming)
        length = int(self.headers.get("Content-Length", 0))
        NullHandler.received += len(self.rfile.read(length))
        NullHandler.requests += 1
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@contextmanager
def running(port: int = SINK_PORT):
    """The sink as a subprocess for the block."""
    proc = subprocess.Popen([sys.executable, "-m", "bench.sink", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        if proc.poll() is not None:
            raise RuntimeError(f"OTLP sink could not listen on 127.0.0.1:{port}")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait()


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), NullHandler).serve_forever()
