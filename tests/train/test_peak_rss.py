"""A training's peak_rss_gb is its own: ``ftcot run`` runs many stages in one process, and the lifetime peak
(ru_maxrss) made every later training report the largest earlier one (SmolLM2 trained on 5 examples: 9.8 GB)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = """
from ftcot.train.progress import peak_rss_gb, reset_peak_rss
block = bytearray(600_000_000)
block[::4096] = b"x" * len(block[::4096])  # touch every page so it is resident
before = peak_rss_gb()
del block
reset_peak_rss()
print(before, peak_rss_gb())
"""


@pytest.mark.skipif(not os.access("/proc/self/clear_refs", os.W_OK), reason="Linux's clear_refs is not writable here")
def test_the_peak_starts_over_at_each_training():
    # A fresh interpreter: this test process's own peak depends on whatever ran before it.
    before, after = map(float, subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                                              check=True).stdout.split())
    assert before > 0.6 and after < 0.4
