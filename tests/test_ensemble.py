"""Averaged probabilities: members of other seeds and test-time augmentation, against hand and numpy references."""

from __future__ import annotations

import json

import netCDF4
import numpy as np
import pytest
import torch
from test_evaluate import prepared  # noqa: F401  (the module-scoped dataset fixture)
from test_predict import KNOWN_P, PREDICT, save_checkpoint, scene  # noqa: F401
from torch import nn

from ggmnet.engine.runio import file_sha256
from ggmnet.inference.ensemble import D4, MeanProbabilities, load_members
from ggmnet.inference.evaluate import evaluate
from ggmnet.inference.predict import predict_region
from ggmnet.retrain.cli import evaluate_main

#: A second stand-in checkpoint's constant probabilities: it favours class 1 where KNOWN_P favours class 0.
OTHER_P = np.array([0.1, 0.7, 0.05, 0.05, 0.02, 0.02, 0.02, 0.02, 0.01, 0.01])


class FixedLogits(nn.Module):
    """Ignores its input's values and returns a fixed logit pattern ``[K, H, W]`` (not symmetric)."""

    def __init__(self, logits: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("logits", torch.as_tensor(logits, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(x.shape[0], *self.logits.shape)


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=0, keepdims=True))
    return e / e.sum(axis=0, keepdims=True)


def test_one_member_without_tta_is_that_member():
    torch.manual_seed(0)
    net = nn.Conv2d(2, 4, 3, padding=1).eval()
    x = torch.randn(2, 2, 8, 8)
    with torch.no_grad():
        np.testing.assert_allclose(torch.softmax(MeanProbabilities([net])(x), 1).numpy(),
                                   torch.softmax(net(x), 1).numpy(), atol=1e-6)


def test_two_members_average_their_probabilities():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(3, 4, 5)), rng.normal(size=(3, 4, 5))
    out = MeanProbabilities([FixedLogits(a), FixedLogits(b)])(torch.zeros(1, 1, 4, 5))
    np.testing.assert_allclose(torch.softmax(out, 1)[0].numpy(), (softmax(a) + softmax(b)) / 2, atol=1e-6)


def test_tta_averages_the_eight_views_turned_back():
    """A network whose answer depends on where a pixel is (not on the input): each view's answer is turned back
    by numpy's own rotations and flips and averaged by hand."""
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(3, 6, 6)) * 3
    p = softmax(logits)
    # The view turns the input by k quarter turns then flips its columns; the network answers the same pattern
    # for it, which, turned back (columns flipped, then -k turns), lands here.
    expected = np.mean([np.rot90(p[:, :, ::-1] if flip else p, -k, axes=(1, 2)) for k, flip in D4], axis=0)
    out = MeanProbabilities([FixedLogits(logits)], tta=True)(torch.zeros(1, 1, 6, 6))
    np.testing.assert_allclose(torch.softmax(out, 1)[0].numpy(), expected, atol=1e-6)
    assert len(D4) == 8 and len(set(D4)) == 8


def test_tta_leaves_a_rotation_invariant_network_unchanged():
    """A pointwise network commutes with every turn and flip: the eight views agree with the plain map."""
    torch.manual_seed(2)
    net = nn.Conv2d(3, 5, 1).eval()
    x = torch.randn(2, 3, 7, 7)
    with torch.no_grad():
        np.testing.assert_allclose(torch.softmax(MeanProbabilities([net], tta=True)(x), 1).numpy(),
                                   torch.softmax(net(x), 1).numpy(), atol=1e-5)


