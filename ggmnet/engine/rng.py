"""The global random generators: seeding them, and capturing and restoring their states for exact resume.

Resuming from ``checkpoints/last.pt`` reproduces an uninterrupted run exactly when the checkpoint holds the
model, optimiser and scheduler states plus :func:`capture_rng_state`, the loaders come from
:func:`ggmnet.engine.loaders.make_loader` (whose order is a function of the seed, the epoch and the pass) and
the data load in the main process (``num_workers=0``) or draw their augmentation from seeded generators.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int, rank: int = 0) -> None:
    """Seed Python's, NumPy's and torch's (CPU and CUDA) generators with ``seed + rank``.

    Adding the rank gives each process its own augmentation stream while keeping runs reproducible.
    """
    value = int(seed) + int(rank)
    random.seed(value)
    np.random.seed(value % 2**32)  # noqa: NPY002 - seeding the legacy global generator is the point
    torch.manual_seed(value)


def capture_rng_state() -> dict[str, Any]:
    """The state of Python's, NumPy's and torch's (CPU and every CUDA device) global generators.

    Stored as tensors, ints and lists only, so a checkpoint holding it loads with ``weights_only=True``.
    """
    version, py_state, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()  # noqa: NPY002
    state: dict[str, Any] = {
        "python": {"version": version, "state": list(py_state), "gauss": gauss},
        "numpy": {"name": np_name, "keys": torch.from_numpy(np_keys.astype(np.int64)), "pos": int(np_pos),
                  "has_gauss": int(np_has_gauss), "cached_gaussian": float(np_gauss)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Put back the generator states of :func:`capture_rng_state` (CUDA ones for the devices present)."""
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    npy = state["numpy"]
    keys = np.asarray(torch.as_tensor(npy["keys"]).numpy(), dtype=np.uint32)
    np.random.set_state((npy["name"], keys, npy["pos"], npy["has_gauss"], npy["cached_gaussian"]))  # noqa: NPY002
    torch.set_rng_state(torch.as_tensor(state["torch"], dtype=torch.uint8).cpu())
    if "cuda" in state and torch.cuda.is_available():
        saved = state["cuda"]
        for index in range(min(len(saved), torch.cuda.device_count())):
            torch.cuda.set_rng_state(torch.as_tensor(saved[index], dtype=torch.uint8).cpu(), index)
