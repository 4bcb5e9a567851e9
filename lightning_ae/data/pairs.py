"""Similarity pairs (homework 2.3): each object image paired with `sim` random images of its class."""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_ae.checks import check_positive_int


def similarity_pairs(labels: Tensor, sim: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Index pairs (object, partner): every item of `labels` is an object with `sim` partners.

    Partners are drawn uniformly with replacement among the items of the same class
    in `labels` (the object itself included), as the homework's `similarity_data`
    does with `np.random.choice`. Built per class in one vectorised draw instead of
    the homework's concatenation in a loop, which is quadratic in the number of pairs.
    Returns two int64 tensors of length len(labels) * sim, objects in order, each
    repeated `sim` times.
    """
    check_positive_int("sim", sim, meaning="partners per object")
    objects = torch.arange(len(labels)).repeat_interleave(sim)
    partners = torch.empty_like(objects)
    object_labels = labels[objects]
    for cls in torch.unique(labels).tolist():
        members = torch.nonzero(labels == cls).flatten()
        slots = torch.nonzero(object_labels == cls).flatten()
        draws = torch.randint(len(members), (len(slots),), generator=generator)
        partners[slots] = members[draws]
    return objects, partners
