"""Process-wide CPU settings: OpenMP's spin before sleeping, and freed host memory kept."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from debias_pipeline.training.device import keep_freed_host_memory, resolve_device


def spin_count_after_import(**env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    code = "import os, debias_pipeline; print(os.environ.get('GOMP_SPINCOUNT', 'unset'))"
    return subprocess.run([sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True, check=True).stdout.strip()


def test_importing_the_package_shortens_openmp_spinning_unless_the_user_chose() -> None:
    assert spin_count_after_import() == "2000"
    assert spin_count_after_import(GOMP_SPINCOUNT="7") == "7"
    assert spin_count_after_import(OMP_WAIT_POLICY="ACTIVE") == "unset"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_resolving_the_device_keeps_freed_host_memory_in_the_heap() -> None:
    resolve_device("cpu")
    assert keep_freed_host_memory.cache_info().currsize == 1  # done, once per process
    assert keep_freed_host_memory() is True  # both mallopt calls took
