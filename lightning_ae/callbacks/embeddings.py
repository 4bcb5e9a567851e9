"""Pictures of the code space: TensorBoard's projector (`EmbeddingProjector`) and t-SNE (`TSNEPlot`)."""

from __future__ import annotations

import math

import numpy as np
import pytorch_lightning as pl
import torch
from matplotlib import colormaps
from matplotlib.figure import Figure
from sklearn.manifold import TSNE

from lightning_ae.callbacks.base import EvaluationCallback, timed
from lightning_ae.files import atomic_write

THUMBNAIL_PX = 28
SPRITE_MAX_PX = 8192  # the projector refuses larger sprites
MAX_SPRITE_ITEMS = (SPRITE_MAX_PX // THUMBNAIL_PX) ** 2  # a square grid of thumbnails: 292 x 292
MARKERS = "os^vD<>pPX*h"


def _check_count(name: str, value: object, upper: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= upper:
        raise ValueError(f"{name}={value!r} is not valid; valid: an integer in [1, {upper}].")


class EmbeddingProjector(EvaluationCallback):
    """Test-set codes to TensorBoard's Projector tab, labelled by class, each with its 28x28 image.

    `SummaryWriter.add_embedding` with `label_img` writes the codes, a metadata file of
    class names and a sprite: a square grid of the thumbnails, which the projector
    refuses above 8192 px, hence at most 292^2 = 85,264 items.
    """

    def __init__(self, max_items: int = 10000, tag: str = "codes") -> None:
        super().__init__()
        _check_count("max_items", max_items, MAX_SPRITE_ITEMS)
        self.max_items, self.tag = max_items, tag

    @staticmethod
    def sprite_side_px(count: int) -> int:
        return math.ceil(math.sqrt(count)) * THUMBNAIL_PX

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        writer = self.tensorboard(trainer)
        if writer is None or not trainer.is_global_zero:
            return
        data = self.data(trainer)
        split = data.split("test")
        images, labels = split.images[: self.max_items], split.labels[: self.max_items]
        codes, _ = self.encode(pl_module, images, data.eval_batch_size)
        _, seconds = timed(
            lambda: writer.add_embedding(
                codes.cpu(),
                metadata=[data.class_names[label] for label in labels.tolist()],
                label_img=images.reshape(-1, 1, THUMBNAIL_PX, THUMBNAIL_PX).cpu(),
                global_step=trainer.global_step,
                tag=self.tag,
            ),
            torch.device("cpu"),
        )
        writer.flush()
        self.timings["projector_seconds"] = seconds


class TSNEPlot(EvaluationCallback):
    """A 2-D map of the test codes: sklearn's t-SNE of up to `max_points` codes, or the codes themselves at d'=2.

    One colour and marker per class; written as `filename` in the run's folder and sent
    to TensorBoard (tag `test/tsne`).
    """

    def __init__(
        self, max_points: int = 5000, perplexity: float = 30.0, seed: int = 0, filename: str = "tsne.png"
    ) -> None:
        super().__init__()
        _check_count("max_points", max_points, 70000)
        if not 1.0 <= perplexity < max_points:
            raise ValueError(f"perplexity={perplexity!r} is not valid; valid: 1 <= perplexity < max_points.")
        if not filename.endswith(".png"):
            raise ValueError(f"filename={filename!r} is not valid; valid: a name ending in .png.")
        self.max_points, self.perplexity, self.seed, self.filename = max_points, perplexity, seed, filename

    def embed(self, codes: np.ndarray) -> tuple[np.ndarray, str]:
        if codes.shape[1] == 2:
            return codes, "codes (d'=2, no t-SNE needed)"
        tsne = TSNE(n_components=2, perplexity=self.perplexity, init="pca", random_state=self.seed)
        return tsne.fit_transform(codes), f"t-SNE of d'={codes.shape[1]} codes"

    @staticmethod
    def figure(points: np.ndarray, labels: np.ndarray, class_names: tuple[str, ...], title: str) -> Figure:
        # A bare Figure (no pyplot): no global figure registry, no display backend.
        fig = Figure(figsize=(7, 6.5), dpi=120)
        ax = fig.subplots()
        colours = colormaps["tab10" if len(class_names) <= 10 else "tab20"]
        for c, name in enumerate(class_names):
            at = labels == c
            ax.scatter(*points[at].T, s=6, alpha=0.7, color=colours(c), marker=MARKERS[c % len(MARKERS)], label=name)
        ax.set_title(f"{title}, {len(points)} test images")
        ax.legend(markerscale=2.5, fontsize=8, loc="best", ncols=2)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.tight_layout()
        return fig

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        data = self.data(trainer)
        split = data.split("test")
        codes, _ = self.encode(pl_module, split.images[: self.max_points], data.eval_batch_size)
        (points, title), seconds = timed(lambda: self.embed(codes.double().cpu().numpy()), torch.device("cpu"))
        self.timings["tsne_seconds"] = seconds
        labels = split.labels[: self.max_points].cpu().numpy()  # the split may live on the accelerator
        fig = self.figure(points, labels, data.class_names, title)
        with atomic_write(self.output_dir(trainer) / self.filename) as handle:
            fig.savefig(handle, format="png")
        writer = self.tensorboard(trainer)
        if writer is not None:
            writer.add_figure("test/tsne", fig, global_step=trainer.global_step, close=False)
