"""Cloud resource attributes from the OpenTelemetry resource detectors, in bounded time.

The detectors (AWS EC2/EKS with IMDSv2, GCP, Azure VM) ask link-local metadata services
that do not exist off-cloud, and some of them wait seconds for an answer. `detect_cloud`
runs the chosen detectors in parallel daemon threads and returns what arrived before the
deadline, so start-up is delayed by at most `timeout_s`. Detectors that are still waiting
are abandoned (their threads end on their own library timeouts).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from urllib.request import Request, urlopen

from otel_netreceiver.enrich.base import Attributes

log = logging.getLogger(__name__)

KNOWN_DETECTORS = ("eks", "ec2", "gcp", "azure")
_METADATA_HOSTS = ("169.254.169.254", "metadata.google.internal")
# what a cloud detector may contribute; the agent builds os.*, service.* itself
_KEPT_PREFIXES = ("cloud.", "host.", "azure.", "k8s.cluster.")
_AZURE_COMPUTE = "http://169.254.169.254/metadata/instance/compute?api-version=2021-12-13&format=json"


def _ec2():
    from opentelemetry.sdk.extension.aws.resource.ec2 import AwsEc2ResourceDetector
    return AwsEc2ResourceDetector().detect().attributes


def _eks():
    from opentelemetry.sdk.extension.aws.resource.eks import AwsEksResourceDetector
    return AwsEksResourceDetector().detect().attributes


def _gcp():
    from opentelemetry.resourcedetector.gcp_resource_detector import GoogleCloudResourceDetector
    return GoogleCloudResourceDetector().detect().attributes


def _azure():
    """The Azure VM detector, plus the account and zone it leaves out (same endpoint)."""
    from opentelemetry.resource.detector.azure.vm import AzureVMResourceDetector
    attributes = dict(AzureVMResourceDetector().detect().attributes)
    if attributes.get("cloud.provider") == "azure":
        attributes.update(_azure_extra())
    return attributes


def _azure_extra() -> Attributes:
    request = Request(_AZURE_COMPUTE, headers={"Metadata": "true"})
    with urlopen(request, timeout=1.0) as response:
        compute = json.loads(response.read())
    extra: Attributes = {"cloud.account.id": compute.get("subscriptionId", "")}
    if compute.get("zone"):
        extra["cloud.availability_zone"] = compute["zone"]
    if compute.get("resourceGroupName"):
        extra["azure.resourcegroup.name"] = compute["resourceGroupName"]
    return {k: v for k, v in extra.items() if v}


DETECTORS: dict[str, Callable[[], Mapping]] = {"ec2": _ec2, "eks": _eks, "gcp": _gcp, "azure": _azure}


def detect_cloud(
    detectors: Sequence[str] = KNOWN_DETECTORS,
    timeout_s: float = 2.0,
    registry: Mapping[str, Callable[[], Mapping]] = DETECTORS,
) -> Attributes:
    """Cloud and host attributes from the first detectors that answer within `timeout_s`.

    Like the Collector's resourcedetection processor, when two detectors set the same
    attribute the one listed first wins (so "eks" before "ec2" gives cloud.platform
    aws_eks with EC2's region and zone). Unknown detector names raise ValueError.
    """
    unknown = [name for name in detectors if name not in registry]
    if unknown:
        raise ValueError(f"unknown cloud detector(s) {', '.join(unknown)}; "
                         f"known: {', '.join(sorted(registry))}")
    _bypass_proxies()
    results: dict[str, Mapping] = {}
    threads = [_start(name, registry[name], results) for name in detectors]
    deadline = time.monotonic() + timeout_s
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    late = [t.name for t in threads if t.is_alive()]
    if late:
        log.info("cloud detectors without an answer after %.1fs: %s", timeout_s, ", ".join(late))
    return _merge([results.get(name, {}) for name in detectors])


def _start(name: str, detect: Callable[[], Mapping], results: dict) -> threading.Thread:
    def run() -> None:
        try:
            results[name] = dict(detect())
        except Exception as err:  # noqa: BLE001 - off-cloud, detectors fail in many ways
            log.debug("cloud detector %s found nothing: %s", name, err)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return thread


def _merge(found: Sequence[Mapping]) -> Attributes:
    merged: Attributes = {}
    for attributes in found:
        for key, value in attributes.items():
            if key.startswith(_KEPT_PREFIXES) and value not in ("", None) and key not in merged:
                merged[key] = value
    return merged


def _bypass_proxies() -> None:
    """Metadata services are link-local: never ask them through an HTTP proxy."""
    for variable in ("no_proxy", "NO_PROXY"):
        present = [h for h in os.environ.get(variable, "").split(",") if h]
        missing = [h for h in _METADATA_HOSTS if h not in present]
        if missing:
            os.environ[variable] = ",".join(present + missing)
