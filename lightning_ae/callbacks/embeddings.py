"""Pictures of the code space: TensorBoard's projector (`EmbeddingProjector`) and t-SNE (`TSNEPlot`)."""

from __future__ import annotations

import hashlib
import logging
import math

import numpy as np
import pytorch_lightning as pl
import torch
from matplotlib import colormaps
from matplotlib.figure import Figure
from pytorch_lightning.utilities import rank_zero_warn
from typing_extensions import override

from lightning_ae.callbacks.base import EvaluationCallback, logging_step, timed
from lightning_ae.callbacks.images import image_shape
from lightning_ae.callbacks.pca import PCABaseline, pca_cache_file
from lightning_ae.checks import check_path_segment
from lightning_ae.data.datasets import largest_image_side
from lightning_ae.evaluation.pca import as_numpy, fit_pca
from lightning_ae.evaluation.tsne import check_tsne_implementation, choose_implementation, tsne
from lightning_ae.files import atomic_write

log = logging.getLogger(__name__)

SPRITE_MAX_PX = 8192  # the projector refuses larger sprites


def max_sprite_items(thumbnail_px: int) -> int:
    """The most thumbnails of `thumbnail_px` a side that fit a square sprite (292 x 292 for MNIST's)."""
    return (SPRITE_MAX_PX // thumbnail_px) ** 2


# What `max_items` may be before the data is known: the bound of the largest images among the known datasets.
MAX_SPRITE_ITEMS = max_sprite_items(largest_image_side())
MARKERS = "os^vD<>pPX*h"


def _check_count(name: str, value: object, upper: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= upper:
        raise ValueError(f"{name}={value!r} is not valid; valid: an integer in [1, {upper}].")


class EmbeddingProjector(EvaluationCallback):
    """Test-set codes to TensorBoard's Projector tab, labelled by class, each with its image.

    `SummaryWriter.add_embedding` with `label_img` writes the codes, a metadata file of
    class names and a sprite: a square grid of the thumbnails, which the projector
    refuses above 8192 px, hence at most (8192 // image side)^2 items (292^2 = 85,264 for MNIST).
    """

    def __init__(self, max_items: int = 10000, tag: str = "codes") -> None:
        super().__init__()
        _check_count("max_items", max_items, MAX_SPRITE_ITEMS)
        self.max_items, self.tag = max_items, check_path_segment("tag", tag)  # the projector's folder is named after it

    @staticmethod
    def sprite_side_px(count: int, thumbnail_px: int) -> int:
        return math.ceil(math.sqrt(count)) * thumbnail_px

    @override
    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        writer = self.tensorboard(trainer)
        if writer is None or not trainer.is_global_zero:
            return
        data = self.data(trainer)
        split = data.split("test")
        shape = image_shape(split)
        count = min(self.max_items, max_sprite_items(max(shape[1:])))
        if count < min(self.max_items, len(split.images)):
            rank_zero_warn(
                f"EmbeddingProjector: {self.max_items} items of {shape} images exceed the projector's sprite; "
                f"sending the first {count}."
            )
        images, labels = split.images[:count], split.labels[:count]
        codes, _ = self.encode(pl_module, images, data.eval_batch_size)
        _, seconds = timed(
            lambda: writer.add_embedding(
                codes.cpu(),
                metadata=[data.class_names[label] for label in labels.tolist()],
                label_img=images.reshape(-1, *shape).cpu(),
                global_step=logging_step(trainer),
                tag=self.tag,
            ),
            torch.device("cpu"),
        )
        writer.flush()
        self.timings["projector_seconds"] = seconds


class TSNEPlot(EvaluationCallback):
    """A 2-D map of the test codes: t-SNE of up to `max_points` codes, or the codes themselves at d'=2.

    `implementation` (`lightning_ae.evaluation.tsne`): "auto" runs exact t-SNE in torch where the model
    is on a CUDA device (about a second for 5,000 codes), sklearn's Barnes-Hut on the CPU elsewhere;
    "torch" or "sklearn" force one.

    One colour and marker per class; written as `filename` in the run's folder and sent
    to TensorBoard (tag `test/tsne`).

    Beside it, for an autoencoder that compresses (d' below the input size), the same map of
    PCA's codes at the same d' for the same test images (homework 2.1e compares the two):
    PCA fitted on the clean training split, as `PCABaseline` fits it (its cached fit is
    reused), then the same t-SNE; written as `pca_filename` (null: not drawn) and sent to
    TensorBoard (tag `test/pca_tsne`). The study report shows these files; it computes nothing.
    """

    def __init__(
        self,
        max_points: int = 5000,
        perplexity: float = 30.0,
        seed: int = 0,
        filename: str = "tsne.png",
        pca_filename: str | None = "pca_tsne.png",
        implementation: str = "auto",
    ) -> None:
        super().__init__()
        check_tsne_implementation(implementation)
        _check_count("max_points", max_points, 70000)
        if not 1.0 <= perplexity < max_points:
            raise ValueError(f"perplexity={perplexity!r} is not valid; valid: 1 <= perplexity < max_points.")
        for name, value in (("filename", filename), ("pca_filename", pca_filename)):
            if value is not None and not value.endswith(".png"):
                raise ValueError(f"{name}={value!r} is not valid; valid: a name ending in .png.")
        if filename is None:
            raise ValueError("filename=None is not valid; valid: a name ending in .png.")
        self.max_points, self.perplexity, self.seed = max_points, perplexity, seed
        self.filename = check_path_segment("filename", filename)
        self.pca_filename = None if pca_filename is None else check_path_segment("pca_filename", pca_filename)
        self.implementation = implementation

    def embed(self, codes: np.ndarray | torch.Tensor, device: torch.device | None = None) -> tuple[np.ndarray, str]:
        """The map's points on the host, and its title; t-SNE runs on `device` (default: where the codes are)."""
        if codes.shape[1] == 2:
            points = codes if isinstance(codes, np.ndarray) else codes.detach().double().cpu().numpy()
            return points, "codes (d'=2, no t-SNE needed)"
        tensor = torch.as_tensor(codes)
        if device is not None:
            tensor = tensor.to(device)
        points, how = tsne(tensor, self.perplexity, self.seed, self.implementation)
        return points, f"t-SNE ({'exact, torch' if how == 'torch' else how}) of d'={codes.shape[1]} codes"

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

    @override
    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        data = self.data(trainer)
        split = data.split("test")
        codes, _ = self.encode(pl_module, split.images[: self.max_points], data.eval_batch_size)
        (points, title), seconds = timed(lambda: self.embed(codes), codes.device)
        self.timings["tsne_seconds"] = seconds
        labels = split.labels[: self.max_points].cpu().numpy()  # the split may live on the accelerator
        fig = self.figure(points, labels, data.class_names, title)
        with atomic_write(self.output_dir(trainer) / self.filename) as handle:
            fig.savefig(handle, format="png")
        writer = self.tensorboard(trainer)
        if writer is not None:
            writer.add_figure("test/tsne", fig, global_step=logging_step(trainer), close=False)
        dim, input_dim = getattr(pl_module, "code_dim", None), getattr(pl_module, "input_dim", None)
        if self.pca_filename is not None and dim is not None and input_dim is not None and dim < input_dim:
            (pca_points, pca_title), seconds = timed(
                lambda: self.pca_map(trainer, int(dim), codes.device), codes.device
            )
            self.timings["pca_tsne_seconds"] = seconds
            pca_fig = self.figure(pca_points, labels, data.class_names, f"PCA: {pca_title}")
            with atomic_write(self.output_dir(trainer) / self.pca_filename) as handle:
                pca_fig.savefig(handle, format="png")
            if writer is not None:
                writer.add_figure("test/pca_tsne", pca_fig, global_step=logging_step(trainer), close=False)

    def pca_map(self, trainer: pl.Trainer, dim: int, device: torch.device) -> tuple[np.ndarray, str]:
        """The PCA panel's points and title: PCA's d'-dimensional codes of the test images this map shows (the fit
        cached as PCABaseline's), through the same t-SNE. The map depends only on the data, d' and this callback's
        settings, so it is cached beside the PCA fit: a later run at the same d' reads it and needs no PCA at all
        (a t-SNE is 29 s on 2 cores)."""
        data = self.data(trainer)
        train_flat = as_numpy(data.split("train").images)
        shown = as_numpy(data.split("test").images[: self.max_points])
        baseline = next((c for c in trainer.callbacks if isinstance(c, PCABaseline)), None)
        pca_file = pca_cache_file(train_flat, dim, baseline.cache_dir if baseline is not None else None)
        cached = None
        if pca_file is not None and dim != 2:  # at d'=2 the codes are the map: nothing to cache
            # Keyed by the PCA fit (its file's name holds the training data's hash and d'), the test images shown
            # and the t-SNE settings; not by the codes' bytes, which differ in the last bits between a fresh and a
            # read fit.
            how = choose_implementation(len(shown), device, self.implementation)
            settings = f"{pca_file.name},{self.perplexity!r},{self.seed},{how}".encode()
            key = hashlib.sha256(settings + np.ascontiguousarray(shown).data).hexdigest()[:20]
            cached = pca_file.with_name(f"tsne-{pca_file.stem}-{key}.npz")  # not "pca-*": that names PCA fits
            if cached.exists():
                try:
                    with np.load(cached) as stored:
                        points, title = stored["points"], str(stored["title"])
                    if points.shape == (len(shown), 2) and np.isfinite(points).all():
                        return points, title
                except (OSError, ValueError, KeyError) as err:
                    log.warning("Unreadable PCA t-SNE cache %s (%s); computing it again.", cached, err)
        pca, _ = fit_pca(train_flat, dim, pca_file)
        points, title = self.embed(pca.transform(shown).astype(np.float64), device)
        if cached is not None:
            try:
                with atomic_write(cached) as handle:
                    np.savez(handle, points=points, title=np.array(title))
            except OSError as err:  # a read-only cache costs time, never correctness
                log.warning("Cannot write the PCA t-SNE cache %s (%s).", cached, err)
        return points, title
