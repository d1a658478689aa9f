"""otel-netreceiver: eBPF network monitoring that exports OpenTelemetry metrics per workload."""

__version__ = "0.1.0"
