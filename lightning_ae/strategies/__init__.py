"""How a run executes on Lightning: `GroupedSteps`, the opt-in speed path (see its module),
`AtomicCheckpointIO`, how checkpoints are written, and who requeues a preempted SLURM job."""

from lightning_ae.strategies.checkpoint_io import AtomicCheckpointIO, use_atomic_checkpoints
from lightning_ae.strategies.cluster import REQUEUE_BY_ENGINE, leave_requeue_to_the_engine
from lightning_ae.strategies.grouped import GroupedBatches, GroupedSteps

__all__ = [
    "REQUEUE_BY_ENGINE",
    "AtomicCheckpointIO",
    "GroupedBatches",
    "GroupedSteps",
    "leave_requeue_to_the_engine",
    "use_atomic_checkpoints",
]
