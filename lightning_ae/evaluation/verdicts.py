"""Did it converge, did it learn: the trivial predictors a model must beat, and the two verdicts.

Plain functions on tensors (they may live on an accelerator; every number returned is a
Python float, read back to the CPU):

- the trivial autoencoder outputs the mean training target for every input: its test BCE
  (the mean clipped to [eps, 1 - eps], as PCA's reconstructions are) and MSE, per pixel
  and per image;
- the trivial classifier predicts the class prior of the training labels: its test
  cross-entropy, and the error of always answering the majority class;
- `convergence`: early-stopped, or val/loss flat (within a relative tolerance) over the
  last epochs;
- `learned`: the model's test loss at least `margin` (relative) below the trivial one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_ae.evaluation.pca import BCE_EPS

TOLERANCE = 0.01  # val/loss within 1% of its last value over the window: flat
WINDOW = 3  # the last 3 epochs' val/loss values
MARGIN = 0.1  # learned: test loss at least 10% below the trivial predictor's


def check_tolerance(tolerance: Any) -> float:
    if isinstance(tolerance, bool) or not isinstance(tolerance, int | float) or not 0 < tolerance < 1:
        raise ValueError(
            f"tolerance={tolerance!r} is not valid; valid: a number in (0, 1), the relative change of val/loss "
            "over the window below which training counts as converged (e.g. 0.01)."
        )
    return float(tolerance)


def check_window(window: Any) -> int:
    if isinstance(window, bool) or not isinstance(window, int) or window < 2:
        raise ValueError(
            f"window={window!r} is not valid; valid: an integer >= 2, the number of last epochs whose val/loss "
            "must agree within the tolerance (e.g. 3)."
        )
    return window


def check_margin(margin: Any) -> float:
    if isinstance(margin, bool) or not isinstance(margin, int | float) or not 0 <= margin < 1:
        raise ValueError(
            f"margin={margin!r} is not valid; valid: a number in [0, 1), how far (relative) the test loss must be "
            "below the trivial predictor's for the model to count as having learned (e.g. 0.1)."
        )
    return float(margin)


# -- the trivial autoencoder: the mean training target ---------------------------------------


@torch.no_grad()
def mean_target(chunks: Iterable[Tensor]) -> Tensor:
    """The mean over items of the flattened targets, shape (D,), float64, on the chunks' device."""
    total: Tensor | None = None
    count = 0
    for chunk in chunks:
        flat = chunk.reshape(len(chunk), -1).double()
        total = flat.sum(dim=0) if total is None else total + flat.sum(dim=0)
        count += len(flat)
    if total is None or count == 0:
        raise ValueError("no targets given: the mean of an empty split is undefined.")
    return total / count


@torch.no_grad()
def class_mean_predictor_metrics(
    train_chunks: Iterable[tuple[Tensor, Tensor]], test_chunks: Iterable[tuple[Tensor, Tensor]], num_classes: int
) -> dict[str, float | None]:
    """Test errors of predicting, for every item, the mean training target of its class: (targets, labels) chunks.

    The least loss a similarity-pairs model can reach: its target is a random image of the object's class.
    """
    sums: Tensor | None = None
    counts = torch.zeros(num_classes, dtype=torch.float64)
    for targets, labels in train_chunks:
        flat = targets.reshape(len(targets), -1).double()
        if sums is None:
            sums = torch.zeros(num_classes, flat.shape[1], dtype=torch.float64, device=flat.device)
        sums.index_add_(0, labels.to(flat.device), flat)
        counts += torch.bincount(labels.cpu(), minlength=num_classes).double()
    if sums is None:
        raise ValueError("no training targets given: the class means are undefined.")
    means = sums / counts.clamp(min=1).to(sums.device).unsqueeze(1)
    totals: dict[str, float] = {}
    count = 0
    tests = [(t, y) for t, y in test_chunks]
    for c in range(num_classes):
        chunks = [t[y == c] for t, y in tests if bool((y == c).any())]
        if not chunks:
            continue
        n = sum(len(chunk) for chunk in chunks)
        for key, value in mean_predictor_metrics(means[c], chunks).items():
            totals[key] = None if value is None or totals.get(key, 0.0) is None else totals.get(key, 0.0) + value * n
        count += n
    return {key: None if value is None else value / count for key, value in totals.items()}


@torch.no_grad()
def mean_predictor_metrics(mean: Tensor, chunks: Iterable[Tensor], eps: float = BCE_EPS) -> dict[str, float | None]:
    """Test errors of predicting `mean` for every target, over `chunks` of targets (memory stays one chunk).

    The same definitions as the autoencoders' test metrics and PCA's: per pixel is the mean over
    pixels and items, per image the sum over pixels averaged over items. BCE uses the mean
    clipped to [eps, 1 - eps] (the convention of `reconstruction_metrics` for PCA: a pixel that is
    0 in every training image would otherwise cost an infinite loss wherever a test image has
    ink); it is None when a target or the mean leaves [0, 1] (codes of tanh or ReLU layers),
    where BCE is undefined. MSE uses the mean as it is.
    """
    prediction = mean.reshape(1, -1).double()
    clipped = prediction.clamp(eps, 1.0 - eps)
    in_unit = bool(((prediction >= 0) & (prediction <= 1)).all().item())
    bce_sum = torch.zeros((), dtype=torch.float64, device=prediction.device)
    mse_sum = torch.zeros((), dtype=torch.float64, device=prediction.device)
    count = 0
    for chunk in chunks:
        target = chunk.reshape(len(chunk), -1).to(device=prediction.device, dtype=torch.float64)
        if target.shape[1] != prediction.shape[1]:
            raise ValueError(f"targets of {target.shape[1]} values each against a mean of {prediction.shape[1]}.")
        mse_sum += (target - prediction).pow(2).sum()
        in_unit = in_unit and bool(((target >= 0) & (target <= 1)).all().item())
        if in_unit:
            bce_sum += F.binary_cross_entropy(clipped.expand_as(target), target, reduction="sum")
        count += len(target)
    if count == 0:
        raise ValueError("no targets given: there is nothing to score the mean predictor on.")
    pixels = count * prediction.shape[1]
    bce, mse = bce_sum.item(), mse_sum.item()  # .item() reads back to the CPU
    return {
        "bce_per_pixel": bce / pixels if in_unit else None,
        "bce_per_image": bce / count if in_unit else None,
        "mse_per_pixel": mse / pixels,
        "mse_per_image": mse / count,
    }


