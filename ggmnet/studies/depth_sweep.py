"""Sweep the MRFEM depth (Table 4 of the paper, depths 16..24): search, export, retrain and score per depth.

Each trial is one row of Table 4: at its depth it runs a search (:func:`ggmnet.search.search.run_search`),
exports the genotype of the search's last checkpoint (:func:`ggmnet.search.export.export_genotype`),
retrains GGMNet from that genotype (:func:`ggmnet.retrain.train.run_retrain`) and reports the depth, the
parameter count of the retrained network and its best validation FWIoU and MPA. The sweep writes
``OUT/table4.md`` and ``OUT/table4.json`` with these rows beside the paper's figures, and keeps every trial's
folders under ``OUT/depthD/`` (``search/``, ``genotype.json``, ``retrain/``, ``trial.json``).

Two engines give the same outputs:

* ``nni``: NNI 3.0 multi-trial NAS (``nni.nas.experiment.NasExperiment``) over a model space whose one
  choice is ``depth``, with the GridSearch strategy and the **sequential** execution engine: the trials run
  one after the other inside this process. This mode starts no NNI manager and no web server and opens no
  port (no listening socket appeared in ``ss -ltnp`` while a sweep ran; ``tests/test_nni_sweep.py`` checks
  the same with psutil). NNI writes its log and checkpoint under ``OUT/nni/`` and adds the experiment to its
  list in ``~/nni-experiments/.experiment``. Each trial reports ``{"default": FWIoU, "fwiou", "mpa",
  "depth", "parameters"}`` with ``nni.report_final_result``; the sweep checks that every trial ran the depth
  NNI sampled for it and reported the FWIoU NNI recorded.
* ``loop``: the same trials in a plain loop, without NNI.
* ``auto`` (default): ``nni`` when NNI 3.0 imports (``pip install -e '.[sweeps]'``), else ``loop``.

NNI's other mode, ``nni.experiment.Experiment("local")`` (tuner plus web UI), is not used: its manager
listens on every interface (``*:PORT``; ``nni_node/rest_server/index.js`` calls ``app.listen(port)`` with no
host) and NNI 3.0 has no setting that binds it to the loopback only; with several trials at once it can also
pair one trial's metric with another trial's parameters (NNI issue #5726). If you run it anyway, do so in a
network namespace or behind a firewall.

The settings of every trial's search and retrain come from the dataclass defaults (the paper's scale),
overridden by ``--search-config`` and ``--retrain-config`` YAML recipes (keys as in ``nas-search`` and
``retrain``); the sweep sets ``depth``, ``data``, ``out`` and ``genotype`` itself. The command line is
``experiments/nni_depth_sweep.py`` (its docstring shows how to run it).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ggmnet.engine.config import DATA, Config, choice, option, read_config_file
from ggmnet.engine.runio import prepare_out_dir, write_bytes_atomic, write_json_atomic, write_run_metadata
from ggmnet.errors import UserError, cli_entry
from ggmnet.metrics import markdown_table, percent
from ggmnet.models import count_parameters, load_model
from ggmnet.retrain.train import RetrainConfig, run_retrain
from ggmnet.search.export import export_genotype
from ggmnet.search.search import SearchConfig, run_search
from ggmnet.studies import paper

log = logging.getLogger("ggmnet.studies.depth_sweep")

ENGINES = ("auto", "nni", "loop")
#: Settings the sweep chooses itself; a recipe may not set them.
_SWEEP_KEYS = {"search": ("data", "out", "resume"), "retrain": ("genotype", "data", "out", "resume")}
NNI_INSTALL_HINT = ("pip install -e '.[sweeps]' (nni==3.0, pytorch-lightning==2.6.6, setuptools==80.10.2, "
                    "filelock==3.11.0, typeguard==4.1.2)")


# ------------------------------------------------------------------------------------------------ settings

def load_recipe(path: str | Path | None, kind: str) -> dict[str, Any]:
    """The values of a ``nas-search`` (``kind="search"``) or ``retrain`` YAML recipe; unknown keys are refused."""
    if path is None:
        return {}
    config_class = SearchConfig if kind == "search" else RetrainConfig
    return read_config_file(path, [f.name for f in dataclasses.fields(config_class)], option=f"--{kind}-config")


def parse_depths(text: str) -> list[int]:
    """``"16,18,20"`` -> ``[16, 18, 20]``; a one-line :class:`UserError` for anything else."""
    try:
        depths = [int(d) for d in text.split(",")]
    except ValueError:
        raise UserError(f"--depths {text}: expected comma-separated integers") from None
    if len(set(depths)) != len(depths):
        raise UserError(f"--depths {text}: a depth is given twice")
    return depths


def nni_available() -> tuple[bool, str]:
    """Whether NNI 3.0's NAS API imports, and if not, why (one line)."""
    try:
        _import_nni()
    except Exception as err:  # unmaintained NNI fails to import in several ways (e.g. NNI issue #5764)
        return False, f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    return True, ""


