"""The global random state in every checkpoint, so that a resumed run draws what an unstopped one would have."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from typing_extensions import override


class RandomStateInCheckpoints(pl.Callback):
    """Saves the global random states (torch CPU and CUDA, numpy, Python) with each checkpoint; resuming restores them.

    Dropout masks and anything else drawn from the global generators then continue as in a run never stopped
    (the data order and corruption noise have seeded generators of their own). Plain values only, so the
    checkpoint still loads with weights_only=True.
    """

    @override
    def state_dict(self) -> dict[str, Any]:
        kind, keys, position, has_gauss, cached_gaussian = np.random.get_state()
        version, python_state, gauss = random.getstate()
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [kind, keys.tolist(), position, has_gauss, cached_gaussian],
            "python": [version, list(python_state), gauss],
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not state_dict:
            return  # a checkpoint from before this callback: nothing to restore
        torch.set_rng_state(state_dict["torch"])
        cuda = state_dict.get("cuda") or []
        if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        kind, keys, position, has_gauss, cached_gaussian = state_dict["numpy"]
        np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached_gaussian))
        version, python_state, gauss = state_dict["python"]
        random.setstate((version, tuple(python_state), gauss))
