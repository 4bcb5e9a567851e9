"""The sparse autoencoder: the MLP autoencoder plus an L1 penalty that pushes most code units to zero.

An example of a variant: one method (`objective`) on top of `Autoencoder`, one config
(`configs/sparse_ae.yaml`), one test (`tests/test_sparse_ae.py`); training, the CLI and every
evaluation callback come with the base class.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor
from typing_extensions import override

from lightning_ae.checks import check_non_negative
from lightning_ae.models.autoencoder import Autoencoder


class SparseAutoencoder(Autoencoder):
    """`Autoencoder` trained on reconstruction + `sparsity` x the mean L1 norm of the code.

    With a ReLU code (`code_activation: relu`) the penalty drives most code units to exactly
    zero for each image; the test logs that fraction as `test/code_zero_fraction`.

    Args:
        sparsity: weight of the L1 penalty, per code unit summed over the code and averaged over images.
        **kwargs: everything `Autoencoder` takes (code_dim, hidden_dims, activations, loss, optimizer, ...).
    """

    def __init__(self, sparsity: float = 1e-3, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sparsity = check_non_negative("sparsity", sparsity)
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])

    @override
    def objective(self, logits: Tensor, target: Tensor, code: Tensor, stage: str) -> Tensor:
        l1 = code.abs().sum(dim=1).mean()
        self.log(f"{stage}/code_l1", l1, on_step=False, on_epoch=True, batch_size=len(code), sync_dist=True)
        if stage == "test":
            zeros = (code == 0).float().mean()
            self.log("test/code_zero_fraction", zeros, on_epoch=True, batch_size=len(code), sync_dist=True)
        return self.reconstruction_loss(logits, target) + self.sparsity * l1
