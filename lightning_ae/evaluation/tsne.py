"""t-SNE maps of codes: sklearn's Barnes-Hut on the CPU, or exact t-SNE in torch on a GPU.

On a GPU the evaluation of a run used to cost more than its training, most of it t-SNE: sklearn
runs on the host (Barnes-Hut, O(N log N) per iteration, 9.5 s for 5,000 codes on an H200's host
against 4.9 s of training). Exact t-SNE is O(N^2) per iteration, but for the few thousand points a
plot shows that is a handful of dense matrix operations a GPU does in about a millisecond.

`exact_tsne` follows sklearn's `TSNE(method="exact")` step for step, with its defaults:
conditional probabilities at the given perplexity by a bisection on each point's precision,
symmetrised; the initial map from PCA scaled to a standard deviation of 1e-4; gradient descent with
gains (+0.2 / x0.8, at least 0.01), 250 iterations with momentum 0.5 and the affinities exaggerated
12 times, then momentum 0.8 up to 1,000 iterations; learning rate max(N / 12 / 4, 50). Unlike
sklearn it always runs all iterations (sklearn may stop after 300 without progress). The map it
draws is as faithful as sklearn's (the tests compare trustworthiness and KL divergence); it is not
the same picture, as no two t-SNE implementations give the same one.

"auto" (what `TSNEPlot` uses): exact torch where the codes are on a CUDA device and there are at
most `TORCH_MAX_POINTS` of them (its N x N matrices: 200 MB each at 5,000 points, float64), else
sklearn's Barnes-Hut on the CPU. If the device runs out of memory, "auto" falls back to sklearn with
a warning.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
from sklearn.manifold import TSNE
from torch import Tensor

log = logging.getLogger(__name__)

IMPLEMENTATIONS = ("auto", "torch", "sklearn")
TORCH_MAX_POINTS = 10_000
EARLY_EXAGGERATION, EXPLORATION_ITERATIONS, MAX_ITERATIONS = 12.0, 250, 1000
_EPSILON = np.finfo(np.double).eps  # sklearn's MACHINE_EPSILON


def check_tsne_implementation(implementation: str) -> None:
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"implementation={implementation!r} is not valid; valid: {list(IMPLEMENTATIONS)}.")


def choose_implementation(count: int, device: torch.device, implementation: str = "auto") -> str:
    """What `implementation` means for `count` codes on `device`: "torch" or "sklearn"."""
    if implementation != "auto":
        return implementation
    return "torch" if device.type == "cuda" and count <= TORCH_MAX_POINTS else "sklearn"


def tsne(
    codes: Tensor, perplexity: float = 30.0, seed: int = 0, implementation: str = "auto"
) -> tuple[np.ndarray, str]:
    """A 2-D t-SNE map of `codes` (N x d), as a float64 array on the host, and the implementation that made it."""
    check_tsne_implementation(implementation)
    if choose_implementation(len(codes), codes.device, implementation) == "torch":
        try:
            return exact_tsne(codes, perplexity).cpu().numpy(), "torch"
        except torch.cuda.OutOfMemoryError as error:  # a small GPU: its N x N matrices did not fit; nothing is lost
            if implementation == "torch":
                raise
            torch.cuda.empty_cache()
            log.warning(
                "Exact t-SNE of %d codes ran out of GPU memory (%s); using sklearn's Barnes-Hut on the CPU instead "
                "(TSNEPlot's max_points bounds the points).",
                len(codes),
                str(error).splitlines()[0],
            )
    model = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed)
    return model.fit_transform(codes.detach().double().cpu().numpy()), "sklearn"


def squared_distances(points: Tensor) -> Tensor:
    squared = (points * points).sum(1)
    distances = squared[:, None] + squared[None, :] - 2 * points @ points.T
    return distances.clamp_min_(0).fill_diagonal_(0)


def joint_probabilities(codes: Tensor, perplexity: float, steps: int = 100, tolerance: float = 1e-5) -> Tensor:
    """sklearn's `_joint_probabilities`: P_{j|i} at the perplexity for every i at once, symmetrised, summing to 1."""
    distances = squared_distances(codes)
    n = len(codes)
    target = math.log(perplexity)
    beta = torch.ones(n, dtype=codes.dtype, device=codes.device)
    low = torch.full_like(beta, -math.inf)
    high = torch.full_like(beta, math.inf)
    off_diagonal = ~torch.eye(n, dtype=torch.bool, device=codes.device)
    for _ in range(steps):  # sklearn's _binary_search_perplexity, vectorised over the points
        conditional = torch.exp(-distances * beta[:, None]) * off_diagonal
        total = conditional.sum(1).clamp_min(_EPSILON)
        conditional = conditional / total[:, None]
        entropy = torch.log(total) + beta * (distances * conditional).sum(1)
        difference = entropy - target
        if bool((difference.abs() <= tolerance).all()):
            break
        too_flat = difference > 0  # entropy too high: sharpen (raise beta)
        low = torch.where(too_flat, beta, low)
        high = torch.where(too_flat, high, beta)
        raised = torch.where(torch.isinf(high), beta * 2, (beta + high) / 2)
        lowered = torch.where(torch.isinf(low), beta / 2, (beta + low) / 2)
        beta = torch.where(too_flat, raised, lowered)
    joint = conditional + conditional.T
    return (joint / joint.sum()).clamp_min(_EPSILON)