def _import_nni():
    """``nni``, with ``nni.nas`` loaded (needs pytorch-lightning) and its PyTorch-version warnings silenced."""
    with warnings.catch_warnings():
        # NNI 3.0 warns once per unknown torch.nn class ("your PyTorch version might not be supported"):
        # harmless on torch 2.14 (see the project's NNI notes).
        warnings.filterwarnings("ignore", message=".*is found to be not a nn.Module", category=RuntimeWarning)
        import nni
        import nni.nas.experiment  # noqa: F401
    return nni


# ------------------------------------------------------------------------------------------------ one trial

def run_trial(depth: int, *, out: str, data: str | None, search: dict[str, Any], retrain: dict[str, Any],
              report: bool) -> dict[str, Any]:
    """One row of Table 4 at ``depth``: search, export, retrain; returns (and, with ``report``, reports) it.

    ``search`` and ``retrain`` are recipe values (:func:`load_recipe`); the folders go under ``out/depthD``.
    With ``report`` the row goes to NNI (``nni.report_final_result``), its FWIoU as the ``default`` metric and
    the depth in the same dict, so the result names the depth that produced it.
    """
    trial_dir = prepare_out_dir(Path(out) / f"depth{depth}")
    log.info("depth %d: search -> %s", depth, trial_dir / "search")
    search_dir = run_search(SearchConfig(**{**search, "depth": depth, "data": data,
                                            "out": str(trial_dir / "search")}).check())
    genotype_path = trial_dir / "genotype.json"
    export_genotype(genotype_path, run=search_dir, force=True)
    log.info("depth %d: retrain from %s -> %s", depth, genotype_path, trial_dir / "retrain")
    summary = run_retrain(RetrainConfig(**{**retrain, "genotype": str(genotype_path), "data": data,
                                           "out": str(trial_dir / "retrain")}).check())
    best = Path(summary["best_checkpoint"])
    model, _ = load_model(best if best.is_file() else summary["last_checkpoint"])
    row = {"depth": depth, "parameters": count_parameters(model), "fwiou": summary["best_val_fwiou"],
           "mpa": summary["best_val_mpa"], "best_epoch": summary["best_epoch"], "search_dir": str(search_dir),
           "genotype": str(genotype_path), "retrain_dir": summary["run_dir"]}
    write_json_atomic(trial_dir / "trial.json", row)
    log.info("depth %d: %.2f M parameters, val FWIoU %s, MPA %s", depth, row["parameters"] / 1e6,
             percent(row["fwiou"], "%"), percent(row["mpa"], "%"))
    if report:
        nni = _import_nni()
        nni.report_final_result({"default": row["fwiou"] or 0.0, "fwiou": row["fwiou"], "mpa": row["mpa"],
                                 "depth": depth, "parameters": row["parameters"]})
    return row


def _nni_trial(model: Any, **settings: Any) -> None:
    """NNI's evaluator function: run the trial at the depth of the frozen model space NNI hands over."""
    run_trial(int(model.depth), report=True, **settings)


# ------------------------------------------------------------------------------------------------ engines

