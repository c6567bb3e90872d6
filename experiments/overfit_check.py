"""Can GGMNet fit a fixed batch? A diagnostic of the training path, with plain CE or Eq. 19.

    python experiments/overfit_check.py --data runs/quickstart/data --genotype runs/quickstart/genotype.json
    python experiments/overfit_check.py ... --loss eq19

Prints the loss, pixel accuracy and FWIoU on the batch every 15 steps. A network that cannot fit four small
tiles has a bug; one that fits them with cross-entropy but not with Eq. 19 in the same steps shows how much
slower hard-pixel mining and class weights make the start of training.
"""

from __future__ import annotations

import argparse
import time

import torch

from ggmnet.datasets.tiles import TileDataset
from ggmnet.losses import WeightedBootstrappedCE, class_weights_from_counts
from ggmnet.metrics import ConfusionMatrix
from ggmnet.models import build_model
from ggmnet.search_space.genotype import Genotype


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="prepared dataset folder")
    parser.add_argument("--genotype", required=True, help="genotype JSON")
    parser.add_argument("--loss", choices=("ce", "eq19"), default="ce", help="plain CE or Eq. 19 (default ce)")
    parser.add_argument("--tile-size", type=int, default=64, help="tile side, px (default 64)")
    parser.add_argument("--steps", type=int, default=60, help="Adam steps (default 60)")
    parser.add_argument("--deformable", action="store_true", help="keep the deformable decoder (slow on CPU)")
    args = parser.parse_args()

    torch.manual_seed(0)
    data = TileDataset(args.data, "train", tile_size=args.tile_size, augment=False)
    batch = [data[i] for i in range(0, 40, 10)]
    image = torch.stack([b["image"] for b in batch])
    mask = torch.stack([b["mask"] for b in batch])
    genotype = Genotype.load(args.genotype)
    model = build_model({"name": "ggmnet", "genotype": genotype.to_dict(), "arm": True, "ffm": True,
                         "deformable": args.deformable, "residual": True})
    if args.loss == "eq19":
        criterion = WeightedBootstrappedCE(class_weights_from_counts(data.class_counts))
    else:
        criterion = torch.nn.CrossEntropyLoss(ignore_index=255)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    start = time.perf_counter()
    model.train()
    for step in range(1, args.steps + 1):
        optimizer.zero_grad()
        logits = model(image)
        loss = criterion(logits, mask)
        loss.backward()
        optimizer.step()
        if step % 15 == 0 or step == args.steps:
            matrix = ConfusionMatrix(model.num_classes)
            matrix.update(logits.argmax(1), mask)
            scores = matrix.compute()
            print(f"step {step:4d}  loss {loss.item():.3f}  pixel accuracy {100 * scores['pixel_accuracy']:.1f}%  "
                  f"FWIoU {100 * scores['fwiou']:.1f}%  {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