def test_evaluate_with_a_member_scores_the_mean(prepared, tmp_path):  # noqa: F811
    """KNOWN_P's network predicts class 0 everywhere, OTHER_P's class 1; their mean (0.25 against 0.5) class 1:
    every outcrop pixel of the test window falls in column 1 of the confusion matrix."""
    manifest = json.loads((prepared["data"] / "manifest.json").read_text())
    other = save_checkpoint(tmp_path / "other.pt", probabilities=OTHER_P, normalisation=manifest["normalisation"],
                            manifest_sha256=file_sha256(prepared["data"] / "manifest.json"))
    single = evaluate(prepared["checkpoint"], prepared["data"], "test", device="cpu", out_dir=tmp_path / "one",
                      progress=False)
    both = evaluate(prepared["checkpoint"], prepared["data"], "test", device="cpu", out_dir=tmp_path / "two",
                    progress=False, members=[other], tta=True)
    one_matrix, two_matrix = np.asarray(single["outcrop"]["confusion_matrix"]), np.asarray(both["outcrop"]["confusion_matrix"])
    assert one_matrix[:, 0].sum() == one_matrix.sum() > 0
    np.testing.assert_array_equal(two_matrix[:, 1], one_matrix[:, 0])
    assert [m["sha256"] for m in both["members"]] == [file_sha256(prepared["checkpoint"]), file_sha256(other)]
    assert both["tta"] is True and single["tta"] is False and len(single["members"]) == 1
    assert "the mean over 2 networks" in both["report"] and "eight flips" in both["report"]
    assert "the mean over" not in single["report"]


def test_predict_with_a_member_writes_the_mean(scene, tmp_path):  # noqa: F811
    other = save_checkpoint(tmp_path / "other.pt", probabilities=OTHER_P)
    predict_region(scene["checkpoint"], scene["bouguer"], PREDICT, tmp_path / "out", members=[other],
                   progress=False)
    with netCDF4.Dataset(tmp_path / "out" / "prediction.nc") as ds:
        probability = np.asarray(ds["probability"][:])
        members = json.loads(ds.getncattr("members"))
    mean = (KNOWN_P + OTHER_P) / 2
    class_axis = [i for i, n in enumerate(probability.shape) if n == mean.size][0]
    np.testing.assert_allclose(np.moveaxis(probability, class_axis, 0), mean[:, None, None] * np.ones_like(
        np.moveaxis(probability, class_axis, 0)), atol=1e-4)
    assert [m["sha256"] for m in members] == [file_sha256(scene["checkpoint"]), file_sha256(other)]


def test_a_member_of_another_input_is_refused(prepared, tmp_path, capsys):  # noqa: F811
    physical = save_checkpoint(tmp_path / "physical.pt", channels="physical")
    with pytest.raises(SystemExit) as info:
        evaluate_main(["--checkpoint", str(prepared["checkpoint"]), "--data", str(prepared["data"]),
                       "--members", str(physical), "--device", "cpu", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert "--members" in err and "physical.pt" in err and "channels" in err
    with pytest.raises(SystemExit) as info:
        evaluate_main(["--checkpoint", str(prepared["checkpoint"]), "--members", str(tmp_path / "gone.pt")])
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2 and "--members" in err and "gone.pt" in err
    assert not (tmp_path / "out").exists()


def test_load_members_without_members_returns_the_network_itself(prepared):  # noqa: F811
    model, ckpt, record = load_members(prepared["checkpoint"])
    assert not isinstance(model, MeanProbabilities) and ckpt["epoch"] == 1
    assert record == [{"checkpoint": str(prepared["checkpoint"].resolve()), "sha256": file_sha256(prepared["checkpoint"])}]


def test_the_map_title_names_what_was_averaged():
    from ggmnet.inference.predict import map_title
    assert map_title("80,92,43,48", "runs/a/best.pt") == "GGMNet prediction, 80,92,43,48 (best.pt)"
    assert map_title("80,92,43,48", "runs/a/best.pt", members=1, tta=True, outcrop_prior=True) == (
        "GGMNet prediction, 80,92,43,48 (best.pt averaged with 1 other seed, 8 views of each tile; "
        "cover read with the outcrop prior)")
    assert map_title("r", "b.pt", members=2) == "GGMNet prediction, r (b.pt averaged with 2 other seeds)"