# -- the trivial classifier: the class prior --------------------------------------------------


@torch.no_grad()
def class_prior(labels: Tensor, num_classes: int) -> Tensor:
    """The fraction of each class among `labels`, shape (num_classes,), float64 on the CPU."""
    labels = labels.detach().reshape(-1).long().cpu()
    if len(labels) == 0:
        raise ValueError("no labels given: the class prior of an empty split is undefined.")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"labels must be in [0, {num_classes}); got {labels.min().item()}..{labels.max().item()}.")
    counts = torch.bincount(labels, minlength=num_classes).double()
    return counts / counts.sum()


@torch.no_grad()
def class_prior_metrics(prior: Tensor, labels: Tensor) -> dict[str, float]:
    """Cross-entropy (nats, mean over items) of predicting `prior` for every item, and the error of always
    answering the most frequent class. A test class absent from the training labels costs an infinite loss."""
    prior = prior.detach().double().cpu()
    labels = labels.detach().reshape(-1).long().cpu()
    majority = int(prior.argmax().item())
    return {
        "loss": -torch.log(prior[labels]).mean().item(),
        "error": (labels != majority).double().mean().item(),
        "majority_class": majority,
    }


# -- the verdicts -----------------------------------------------------------------------------


def convergence(
    history: Sequence[float | None],
    tolerance: float = TOLERANCE,
    window: int = WINDOW,
    early_stopped: bool = False,
    stopped_epoch: int | None = None,
    monitor: str = "val/loss",
) -> dict[str, Any]:
    """Whether training converged: early stopping ended it, or val/loss over the last `window` epochs stayed
    within `tolerance` of its last value (relative_change = (max - min) / |last| over those epochs).

    Fewer than `window` epochs of val/loss (or a non-finite one among them) cannot be judged: not converged.
    """
    tolerance, window = check_tolerance(tolerance), check_window(window)
    verdict: dict[str, Any] = {
        "converged": False,
        "reason": "",
        "early_stopped": bool(early_stopped),
        "stopped_epoch": stopped_epoch,
        "tolerance": tolerance,
        "window": window,
        "relative_change": None,
    }
    recent = list(history)[-window:]
    if len(recent) == window and all(v is not None and math.isfinite(v) for v in recent):
        spread, last = max(recent) - min(recent), abs(recent[-1])
        verdict["relative_change"] = spread / last if last > 0 else (0.0 if spread == 0 else math.inf)
    if early_stopped:
        verdict["converged"] = True
        verdict["reason"] = f"early stopping on {monitor} ended training at epoch {stopped_epoch}"
        return verdict
    if verdict["relative_change"] is None:
        verdict["reason"] = (
            f"too few epochs to judge: {len(history)} epoch(s) of val/loss, {window} needed"
            if len(recent) < window
            else "val/loss is not finite in the last epochs"
        )
        return verdict
    change = verdict["relative_change"]
    verdict["converged"] = change < tolerance
    comparison = "below" if change < tolerance else "not below"
    verdict["reason"] = (
        f"val/loss changed by {100 * change:.2f}% over the last {window} epochs, {comparison} the tolerance "
        f"of {100 * tolerance:g}%"
    )
    if not verdict["converged"] and recent[-1] < recent[0]:
        verdict["reason"] += " (still falling)"
    return verdict


def learned(
    loss: float | None,
    trivial_loss: float | None,
    trivial: str,
    metric: str,
    margin: float = MARGIN,
    floor: float | None = None,
    floor_name: str | None = None,
) -> dict[str, Any]:
    """Whether the model learned: its test `loss` at least `margin` of the way from the trivial predictor's
    down to `floor`, the least loss the task allows (0 unless given: for similarity pairs, whose target is a
    random image of the object's class, no model can beat predicting that class's mean image)."""
    margin = check_margin(margin)
    verdict: dict[str, Any] = {
        "learned": False,
        "reason": "",
        "loss": loss,
        "trivial_loss": trivial_loss,
        "trivial": trivial,
        "metric": metric,
        "margin": margin,
        "floor": floor,
        "floor_name": floor_name,
    }
    if loss is None or trivial_loss is None or not math.isfinite(loss) or not math.isfinite(trivial_loss):
        verdict["reason"] = f"{metric} of the model or of the {trivial} is not measured"
        return verdict
    lowest = 0.0 if floor is None or not math.isfinite(floor) else min(floor, trivial_loss)
    threshold = trivial_loss - margin * (trivial_loss - lowest)
    verdict["learned"] = loss <= threshold
    relation = "at least" if verdict["learned"] else "less than"
    if floor is None:
        verdict["reason"] = (
            f"{metric} {loss:.4f} against {trivial_loss:.4f} for the {trivial}: {relation} {100 * margin:g}% below it"
        )
    else:
        verdict["reason"] = (
            f"{metric} {loss:.4f} against {trivial_loss:.4f} for the {trivial} and {lowest:.4f} for the "
            f"{floor_name or 'floor'}: {relation} {100 * margin:g}% of the way down"
        )
    return verdict
