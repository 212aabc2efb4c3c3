"""io_uring_unavailable - ringmta says why it cannot run, in one line.

Covers: the start-up contract of the core issue: when io_uring cannot be
set up (here: the real sysctl kernel.io_uring_disabled=2, which makes
io_uring_setup fail with EPERM for every process), ringmta exits non-zero
with one line naming the cause and the fix, never a bare errno, and never
starts listening. The sysctl is restored whatever happens.
"""

import os
import subprocess
from pathlib import Path

import pytest

from conftest import RINGMTA_BIN, free_port

SYSCTL = Path("/proc/sys/kernel/io_uring_disabled")


def test_io_uring_disabled_sysctl_names_cause_and_fix(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root to set kernel.io_uring_disabled")
    if not SYSCTL.exists():
        pytest.skip("kernel has no kernel.io_uring_disabled sysctl (< 6.6)")
    old = SYSCTL.read_text().strip()
    port = free_port()
    try:
        SYSCTL.write_text("2\n")
        r = subprocess.run([RINGMTA_BIN, "-o", f"listen=127.0.0.1:{port}",
                            "-o", f"spool_dir={tmp_path}/spool", "-o", "user=nobody"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    finally:
        SYSCTL.write_text(old + "\n")
    err = r.stderr.decode("utf-8", "replace").strip().splitlines()
    assert r.returncode == 1, f"exit status: got {r.returncode}, want 1; stderr {err}"
    fatal = [line for line in err if "io_uring" in line]
    assert len(fatal) == 1, f"want one io_uring line, got {err}"
    assert "kernel.io_uring_disabled" in fatal[0] and "seccomp" in fatal[0], fatal[0]
    assert not (tmp_path / "spool").exists(), "spool created although io_uring is unusable"
