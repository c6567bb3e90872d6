"""Shared pytest setup: offline W&B, few threads, GPU tests skipped without CUDA; the shared fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("OMP_NUM_THREADS", "2")


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:  # pragma: no cover - torch is a dependency
        has_cuda = False
    if has_cuda:
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """The tiny prepared dataset of ``tiny_data.build_tiny_dataset``, built once per session."""
    from tiny_data import build_tiny_dataset

    return build_tiny_dataset(tmp_path_factory.mktemp("tiny-data"))


@pytest.fixture(scope="session")
def tiny_genotype(tmp_path_factory) -> Path:
    """The default genotype at depth 2, as a file."""
    from ggmnet.search_space.genotype import default_genotype

    path = tmp_path_factory.mktemp("tiny-genotype") / "genotype.json"
    default_genotype(depth=2).save(path)
    return path


@pytest.fixture(scope="session")
def finished_search(tiny_dataset, tmp_path_factory) -> Path:
    """One uninterrupted tiny search (``tiny_data.search_config``)."""
    from tiny_data import search_config

    from ggmnet.search.search import run_search

    return run_search(search_config(tiny_dataset, tmp_path_factory.mktemp("search") / "run"))
