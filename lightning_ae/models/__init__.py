"""Models: LightningModules with `encode`, `decode` and `forward`. Nothing here imports callbacks or the CLI."""

from lightning_ae.models.autoencoder import Autoencoder
from lightning_ae.models.base import AutoencoderBase
from lightning_ae.models.classifier import Classifier
from lightning_ae.models.conv import ConvAutoencoder
from lightning_ae.models.sparse import SparseAutoencoder

__all__ = ["Autoencoder", "AutoencoderBase", "Classifier", "ConvAutoencoder", "SparseAutoencoder"]
