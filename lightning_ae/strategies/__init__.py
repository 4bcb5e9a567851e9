"""How a training step executes: `GroupedSteps`, the opt-in speed path (see its module)."""

from lightning_ae.strategies.grouped import GroupedBatches, GroupedSteps

__all__ = ["GroupedBatches", "GroupedSteps"]