def pca_start(codes: Tensor) -> Tensor:
    """sklearn's init="pca": the first two principal components, scaled to a standard deviation of 1e-4."""
    centred = codes - codes.mean(0)
    u, s, _ = torch.linalg.svd(centred, full_matrices=False)
    start = u[:, :2] * s[:2]
    return start / start[:, 0].std(unbiased=False) * 1e-4


def student_t(points: Tensor) -> tuple[Tensor, Tensor]:
    """The map's Student-t kernel (one degree of freedom, zero diagonal) and Q, its normalised form."""
    kernel = (1.0 / (1.0 + squared_distances(points))).fill_diagonal_(0)
    return kernel, (kernel / kernel.sum()).clamp_min(_EPSILON)


def kl_divergence(points: Tensor, joint: Tensor) -> Tensor:
    """KL(P || Q), what t-SNE minimises (the value of sklearn's `_kl_divergence`)."""
    _, similarity = student_t(points)
    return (joint * torch.log(joint / similarity)).sum()


def kl_gradient(points: Tensor, joint: Tensor) -> Tensor:
    """The gradient of KL(P || Q) with respect to the map (sklearn's `_kl_divergence`'s); not the value itself,
    which the descent never needs (its logarithm over N x N pairs would cost a third of each iteration)."""
    kernel, similarity = student_t(points)
    weights = (joint - similarity) * kernel
    return 4.0 * (weights.sum(1, keepdim=True) * points - weights @ points)


def exact_tsne(codes: Tensor, perplexity: float = 30.0) -> Tensor:
    """Exact t-SNE of `codes` where they live (N x 2, float64); sklearn's exact method with its defaults."""
    codes = codes.detach().double()
    n = len(codes)
    if not 1.0 <= perplexity < n:
        raise ValueError(f"perplexity={perplexity!r} is not valid for {n} points; valid: 1 <= perplexity < {n}.")
    joint = joint_probabilities(codes, perplexity) * EARLY_EXAGGERATION
    points = pca_start(codes)
    update, gains = torch.zeros_like(points), torch.ones_like(points)
    learning_rate = max(n / EARLY_EXAGGERATION / 4, 50.0)
    for iteration in range(MAX_ITERATIONS):
        if iteration == EXPLORATION_ITERATIONS:
            joint = joint / EARLY_EXAGGERATION
        momentum = 0.5 if iteration < EXPLORATION_ITERATIONS else 0.8
        gradient = kl_gradient(points, joint)
        same_sign = update * gradient >= 0  # sklearn's gains: grow where the step changes direction
        gains = torch.where(same_sign, gains * 0.8, gains + 0.2).clamp_min_(0.01)
        update = momentum * update - learning_rate * gains * gradient
        points = points + update
    return points
