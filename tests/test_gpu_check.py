"""experiments/gpu_check.sh parses and finds every step's command on a CPU (--dry-run), as CI runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_dry_run_passes_on_a_cpu(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    result = subprocess.run(["bash", str(REPO / "experiments" / "gpu_check.sh"), "--dry-run", "--out", str(tmp_path)],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = (tmp_path / "summary.txt").read_text()
    assert "FAILED" not in summary and "all steps passed" in result.stdout
    for step in ("pytest -m gpu", "retrain throughput GGMNet", "paper-scale search", "paper-scale retrain",
                 "search step's settings parse", "retrain step's settings parse"):
        assert step in summary


def test_gpu_check_refuses_an_unknown_option():
    result = subprocess.run(["bash", str(REPO / "experiments" / "gpu_check.sh"), "--fast"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2 and "unknown option --fast" in result.stderr
