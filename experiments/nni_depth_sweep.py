"""Sweep the MRFEM depth 16..24 (Table 4) with NNI 3.0, one nas-search per trial.

NNI is optional (``pip install -e .[sweeps]``: nni 3.0 with pytorch-lightning 2.6.6 and setuptools 80.10.2;
see the project's notes on NNI). This adapter drives an ``nni.experiment.Experiment("local")`` with the
GridSearch tuner over ``depth`` in {16, 18, 20, 22, 24} and ``trial_concurrency=1``: NNI 3.0 can hand a trial
another trial's parameters when several run at once (issue #5726), so trials run one after the other and each
one also reports the depth it actually ran. Every trial calls :func:`ggmnet.search.search.run_search` and
reports the validation FWIoU of its last epoch (its intermediate results are the per-epoch FWIoU).

Caution: NNI's manager listens on every interface (``*:PORT``) with no way to bind localhost only; run the
sweep in a network namespace or behind a firewall.

Usage::

    python experiments/nni_depth_sweep.py --config experiments/search_cpu.yaml --out runs/depth-sweep
    python experiments/nni_depth_sweep.py --depths 16,20,24 --port 18080 -- --epochs 4

Arguments after ``--`` are passed to every trial's nas-search (e.g. ``--data DIR``).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve()
PAPER_DEPTHS = (16, 18, 20, 22, 24)


def _import_nni():
    """``nni``, or exit with a one-line message saying how to install it."""
    try:
        import nni
    except ImportError:
        raise SystemExit("nni_depth_sweep: error: NNI is not installed (pip install -e '.[sweeps]': "
                         "nni==3.0, pytorch-lightning==2.6.6, setuptools==80.10.2)") from None
    return nni


def run_trial(search_args: Sequence[str]) -> None:
    """One NNI trial: take ``depth`` from the tuner, search, report the FWIoU per epoch and at the end."""
    nni = _import_nni()
    from ggmnet.search.cli import build_search_parser
    from ggmnet.search.search import SearchConfig, run_search
    from ggmnet.search_space.genotype import Genotype

    params = nni.get_next_parameter() or {}
    depth = int(params.get("depth", 22))
    config = SearchConfig.from_argv(build_search_parser(), [*search_args, "--depth", str(depth)])
    config.out = str(Path(config.out or "runs/depth-sweep") / f"depth{depth}-{nni.get_trial_id()}")
    run_dir = run_search(config)
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        if row.get("val/fwiou") is not None:
            nni.report_intermediate_result({"default": row["val/fwiou"], "depth": depth, "epoch": row["epoch"]})
    metrics = Genotype.load(run_dir / "genotype.json").provenance.get("metrics", {})
    nni.report_final_result({"default": metrics.get("fwiou") or 0.0, "mpa": metrics.get("mpa") or 0.0,
                             "depth": depth, "run_dir": str(run_dir)})


def run_sweep(depths: Sequence[int], port: int, search_args: Sequence[str], experiment_dir: Path) -> None:
    """Start the NNI experiment over ``depths`` and wait for it; print the trials' results."""
    _import_nni()
    from nni.experiment import Experiment

    experiment = Experiment("local")
    experiment.config.experiment_name = "ggmnet MRFEM depth sweep"
    experiment.config.search_space = {"depth": {"_type": "choice", "_value": list(depths)}}
    experiment.config.tuner.name = "GridSearch"
    experiment.config.trial_command = shlex.join(
        [sys.executable, str(HERE), "--trial", "--", *search_args])
    experiment.config.trial_code_directory = str(HERE.parent.parent)
    experiment.config.trial_concurrency = 1
    experiment.config.max_trial_number = len(depths)
    experiment.config.experiment_working_directory = str(experiment_dir)
    experiment.start(port)
    try:
        while experiment.get_status() not in ("DONE", "STOPPED", "ERROR", "NO_MORE_TRIAL"):
            time.sleep(10)
        for job in experiment.list_trial_jobs():
            print(f"trial {job.trialJobId}: {job.status} {job.finalMetricData}")
    finally:
        experiment.stop()


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    search_args = argv[argv.index("--") + 1:] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(prog="nni_depth_sweep", description=__doc__.split("\n\n")[0])
    p.add_argument("--depths", default=",".join(map(str, PAPER_DEPTHS)),
                   help="comma-separated depths to search. Default: 16,18,20,22,24 (Table 4).")
    p.add_argument("--port", type=int, default=18080, help="NNI manager port. Default: 18080.")
    p.add_argument("--experiment-dir", type=Path, default=Path("runs/nni"),
                   help="NNI's working folder. Default: runs/nni.")
    p.add_argument("--config", help="nas-search YAML recipe passed to every trial (e.g. "
                                    "experiments/search_cpu.yaml).")
    p.add_argument("--out", help="folder of the trials' run folders. Default: runs/depth-sweep.")
    p.add_argument("--trial", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(own)
    if args.trial:
        run_trial(search_args)
        return 0
    try:
        depths = [int(d) for d in args.depths.split(",")]
    except ValueError:
        p.error(f"--depths {args.depths}: expected comma-separated integers")
    extra = [*(["--config", args.config] if args.config else []), *(["--out", args.out] if args.out else [])]
    run_sweep(depths, args.port, [*extra, *search_args], args.experiment_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