def _sweep_nni(depths: Sequence[int], settings: dict[str, Any], work_dir: Path) -> list[dict[str, Any]]:
    """The trials as an NNI 3.0 multi-trial NAS experiment: GridSearch, sequential engine, no NNI manager."""
    nni = _import_nni()
    from nni.mutable import ensure_frozen
    from nni.nas import strategy
    from nni.nas.evaluator import FunctionalEvaluator
    from nni.nas.experiment import NasExperiment, NasExperimentConfig
    from nni.nas.nn.pytorch import ModelSpace
    from nni.nas.space import model_context

    class DepthSpace(ModelSpace):
        """A model space with one choice, the MRFEM depth; the trial builds the real networks itself."""

        def __init__(self, choices: list[int]):
            super().__init__()
            self.choices = list(choices)
            self.depth = ensure_frozen(self.add_mutable(nni.choice("depth", self.choices)))

        def freeze(self, sample: dict[str, Any]) -> DepthSpace:
            with model_context(sample):
                return DepthSpace(self.choices)

    config = NasExperimentConfig("sequential", "simplified")
    config.experiment_name = "ggmnet MRFEM depth sweep (Table 4)"
    config.max_trial_number = len(depths)
    config.experiment_working_directory = str(work_dir.resolve())
    experiment = NasExperiment(DepthSpace(list(depths)), FunctionalEvaluator(_nni_trial, **settings),
                               strategy.GridSearch(), config)
    try:
        experiment.start()  # the sequential engine runs every trial before start() returns
        models = experiment.export_top_models(top_k=len(depths))
    finally:
        experiment.stop()
    # NNI's record of each trial (the depth it sampled, the metric it received) against the trial's own.
    rows = []
    for model in sorted(models, key=lambda m: m.sample["depth"]):
        depth = int(model.sample["depth"])
        trial_file = Path(settings["out"]) / f"depth{depth}" / "trial.json"
        if not trial_file.is_file():
            raise RuntimeError(f"NNI lists depth {depth} but its trial wrote no {trial_file}")
        row = json.loads(trial_file.read_text(encoding="utf-8"))
        if row["depth"] != depth or model.metric != (row["fwiou"] or 0.0):
            raise RuntimeError(f"NNI paired depth {depth} and metric {model.metric} with a trial that ran depth "
                               f"{row['depth']} and reported FWIoU {row['fwiou']}")
        rows.append({**row, "nni": {"sample": dict(model.sample), "metric": model.metric,
                                    "status": str(model.status.value)}})
    missing = sorted(set(depths) - {r["depth"] for r in rows})
    if missing:
        raise RuntimeError(f"NNI finished without a result for depth(s) {missing}")
    return rows


def run_depth_sweep(depths: Sequence[int], *, out: str | Path, data: str | Path | None = None,
                    search: dict[str, Any] | None = None, retrain: dict[str, Any] | None = None,
                    engine: str = "auto") -> dict[str, Any]:
    """Run one trial per MRFEM depth of ``depths`` with ``engine`` (``nni``, ``loop``, or ``auto``: ``nni`` when it
    imports) and write ``out/table4.md`` and ``out/table4.json``; ``out`` must not yet hold any of their trials.

    ``data`` is the prepared dataset of every search and retrain (None: the synthetic default); ``search`` and
    ``retrain`` are recipe values (:func:`load_recipe`) over the ``SearchConfig`` / ``RetrainConfig`` defaults: a
    search ``depth`` is ignored; ``data``, ``out``, ``resume``, ``genotype`` and a ``model`` other than ``ggmnet``
    are refused. Returns ``table4.json``'s contents: the engine used and one row per depth (depth, parameters,
    FWIoU, MPA, run folders, the paper's figures, and for ``nni`` what NNI recorded).
    """
    if engine not in ENGINES:
        raise UserError(f"--engine {engine}: expected one of {', '.join(ENGINES)}")
    if not depths:
        raise UserError("--depths: give at least one depth")
    search, retrain = dict(search or {}), dict(retrain or {})
    search.pop("depth", None)  # a recipe's depth (search_cpu.yaml has one) gives way to the trial's
    for kind, values in (("search", search), ("retrain", retrain)):
        fixed = sorted(set(values) & set(_SWEEP_KEYS[kind]))
        if fixed:
            raise UserError(f"{kind} settings {', '.join(fixed)}: set by the sweep (use --data and --out)")
    if retrain.get("model", "ggmnet") != "ggmnet":
        raise UserError(f"retrain setting model {retrain['model']}: Table 4 retrains ggmnet")
    if engine != "loop":
        ok, why = nni_available()
        if not ok and engine == "nni":
            raise UserError(f"--engine nni: NNI does not import ({why}); {NNI_INSTALL_HINT}")
        if not ok:
            log.info("NNI does not import (%s): running the plain loop", why)
        engine = "nni" if ok else "loop"
    out = prepare_out_dir(out)
    taken = [d for d in depths if (out / f"depth{d}").exists()]
    if taken:
        raise UserError(f"--out {out}: already holds depth{taken[0]}/ (choose another folder)")
    # Settings a trial needs, as plain JSON values (NNI stores them in its checkpoint).
    settings = {"out": str(out), "data": None if data is None else str(data), "search": search, "retrain": retrain}
    write_run_metadata(out, {"depths": list(depths), "engine": engine, **settings}, seed=None, name="sweep.json")
    log.info("depth sweep over %s with engine %s -> %s", ", ".join(map(str, depths)), engine, out)
    if engine == "nni":
        rows = _sweep_nni(depths, settings, out / "nni")
    else:
        rows = [run_trial(d, report=False, **settings) for d in depths]
    for row in rows:
        reported = paper.TABLE4.get(row["depth"])
        row["paper"] = None if reported is None else dict(zip(("parameters_m", "mpa_pct", "fwiou_pct"), reported))
    table = {"engine": engine, "rows": sorted(rows, key=lambda r: r["depth"])}
    write_json_atomic(out / "table4.json", table)
    write_bytes_atomic(out / "table4.md", format_table4(table).encode("utf-8"))
    return table


