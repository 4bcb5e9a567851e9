"""Shared fixtures. Tests run on the real bundled MNIST; the verified-array cache lives in a
fresh temporary folder per test session, so every run exercises the first-load check too."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
MNIST_DIR = REPO / "data" / "mnist"

# Set before any test imports lightning_ae so every code path sees the session cache.
_SESSION_CACHE = tempfile.mkdtemp(prefix="lightning-ae-test-cache-")
os.environ["LIGHTNING_AE_CACHE_DIR"] = _SESSION_CACHE
os.environ.pop("LIGHTNING_AE_DATA_DIR", None)

OFFICIAL_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
OFFICIAL_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(scope="session")
def mnist():
    from lightning_ae.data import load_dataset

    return load_dataset("mnist")


@pytest.fixture(scope="session")
def datamodule():
    """The default DataModule (flat, seed 0), set up once for read-only tests."""
    from lightning_ae.data import ImageDataModule

    dm = ImageDataModule()
    dm.setup()
    return dm


def tensorboard_hparams(logdir: Path) -> tuple[Any, Any]:
    """What TensorBoard's HParams tab shows for `logdir`, computed by its own plugin backend: the experiment (its
    columns, in TensorBoard's order) and the session groups (its rows)."""
    from tensorboard import context
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.hparams import api_pb2, backend_context, get_experiment, list_session_groups

    multiplexer = plugin_event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(logdir))
    multiplexer.Reload()
    provider = data_provider.MultiplexerDataProvider(multiplexer, str(logdir))
    backend = backend_context.Context(base_plugin.TBContext(logdir=str(logdir), data_provider=provider))
    request = context.RequestContext()
    # The dashboard's own requests: up to 1000 hyper-parameters, then the session groups of every status.
    experiment = get_experiment.Handler(request, backend, "", api_pb2.GetExperimentRequest(hparams_limit=1000)).run()
    statuses = [api_pb2.STATUS_UNKNOWN, api_pb2.STATUS_SUCCESS, api_pb2.STATUS_FAILURE, api_pb2.STATUS_RUNNING]
    groups_request = api_pb2.ListSessionGroupsRequest(allowed_statuses=statuses, start_index=0, slice_size=1000)
    groups = list_session_groups.Handler(request, backend, "", groups_request).run()
    return experiment, groups.session_groups
