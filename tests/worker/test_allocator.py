"""The worker raises glibc's malloc thresholds, unless the environment already sets them."""

import ctypes
import ctypes.util
import sys

import pytest

from worker.allocator import tune_malloc


@pytest.mark.skipif(sys.platform != "linux" or not ctypes.util.find_library("c"), reason="glibc only")
def test_tuning_applies_on_glibc_and_leaves_an_environment_setting_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    assert tune_malloc() is True
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")
    assert tune_malloc() is False
