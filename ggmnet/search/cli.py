"""Command-line entry points of the search stage: ``nas-search`` and ``nas-export``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from ggmnet.engine.config import run_command
from ggmnet.engine.runio import write_run_metadata
from ggmnet.errors import cli_entry

SEARCH_DESCRIPTION = ("Search the multi-resolution feature extraction module (MRFEM) of GGMNet with a "
                      "differentiable supernet (Gumbel-softmax sampling, first-order alternating updates).")
SEARCH_EPILOG = """\
The defaults are the paper's scale (depth 22, 2048 px tiles cropped to 1024, 4 tiles per GPU, 50 epochs of
which 20 warm up the weights; unless given, the warm-up is 40% of --epochs and the crop min(1024, --tile-size));
run it on GPUs, e.g.
  torchrun --nproc_per_node=4 --no-python nas-search --config experiments/search_paper.yaml
CPU recipe (about ten minutes and 4 GB of memory on two cores, see experiments/search_cpu.yaml):
  nas-search --depth 22 --config experiments/search_cpu.yaml
The run folder gets run.json, genotype.json (derived after every epoch, with provenance), genotype_best.json
(best validation FWIoU), checkpoints/last.pt (the whole state, for --resume: about 2.4 GB at depth 22) and
best.pt (the supernet of the best epoch, about 1.2 GB), metrics.jsonl and the architecture heatmaps
(images/arch_*.png).
Interrupt at any time and rerun with --resume (and the same --out) to continue.
"""


def build_search_parser() -> argparse.ArgumentParser:
    """The ``nas-search`` argument parser: a flag per option of :class:`ggmnet.search.search.SearchConfig`."""
    from ggmnet.search.search import SearchConfig

    return SearchConfig.parser("nas-search", SEARCH_DESCRIPTION, SEARCH_EPILOG)


@cli_entry
def search_main(argv: Sequence[str] | None = None) -> int:
    """``nas-search``: run or resume an architecture search; prints the run folder."""
    from ggmnet.search.search import SearchConfig, run_search

    return run_command(SearchConfig, build_search_parser(), argv, run_search,
                       lambda run_dir: f"search run: {run_dir}\ngenotype:   {run_dir / 'genotype.json'}")


def build_export_parser() -> argparse.ArgumentParser:
    """The ``nas-export`` argument parser."""
    p = argparse.ArgumentParser(
        prog="nas-export",
        description="Derive the searched architecture from a search checkpoint and write it as a genotype "
                    "JSON (validated, written atomically), then print its summary. By default the search's "
                    "choice: the epoch of best validation FWIoU (checkpoints/best.pt); --checkpoint "
                    "RUN/checkpoints/last.pt exports the last epoch.",
    )
    p.add_argument("genotype", metavar="GENOTYPE.json", help="genotype file to write.")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--run", metavar="DIR",
                        help="search run folder: its checkpoints/best.pt, the search's choice (the search epoch "
                             "whose derived network scored the best validation FWIoU), or last.pt when no search "
                             "epoch has finished. Default: the newest run under runs/search.")
    source.add_argument("--checkpoint", metavar="FILE",
                        help="a search checkpoint, to export another epoch than the search's choice: "
                             "RUN/checkpoints/last.pt for the last epoch.")
    p.add_argument("--force", action="store_true",
                   help="overwrite an existing genotype file that differs. Default: refuse.")
    return p


@cli_entry
def export_main(argv: Sequence[str] | None = None) -> int:
    """``nas-export``: write the genotype of a search run and print its summary."""
    args = build_export_parser().parse_args(argv)
    from ggmnet.metrics import percent
    from ggmnet.search.export import export_genotype

    genotype, source, written = export_genotype(args.genotype, run=args.run, checkpoint=args.checkpoint,
                                                force=args.force)
    out = Path(args.genotype)
    if written:
        write_run_metadata(out.parent, {**vars(args), "checkpoint": str(source)}, seed=None,
                           name=f"{out.stem}.run.json")
    print(genotype.summary())
    fwiou = genotype.provenance.get("metrics", {}).get("fwiou")
    print(f"{'wrote' if written else 'unchanged'} {out} (from {source}, epoch {genotype.provenance.get('epoch')}, "
          f"val FWIoU {percent(fwiou, '%')})")
    return 0


def build_latency_parser() -> argparse.ArgumentParser:
    """The ``nas-latency-table`` argument parser."""
    p = argparse.ArgumentParser(
        prog="nas-latency-table",
        description="Time every operator a supernet of the given widths can use, alone, on this machine, and "
                    "write the table that nas-search --latency-table takes (milliseconds per operator at "
                    "--size pixels; a network's cost is the sum of its operators').")
    p.add_argument("table", metavar="TABLE.json", help="the latency table to write (atomically).")
    p.add_argument("--depth", type=int, default=22, help="cells per branch of the supernet, 2..64. Default: 22.")
    p.add_argument("--unit-channels", default="12,24,48", metavar="U8,U16,U32",
                   help="unit widths at strides 8, 16, 32, as nas-search's. Default: 12,24,48 (the CPU "
                        "recipe: 4,8,16).")
    p.add_argument("--stem-channels", default="24,48,96", metavar="C2,C4,C8",
                   help="widths of the stem's three levels. Default: 24,48,96.")
    p.add_argument("--size", type=int, default=1024, help="input side in pixels that the times are for. "
                                                          "Default: 1024.")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N. Default: cpu.")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads to time with (torch.set_num_threads). Default: torch's.")
    p.add_argument("--repeats", type=int, default=10, help="timings per operator (median). Default: 10.")
    p.add_argument("--force", action="store_true", help="overwrite an existing table. Default: refuse.")
    return p


@cli_entry
def latency_main(argv: Sequence[str] | None = None) -> int:
    """``nas-latency-table``: measure and write a latency table."""
    args = build_latency_parser().parse_args(argv)
    import torch

    from ggmnet.engine.config import integers
    from ggmnet.errors import UserError
    from ggmnet.search.latency import measure_latency_table, required_keys
    from ggmnet.search_space.supernet import Supernet

    out = Path(args.table)
    if out.exists() and not args.force:
        raise UserError(f"{out}: exists; pass --force to overwrite it")
    widths = {}
    for name in ("unit_channels", "stem_channels"):
        try:
            widths[name] = integers(3, lambda v: v >= 1, "")(getattr(args, name))
        except ValueError:
            raise UserError(f"--{name.replace('_', '-')} {getattr(args, name)}: expected three positive "
                            "integers") from None
    for name, low in (("depth", 2), ("size", 32), ("repeats", 1)):
        if getattr(args, name) < low:
            raise UserError(f"--{name} {getattr(args, name)}: expected an integer >= {low}")
    with torch.device("meta"):  # the keys need the grid's widths only
        supernet = Supernet(args.depth, unit_channels=widths["unit_channels"], stem_channels=widths["stem_channels"])
    threads = torch.get_num_threads()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        table = measure_latency_table(required_keys(supernet), size=args.size, device=args.device,
                                      repeats=args.repeats)
    finally:
        torch.set_num_threads(threads)
    table.provenance.update({"depth": args.depth, "unit_channels": list(widths["unit_channels"]),
                             "stem_channels": list(widths["stem_channels"])})
    table.save(out)
    write_run_metadata(out.parent, vars(args), seed=None, name=f"{out.stem}.run.json")
    print(f"wrote {out}: {len(table.entries)} operators, {table.unit}, on {table.device}")
    return 0


if __name__ == "__main__":
    raise SystemExit(search_main())