# ------------------------------------------------------------------------------------------------ output

def format_table4(table: dict[str, Any]) -> str:
    """Table 4 as Markdown: this sweep's figures beside the paper's, one row per depth."""
    def num(value: float | None, fmt: str) -> str:
        return "–" if value is None else format(value, fmt)

    rows = []
    for row in table["rows"]:
        ref = row["paper"] or {}
        rows.append([row["depth"], f"{row['parameters'] / 1e6:.2f}", percent(row["mpa"]), percent(row["fwiou"], digits=2),
                     num(ref.get("parameters_m"), ".1f"), num(ref.get("mpa_pct"), ".1f"),
                     num(ref.get("fwiou_pct"), ".2f"), f"`{row['search_dir']}`, `{row['retrain_dir']}`"])
    return (f"# Table 4: depth of the MRFEM (engine: {table['engine']})\n\n"
            "Validation scores of the retrained GGMNet at its best epoch; the paper's figures (real WGM2012 data, "
            "2048 px tiles, 600 epochs) beside them.\n\n"
            + markdown_table(["Depth of MRFEM", "Parameters (M)", "MPA (%)", "FWIoU (%)", "paper: Parameters (M)",
                              "paper: MPA (%)", "paper: FWIoU (%)", "run folders"], rows))


# ------------------------------------------------------------------------------------------------ command line

#: Why the nni engine is safe on a network (the sweep's ``--help`` epilog).
NETWORK_NOTE = ("Network: the nni engine runs NNI 3.0 multi-trial NAS with the sequential execution engine in this "
                "process; it starts no NNI manager or web server and opens no port. NNI's Experiment('local') mode "
                "is not used because its manager listens on every interface (*:PORT) and NNI 3.0 cannot bind it to "
                "the loopback only.")


@dataclasses.dataclass
class SweepOptions(Config):
    """The options of ``experiments/nni_depth_sweep.py``."""

    depths: str = option(",".join(map(str, paper.DEPTHS)), "comma-separated MRFEM depths, one trial each (Table 4)")
    engine: str = option("auto", "nni: NNI 3.0 multi-trial NAS (GridSearch, sequential engine, no server, no port); "
                                 "loop: a plain loop without NNI; auto: nni when it imports, else loop",
                         choice(*ENGINES))
    search_config: str | None = option(None, "nas-search YAML recipe for every trial's search (e.g. "
                                             "experiments/search_cpu.yaml); its depth is replaced by the trial's",
                                       metavar="FILE.yaml", shown="none (the paper's scale)")
    retrain_config: str | None = option(None, "retrain YAML recipe for every trial's retrain (e.g. "
                                              "experiments/retrain_cpu.yaml)", metavar="FILE.yaml",
                                        shown="none (the paper's scale, 600 epochs)")
    data: str | None = DATA.field(None, shown="the synthetic default under $GGMNET_DATA")
    out: str = option("runs/depth-sweep", "sweep folder: depthD/ per trial, nni/ (NNI's log), table4.md, "
                                          "table4.json, sweep.json", metavar="DIR")


def build_parser() -> argparse.ArgumentParser:
    """The sweep's argument parser (:class:`SweepOptions`, and why the nni engine is safe on a network)."""
    return SweepOptions.parser("nni_depth_sweep", __doc__.splitlines()[0], epilog=NETWORK_NOTE)


@cli_entry
def main(argv: Sequence[str] | None = None) -> int:
    """Run the sweep of the command line and print Table 4."""
    args = SweepOptions.from_argv(build_parser(), argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("nni").propagate = False  # NNI prints its log lines itself
    table = run_depth_sweep(parse_depths(args.depths), out=args.out, data=args.data,
                            search=load_recipe(args.search_config, "search"),
                            retrain=load_recipe(args.retrain_config, "retrain"), engine=args.engine)
    sys.stdout.write(format_table4(table))
    return 0
