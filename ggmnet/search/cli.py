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
                    "JSON (validated, written atomically), then print its summary.",
    )
    p.add_argument("genotype", metavar="GENOTYPE.json", help="genotype file to write.")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--run", metavar="DIR",
                        help="search run folder (its checkpoints/last.pt). Default: the newest run under "
                             "runs/search.")
    source.add_argument("--checkpoint", metavar="FILE",
                        help="a search checkpoint, e.g. RUN/checkpoints/best.pt for the epoch of best "
                             "validation FWIoU.")
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


if __name__ == "__main__":
    raise SystemExit(search_main())
