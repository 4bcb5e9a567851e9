"""How a run executes on Lightning: `GroupedSteps`, the opt-in speed path (see its module), and
`AtomicCheckpointIO`, how checkpoints are written."""

from lightning_ae.strategies.checkpoint_io import AtomicCheckpointIO, use_atomic_checkpoints
from lightning_ae.strategies.grouped import GroupedBatches, GroupedSteps

__all__ = ["AtomicCheckpointIO", "GroupedBatches", "GroupedSteps", "use_atomic_checkpoints"]
