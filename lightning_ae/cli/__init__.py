"""The `lightning-ae` command: `commands` dispatches, `errors` turns failures into one-line messages.

What runs a config (a fit or a pipeline) is `lightning_ae.experiment`, shared with the study runner.
"""

from lightning_ae.cli.commands import main
from lightning_ae.experiment import lightning_cli

__all__ = ["lightning_cli", "main"]
