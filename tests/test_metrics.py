"""MPA (Eq. 20), IoU (Eq. 21) and FWIoU (Eq. 22) against a hand-computed confusion matrix and loops."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ggmnet.metrics import ConfusionMatrix, format_table7, pair_counts

# k = 3; class 2 is predicted once but never in the ground truth; two pixels are cover.
TARGET = np.array([0, 0, 0, 0, 1, 1, 1, 255, 255])
PRED = np.array([0, 0, 1, 2, 1, 0, 1, 2, 1])
# rows = truth: [[2, 1, 1], [1, 2, 0], [0, 0, 0]]
HAND_MATRIX = [[2, 1, 1], [1, 2, 0], [0, 0, 0]]


def test_hand_example():
    cm = ConfusionMatrix(num_classes=3)
    cm.update(PRED, TARGET)
    assert cm.matrix.dtype == np.int64
    assert cm.matrix.tolist() == HAND_MATRIX
    s = cm.compute()
    assert s["support"] == [4, 3, 0] and s["pixels"] == 7
    assert s["pixel_accuracy"] == pytest.approx(4 / 7)
    assert s["accuracy"][:2] == pytest.approx([0.5, 2 / 3]) and s["accuracy"][2] is None
    assert s["mpa"] == pytest.approx(7 / 12)
    # IoU_0 = 2 / (4 + 3 - 2), IoU_1 = 2 / (3 + 3 - 2); class 2 absent from the truth: None, not 0
    assert s["iou"][:2] == pytest.approx([0.4, 0.5]) and s["iou"][2] is None
    assert s["miou"] == pytest.approx(0.45)
    assert s["fwiou"] == pytest.approx(4 / 7 * 0.4 + 3 / 7 * 0.5)


def test_torch_input_batches_merge_and_reset():
    a, b = ConfusionMatrix(3), ConfusionMatrix(3)
    a.update(torch.from_numpy(PRED[:4]), torch.from_numpy(TARGET[:4]))
    b.update(torch.from_numpy(PRED[4:]).int(), torch.from_numpy(TARGET[4:]))
    assert a.merge(b).matrix.tolist() == HAND_MATRIX
    a.reset()
    assert a.matrix.sum() == 0 and a.compute()["fwiou"] is None


def test_torch_counting_path_matches_numpy():
    # the path GPU tensors take, run here on CPU tensors
    rng = np.random.default_rng(3)
    target = rng.integers(0, 4, size=(3, 7, 5))
    target[0, :2] = 255
    pred = rng.integers(0, 4, size=target.shape)
    from_torch = pair_counts(torch.from_numpy(pred), torch.from_numpy(target), 4, 255)
    assert np.array_equal(from_torch, pair_counts(pred, target, 4, 255))
    assert from_torch.sum() == (target != 255).sum()
    with pytest.raises(ValueError):
        pair_counts(torch.tensor([0, 4]), torch.tensor([0, 0]), 4, 255)
    with pytest.raises(ValueError):
        pair_counts(torch.tensor([0, 1]), torch.tensor([0, 4]), 4, 255)


def test_bad_indices_raise():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError):
        cm.update(np.array([3]), np.array([0]))
    with pytest.raises(ValueError):
        cm.update(torch.tensor([0]), torch.tensor([7]))
    with pytest.raises(ValueError):
        cm.update(np.array([0, 1]), np.array([0]))
    with pytest.raises(ValueError):
        ConfusionMatrix(3).merge(ConfusionMatrix(4))


def test_random_data_against_loops():
    rng = np.random.default_rng(0)
    k = 6
    target = rng.integers(0, k - 1, size=(2, 20, 20))  # class 5 never in the truth
    target[rng.random(target.shape) < 0.2] = 255
    pred = np.where(rng.random(target.shape) < 0.5, target, rng.integers(0, k, size=target.shape))
    pred[target == 255] = rng.integers(0, k, size=int((target == 255).sum()))
    cm = ConfusionMatrix(k)
    cm.update(torch.from_numpy(pred), torch.from_numpy(target))
    s = cm.compute()

    matrix = np.zeros((k, k), dtype=int)
    for t, p in zip(target.ravel(), pred.ravel()):
        if t != 255:
            matrix[t, p] += 1
    assert np.array_equal(cm.matrix, matrix)
    total = int((target != 255).sum())
    accs, ious, fw = [], [], 0.0
    for i in range(k):
        in_truth = target == i
        if not in_truth.any():
            assert s["iou"][i] is None and s["accuracy"][i] is None
            continue
        hit = int((in_truth & (pred == i)).sum())
        union = int((in_truth | ((pred == i) & (target != 255))).sum())
        accs.append(hit / in_truth.sum())
        ious.append(hit / union)
        fw += in_truth.sum() / total * hit / union
        assert s["iou"][i] == pytest.approx(hit / union)
    assert s["mpa"] == pytest.approx(np.mean(accs))
    assert s["miou"] == pytest.approx(np.mean(ious))
    assert s["fwiou"] == pytest.approx(fw)
    assert s["pixel_accuracy"] == pytest.approx(float(((pred == target) & (target != 255)).sum()) / total)


def test_format_table7():
    cm = ConfusionMatrix(3)
    cm.update(PRED, TARGET)
    text = format_table7(cm.compute(), ["Ar", "Pt", "Cm"], overall_label="Validation set")
    lines = text.strip().splitlines()
    assert lines[0] == "| Stratum/Lithology | Ar | Pt | Cm | Validation set |"
    assert lines[2] == "| percentage (%) | 57.1 | 42.9 | 0.0 |  |"
    assert lines[3] == "| IoU (%) | 40.0 | 50.0 | -- | 44.3 |"
    assert lines[4] == "| MPA (%) | 50.0 | 66.7 | -- | 58.3 |"
    with pytest.raises(ValueError):
        format_table7(cm.compute())


@pytest.mark.gpu
def test_cuda_tensors():
    cm = ConfusionMatrix(3)
    cm.update(torch.from_numpy(PRED).cuda(), torch.from_numpy(TARGET).cuda())
    assert cm.matrix.tolist() == HAND_MATRIX
