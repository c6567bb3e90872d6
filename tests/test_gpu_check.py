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


@pytest.mark.slow
def test_gpu_check_dry_run_passes_from_another_environment(tmp_path):
    """From an environment that is not ./.venv (a venv of its own whose console scripts are written here, as a
    conda environment on a GPU server would have them), in a copy of the repository without ./.venv: the
    script finds that environment's python and console scripts, not ./nas-search."""
    import shutil
    import site

    env = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True, timeout=120)
    packages = next((env / "lib").glob("python*/site-packages"))
    (packages / "ggmnet-test.pth").write_text(f"{REPO}\n" + "\n".join(site.getsitepackages()) + "\n")
    bin_dir = env / "bin"
    for name, target in (("nas-search", "ggmnet.search.cli:search_main"), ("nas-export", "ggmnet.search.cli:export_main"),
                         ("retrain", "ggmnet.retrain.cli:train_main"), ("ggm-evaluate", "ggmnet.retrain.cli:evaluate_main"),
                         ("ggm-data", "ggmnet.datasets.cli:main")):
        module, function = target.split(":")
        script = bin_dir / name
        script.write_text(f"#!{bin_dir / 'python'}\nimport sys\nfrom {module} import {function}\n"
                          f"sys.exit({function}())\n")
        script.chmod(0o755)
    repo = tmp_path / "repo"
    for path in ("experiments/gpu_check.sh", "experiments/search_paper.yaml", "experiments/retrain_paper.yaml",
                 "benchmarks/bench_train.py"):
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / path, repo / path)
    assert not (repo / ".venv").exists()
    environ = {k: v for k, v in os.environ.items() if k not in ("PYTHON", "PYTHONPATH", "VIRTUAL_ENV")}
    environ["PATH"] = f"{bin_dir}:/usr/bin:/bin"
    result = subprocess.run(["bash", str(repo / "experiments" / "gpu_check.sh"), "--dry-run", "--out",
                             str(tmp_path / "out")], capture_output=True, text=True, env=environ, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"console scripts in {bin_dir}" in result.stdout
    summary = (tmp_path / "out" / "summary.txt").read_text()
    assert "FAILED" not in summary and "nas-search --help" in summary
    assert f"{bin_dir}/nas-search" in result.stdout  # the commands it would run use that environment's scripts
