"""The study's HParams experiment definition: one table for all its runs in TensorBoard's HParams tab.

Each run writes its session (its hyper-parameters; `callbacks.hparams.HParamsSummary`) and no
experiment definition. Without any, TensorBoard builds one from all the sessions, but sorts the
columns by name and shows only the first five hyper-parameters and five metrics (every scalar
tag, `epoch` and `train/loss` among them). This definition, written into the study's `runs/`
(so that `tensorboard --logdir` finds it given the study's folder or its `runs/`), lists the same
columns with the study's grid keys first and its headline metrics as the metrics.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

from google.protobuf import struct_pb2
from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2
from tensorboard.summary.writer.record_writer import RecordWriter

from lightning_ae.study.spec import Study

# The numbers a study is compared on (the report's too), in this order where a run has them.
HEADLINE_METRICS = ("test/knn_acc", "test/bce_per_pixel", "test/error")
# A fixed name (TensorBoard reads any file with `tfevents` in its name): rewritten, not added to, by each session.
EVENT_FILE = "events.out.tfevents.study-hparams"


def _events(folder: Path) -> Iterator[event_pb2.Event]:
    """The events of the runs' files that hold a session or a headline metric (a byte test skips the rest)."""
    wanted = (metadata.SESSION_START_INFO_TAG.encode(), *(name.encode() for name in HEADLINE_METRICS))
    for path in sorted((folder / "runs").glob("**/*tfevents*")):
        if path.name == EVENT_FILE:  # the definition itself
            continue
        for record in RawEventFileLoader(str(path)).Load():
            if any(word in record for word in wanted):
                yield event_pb2.Event.FromString(record)


def _info(name: str, values: list[struct_pb2.Value], grid: bool) -> api_pb2.HParamInfo:
    kinds = {value.WhichOneof("kind") for value in values}
    kind = kinds.pop() if len(kinds) == 1 else "string_value"  # mixed types: text, as TensorBoard does
    types = {"number_value": api_pb2.DATA_TYPE_FLOAT64, "bool_value": api_pb2.DATA_TYPE_BOOL}
    # `differs` set on the grid keys alone: TensorBoard lists the columns that differ first and shows the first five.
    info = api_pb2.HParamInfo(name=name, type=types.get(kind, api_pb2.DATA_TYPE_STRING), differs=grid)
    if kind == "number_value":
        numbers = [value.number_value for value in values]
        info.domain_interval.min_value, info.domain_interval.max_value = min(numbers), max(numbers)
    elif kind == "bool_value":
        info.domain_discrete.values.extend(
            struct_pb2.Value(bool_value=b) for b in sorted({v.bool_value for v in values})
        )
    else:  # the values to filter on (the dashboard offers a checkbox per value)
        texts = sorted({str(getattr(value, value.WhichOneof("kind"))) for value in values})
        info.domain_discrete.values.extend(struct_pb2.Value(string_value=text) for text in texts)
    return info


def grid_column(key: str, columns: set[str]) -> str | None:
    """The HParams column of a grid key (`model.init_args.code_dim` -> `code_dim`): the longest column the dotted key
    ends with, as the runs name their settings (model settings bare, data settings under `data.`)."""
    matches = [column for column in columns if key == column or key.endswith(f".{column}")]
    return max(matches, key=len, default=None)


def study_experiment(study: Study, folder: Path) -> api_pb2.Experiment | None:
    """The experiment definition of the runs in `folder` that have a session; None when none has one yet."""
    values: dict[str, list[struct_pb2.Value]] = defaultdict(list)
    metrics: set[str] = set()
    for event in _events(folder):
        for value in event.summary.value:
            if value.tag == metadata.SESSION_START_INFO_TAG:
                start = metadata.parse_session_start_info_plugin_data(value.metadata.plugin_data.content)
                for name, hparam in start.hparams.items():
                    values[name].append(hparam)
            elif value.tag in HEADLINE_METRICS:
                metrics.add(value.tag)
    if not values:
        return None
    grid_keys = {key for run in study.runs for key in run.labels}
    grid = {column for key in grid_keys if (column := grid_column(key, set(values))) is not None}
    names = sorted(values, key=lambda name: (name not in grid, name))
    return api_pb2.Experiment(
        description=study.description,
        hparam_infos=[_info(name, values[name], name in grid) for name in names],
        metric_infos=[api_pb2.MetricInfo(name=api_pb2.MetricName(tag=m)) for m in HEADLINE_METRICS if m in metrics],
    )


def write_study_hparams(study: Study, folder: Path) -> Path | None:
    """Write (replace) the study's experiment definition into `folder`/runs; returns its file, or None before any
    run."""
    experiment = study_experiment(study, folder)
    if experiment is None:
        return None
    experiment.time_created_secs = time.time()
    # As tensorboard.plugins.hparams.summary.experiment_pb writes it (that module needs TensorFlow).
    content = metadata.create_summary_metadata(plugin_data_pb2.HParamsPluginData(experiment=experiment))
    definition = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=metadata.EXPERIMENT_TAG, metadata=content)])
    target = folder / "runs" / EVENT_FILE
    # Beside the target under a name without `tfevents`, so TensorBoard never reads it half-written.
    temporary = target.with_name(f".study-hparams.{os.getpid()}.tmp")
    with open(temporary, "wb") as handle:
        writer = RecordWriter(handle)
        for event in (event_pb2.Event(file_version="brain.Event:2"), event_pb2.Event(summary=definition)):
            event.wall_time = time.time()
            writer.write(event.SerializeToString())
    os.replace(temporary, target)
    return target
