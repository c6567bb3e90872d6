"""Eq. 19's weighted bootstrapped cross-entropy and its weights, against hand computations."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ggmnet.losses import (
    InstanceWeighted,
    WeightedBootstrappedCE,
    class_weights_from_counts,
    instance_size_weights,
    sum_head_losses,
)

# 1 x 3 classes x 2 x 3 pixels; the pixel (1, 0) is cover.
LOGITS = np.array([[[[2.0, 0.5, -1.0], [0.3, 1.0, 0.0]],
                    [[0.0, 1.5, 0.2], [0.1, -0.5, 2.0]],
                    [[-1.0, 0.0, 1.0], [0.2, 0.4, -0.3]]]])
TARGET = np.array([[[0, 0, 2], [255, 1, 1]]])
CLASS_WEIGHTS = np.array([1.0, 2.0, 0.5])


def test_class_weights_median_frequency_by_hand():
    # frequencies of the present classes: 10/160, 100/160, 50/160; median 50/160
    w = class_weights_from_counts([10, 0, 100, 50], max_weight=8.0)
    assert w.dtype == torch.float32
    np.testing.assert_allclose(w.numpy(), [5.0, 8.0, 0.5, 1.0], rtol=1e-6)
    # its square root for the present classes; an absent class still gets the cap
    w = class_weights_from_counts([10, 0, 100, 50], method="sqrt_median_frequency", max_weight=8.0)
    np.testing.assert_allclose(w.numpy(), [5.0 ** 0.5, 8.0, 0.5 ** 0.5, 1.0], rtol=1e-6)


def test_class_weights_inverse_frequency_clip_and_uniform():
    w = class_weights_from_counts([10, 100, 50], method="inverse_frequency")
    np.testing.assert_allclose(w.numpy(), [160 / 30, 160 / 300, 160 / 150], rtol=1e-6)
    assert class_weights_from_counts([1, 1000, 1000], max_weight=10.0)[0].item() == 10.0
    assert class_weights_from_counts([3, 5], method="uniform").tolist() == [1.0, 1.0]
    with pytest.raises(ValueError):
        class_weights_from_counts([1, -2])
    with pytest.raises(ValueError):
        class_weights_from_counts([1, 2], method="log")


# Class 0 at two corner-touching pixels: 2 instances of 1 pixel under 4-connectivity.
# Class 1: two L-shaped instances of 3 pixels. Component sizes [1, 1, 3, 3], median 2.
INSTANCE_MASK = np.array([[0, 1, 1],
                          [1, 0, 1],
                          [1, 1, 255]])


@pytest.mark.parametrize(("power", "max_weight", "w0", "w1"), [
    (1.0, 10.0, 2.0, 2.0 / 3.0),  # raw 2 and 2/3 already have mean 1 over the 8 labelled pixels
    (0.5, 10.0, 1.4641016151377548, 0.8452994616207485),  # sqrt(2), sqrt(2/3), divided by their mean
    (1.0, 1.5, 1.7142857142857142, 0.7619047619047619),  # 2 clipped to 1.5, then mean 0.875 divided out
])
def test_instance_size_weights_by_hand(power, max_weight, w0, w1):
    w = instance_size_weights(INSTANCE_MASK, power=power, max_weight=max_weight)
    expected = np.where(INSTANCE_MASK == 0, w0, w1)
    expected[INSTANCE_MASK == 255] = 0.0
    assert w.dtype == np.float32
    np.testing.assert_allclose(w, expected, rtol=1e-6)
    assert w[INSTANCE_MASK != 255].mean() == pytest.approx(1.0, rel=1e-6)


def test_instance_size_weights_batched_torch_and_all_ignored():
    batch = torch.from_numpy(np.stack([INSTANCE_MASK, np.full((3, 3), 255)]))
    w = instance_size_weights(batch, power=1.0)
    assert isinstance(w, torch.Tensor) and w.dtype == torch.float32
    np.testing.assert_allclose(w[0].numpy(), instance_size_weights(INSTANCE_MASK, power=1.0))
    assert torch.count_nonzero(w[1]) == 0


def reference_loss(logits, target, class_weights, top_k_fraction, pixel_weights=None, selection="posterior"):
    """Eq. 19 written out with numpy: softmax; rank the N valid pixels by their posterior p_{i,y_i} (ascending,
    i.e. unweighted cross-entropy descending) or, for ``selection="weighted"``, by the weighted loss; keep K;
    return the kept weighted losses and K."""
    c = logits.shape[1]
    flat_logits = logits.transpose(0, 2, 3, 1).reshape(-1, c)
    flat_target = target.reshape(-1)
    flat_pw = np.ones(flat_target.shape) if pixel_weights is None else pixel_weights.reshape(-1)
    rows = []
    for row, y, pw in zip(flat_logits, flat_target, flat_pw):
        if y == 255:
            continue
        p = np.exp(row) / np.exp(row).sum()
        nll = -np.log(p[y])
        rows.append((nll, class_weights[y] * pw * nll))
    k = math.ceil(top_k_fraction * len(rows))
    key = 0 if selection == "posterior" else 1
    return [r[1] for r in sorted(rows, key=lambda r: r[key], reverse=True)[:k]], k


def test_eq19_by_hand_selects_by_posterior_not_by_weight():
    # Four pixels of two classes with posteriors of the true class 0.9, 0.2, 0.6, 0.5 (class weights 1 and 10).
    # K = ceil(0.5 * 4) = 2: Eq. 19 keeps the two lowest posteriors, 0.2 (class 0) and 0.5 (class 1):
    # l = (1 * -ln 0.2 + 10 * -ln 0.5) / 2. Ranking the weighted losses instead would keep 10 * -ln 0.6 and
    # 10 * -ln 0.5 (both class 1 pixels).
    p_true = np.array([0.9, 0.2, 0.6, 0.5])
    target = torch.tensor([[[0, 0, 1, 1]]])
    logit_true = np.log(p_true / (1 - p_true))  # two classes: p = sigmoid(logit_true - 0)
    logits = torch.zeros(1, 2, 1, 4, dtype=torch.float64)
    for i, (y, z) in enumerate(zip([0, 0, 1, 1], logit_true)):
        logits[0, y, 0, i] = z
    weights = [1.0, 10.0]
    eq19 = WeightedBootstrappedCE(weights, top_k_fraction=0.5, instance_weighting=False)
    assert eq19(logits, target).item() == pytest.approx((-math.log(0.2) - 10 * math.log(0.5)) / 2, rel=1e-6)
    variant = WeightedBootstrappedCE(weights, top_k_fraction=0.5, instance_weighting=False, selection="weighted")
    assert variant(logits, target).item() == pytest.approx(-10 * (math.log(0.6) + math.log(0.5)) / 2, rel=1e-6)
    with pytest.raises(ValueError, match="selection"):
        WeightedBootstrappedCE(weights, selection="largest")


def test_uniform_logits_give_ln3_times_mean_kept_weight():
    # p = 1/3 everywhere: every pixel ties, K = ceil(0.5 * 5) = 3 are kept whatever their weights (1, 1, 0.5,
    # 2, 2), so the loss is ln 3 times the mean weight of the kept three; the weighted variant keeps 2, 2, 1.
    crit = WeightedBootstrappedCE(CLASS_WEIGHTS, top_k_fraction=0.5, instance_weighting=False, selection="weighted")
    assert crit(torch.zeros(1, 3, 2, 3), torch.from_numpy(TARGET)).item() == pytest.approx(math.log(3) * 5 / 3)
    crit = WeightedBootstrappedCE(CLASS_WEIGHTS, top_k_fraction=1.0, instance_weighting=False)
    assert crit(torch.zeros(1, 3, 2, 3), torch.from_numpy(TARGET)).item() == pytest.approx(math.log(3) * 6.5 / 5)


@pytest.mark.parametrize("selection", ["posterior", "weighted"])
@pytest.mark.parametrize("fraction", [0.15, 0.5, 1.0])
def test_matches_hand_computation_and_gradient_only_on_kept_pixels(fraction, selection):
    logits = torch.tensor(LOGITS, dtype=torch.float32, requires_grad=True)
    crit = WeightedBootstrappedCE(CLASS_WEIGHTS, top_k_fraction=fraction, instance_weighting=False,
                                  selection=selection)
    loss = crit(logits, torch.from_numpy(TARGET))
    kept, k = reference_loss(LOGITS, TARGET, CLASS_WEIGHTS, fraction, selection=selection)
    assert loss.item() == pytest.approx(sum(kept) / k, rel=1e-5)

    loss.backward()
    nll, weights, valid = crit.pixel_terms(logits.detach(), torch.from_numpy(TARGET))
    ranking = nll if selection == "posterior" else weights * nll
    threshold = torch.sort(ranking[valid], descending=True).values[k - 1]
    kept_mask = (ranking >= threshold - 1e-6) & valid
    assert int(kept_mask.sum()) == k
    grad_norm = logits.grad.abs().sum(dim=1)[0]
    assert torch.all(grad_norm[~kept_mask[0]] == 0)
    assert torch.all(grad_norm[kept_mask[0]] > 0)


def test_instance_weighting_uses_target_instances():
    target = torch.from_numpy(np.array([[[0, 0, 1], [0, 0, 2]]]))  # sizes 4, 1, 1: median 1
    logits = torch.tensor(LOGITS, dtype=torch.float32)
    crit = WeightedBootstrappedCE(CLASS_WEIGHTS, top_k_fraction=1.0, instance_weighting=True)
    pw = instance_size_weights(target.numpy())
    kept, k = reference_loss(LOGITS, target.numpy(), CLASS_WEIGHTS, 1.0, pw)
    assert crit(logits, target).item() == pytest.approx(sum(kept) / k, rel=1e-5)
    explicit = torch.ones(1, 2, 3)
    kept, k = reference_loss(LOGITS, target.numpy(), CLASS_WEIGHTS, 1.0)
    assert crit(logits, target, explicit).item() == pytest.approx(sum(kept) / k, rel=1e-5)


def test_small_logits_are_upsampled_bilinearly_and_autocast_gives_float32():
    torch.manual_seed(0)
    small = torch.randn(2, 4, 4, 4)
    target = torch.randint(0, 4, (2, 8, 8))
    target[:, :2] = 255
    crit = WeightedBootstrappedCE(top_k_fraction=0.3, instance_weighting=False)
    big = F.interpolate(small, size=(8, 8), mode="bilinear", align_corners=False)
    assert crit(small, target).item() == pytest.approx(crit(big, target).item(), rel=1e-6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = crit(small.bfloat16(), target)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(crit(small.bfloat16().float(), target).item(), rel=1e-5)


def test_all_ignored_gives_zero_with_a_graph():
    logits = torch.randn(1, 3, 2, 2, requires_grad=True)
    loss = WeightedBootstrappedCE()(logits, torch.full((1, 2, 2), 255))
    loss.backward()
    assert loss.item() == 0.0 and torch.all(logits.grad == 0)


def test_sum_head_losses_weights_each_head():
    torch.manual_seed(1)
    target = torch.randint(0, 3, (1, 6, 6))
    heads = [torch.randn(1, 3, 6, 6), torch.randn(1, 3, 3, 3)]
    crit = WeightedBootstrappedCE(CLASS_WEIGHTS)
    expected = 1.0 * crit(heads[0], target) + 0.4 * crit(heads[1], target)
    assert sum_head_losses(crit, heads, target, [1.0, 0.4]).item() == pytest.approx(expected.item(), rel=1e-6)
    with pytest.raises(ValueError):
        sum_head_losses(crit, heads, target, [1.0])


class MaskItems(torch.utils.data.Dataset):
    num_classes = 3

    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int) -> dict:
        return {"mask": torch.from_numpy(INSTANCE_MASK if i == 0 else np.zeros((3, 3), dtype=int)), "window": i}


def test_instance_weighted_dataset_adds_weights_and_pickles():
    data = pickle.loads(pickle.dumps(InstanceWeighted(MaskItems(), power=1.0)))
    assert len(data) == 2 and data.num_classes == 3
    item = data[0]
    assert item["window"] == 0
    np.testing.assert_allclose(item["pixel_weights"].numpy(), instance_size_weights(INSTANCE_MASK, power=1.0))
    assert torch.all(data[1]["pixel_weights"] == 1.0)


@pytest.mark.gpu
def test_cuda_autocast_loss_matches_cpu():
    torch.manual_seed(2)
    logits = torch.randn(2, 10, 32, 32)
    target = torch.randint(0, 10, (2, 64, 64))
    target[:, :8] = 255
    crit = WeightedBootstrappedCE(class_weights_from_counts(np.arange(1, 11)))
    cpu = crit(logits, target)
    crit = crit.cuda()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        gpu = crit(logits.cuda().bfloat16(), target.cuda())
    assert gpu.dtype == torch.float32 and gpu.device.type == "cuda"
    assert gpu.item() == pytest.approx(crit(logits.bfloat16().float().cuda(), target.cuda()).item(), rel=1e-4)
    assert crit(logits.cuda(), target.cuda()).item() == pytest.approx(cpu.item(), rel=1e-4)
