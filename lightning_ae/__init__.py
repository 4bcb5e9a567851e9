"""lightning-ae: the classic autoencoder study on MNIST as a PyTorch Lightning trainer."""

__version__ = "0.1.0"
