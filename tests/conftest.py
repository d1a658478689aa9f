import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def pytest_collection_modifyitems(config, items):
    """Kernel and e2e tests need root; elsewhere they are skipped, saying why."""
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root to load eBPF programs and make namespaces")
    for item in items:
        if "kernel" in item.keywords or "e2e" in item.keywords:
            item.add_marker(skip)
