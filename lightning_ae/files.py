"""Writing files so that a crash or a kill never leaves a half-written one behind, and finding them again."""

from __future__ import annotations

import json
import logging
import os
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

log = logging.getLogger(__name__)


@contextmanager
def atomic_write(target: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside `target`; on success it replaces `target` in one rename.

    Readers see the old file or the complete new one, never a part; on an exception the
    temporary file is removed and `target` is left as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    # mkstemp creates the file readable by its owner only; give it the mode open() would (0666 less the umask),
    # as the checkpoints and logs beside it have.
    os.chmod(tmp_name, 0o666 & ~current_umask())
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def current_umask() -> int:
    """The process's umask (reading it means setting it; it is set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_json(target: str | os.PathLike, data: Any) -> None:
    """Write `data` as indented JSON, atomically. Non-finite floats are refused, not written as NaN."""
    text = json.dumps(data, indent=2, sort_keys=False, allow_nan=False)
    with atomic_write(target, "w") as handle:
        handle.write(text + "\n")


# torch.save's legacy format (before torch 1.6, or `_use_new_zipfile_serialization=False`) starts with this
# pickled magic number.
LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19."


def is_complete_checkpoint(path: str | os.PathLike) -> bool:
    """Whether `path` is a whole file written by torch.save.

    The zip format's directory comes last, so a cut-off file has none (checked without reading the file).
    A legacy-format file has no such directory: it is complete when a safe load reads it to the end.
    """
    if zipfile.is_zipfile(path):
        return True
    with open(path, "rb") as handle:
        if handle.read(len(LEGACY_TORCH_MAGIC)) != LEGACY_TORCH_MAGIC:
            return False
    import pickle

    import torch

    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except (EOFError, RuntimeError, pickle.UnpicklingError):
        return False
    return True


def resumable_checkpoint(folder: Path, what: str) -> Path | None:
    """The checkpoint in `folder` to resume `what` from: the newest complete state, whatever it is called.

    Lightning names a new `last.ckpt` `last-v1.ckpt` when one is already there, so the name says
    nothing about which is newer: the one with the most optimizer steps is taken (then the latest
    written). A cut-off checkpoint (written by an older version on a full disk, or copied in part)
    would fail every rerun the same way: it is renamed to `<name>.corrupt` with a warning. None:
    nothing to resume from, `what` starts afresh.
    """
    newest: tuple[tuple[int, int], Path] | None = None
    for path in sorted(folder.glob("*.ckpt")):
        if not path.is_file():
            continue
        if not is_complete_checkpoint(path):
            log.warning("%s: %s is not a complete checkpoint; set aside as %s.corrupt.", what, path, path.name)
            os.replace(path, path.with_name(f"{path.name}.corrupt"))
            continue
        order = (checkpoint_step(path), path.stat().st_mtime_ns)
        if newest is None or order > newest[0]:
            newest = (order, path)
    return None if newest is None else newest[1]


def checkpoint_step(path: Path) -> int:
    """The optimizer steps a Lightning checkpoint was saved after (-1 when it says none), read without loading
    its tensors."""
    import torch

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except Exception:  # a complete file that a safe load refuses: the resume itself says why
        return -1
    step = checkpoint.get("global_step") if isinstance(checkpoint, dict) else None
    return step if isinstance(step, int) and not isinstance(step, bool) else -1


def recorded_checkpoint(results_file: Path, recorded: str | None) -> Path | None:
    """The checkpoint a run's results.json names, from any working directory; None if it is gone.

    Runs record their best checkpoint as Lightning gives it: relative to the directory a CLI run
    ran from (absolute for pipelines and study runs). Read from elsewhere, or from a moved folder,
    it is found in the checkpoints folder beside the results.
    """
    if not recorded:
        return None
    beside = results_file.parent / "checkpoints" / Path(recorded).name
    for candidate in (Path(recorded), beside):
        if candidate.is_file():
            return candidate
    return None


# What a results.json may hold (written by ResultsJSON and the pre-training pipeline): each table maps names to
# numbers or null, never NaN (JSON has none; Python's reader accepts it), a string or a list.
NUMBER_TABLES = ("ae", "model", "pca", "last_epoch", "timings")
MAPPINGS = ("config", "convergence", "learned", "diverged", "trivial", "environment", "stages", "layers")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def results_problem(results: Any) -> str | None:
    """What makes a parsed results.json unusable (a list, a table holding text, a wrong-typed count), or None."""
    if not isinstance(results, dict):
        return f"it holds a JSON {type(results).__name__}, not an object"
    if not isinstance(results.get("status"), str):
        return f"'status' is {results.get('status')!r}, not a word such as \"tested\""
    for key in NUMBER_TABLES:
        table = results.get(key)
        if table is None or (key == "model" and isinstance(table, str)):  # an AE's "model" is its class name
            continue
        if not isinstance(table, dict):
            return f"{key!r} is a {type(table).__name__}, not a table of numbers"
        for name, value in table.items():
            if value is not None and not _is_number(value):
                return f"{key}.{name} is {value!r}, not a number"
    for key in MAPPINGS:
        if results.get(key) is not None and not isinstance(results[key], dict):
            return f"{key!r} is a {type(results[key]).__name__}, not an object"
    for name, stage in (results.get("stages") or {}).items():
        if not isinstance(stage, dict) or any(v is not None and not _is_number(v) for v in stage.values()):
            return f"stages.{name} is not a table of numbers"
    for key in ("epochs", "global_step"):
        if results.get(key) is not None and (not isinstance(results[key], int) or isinstance(results[key], bool)):
            return f"{key!r} is {results[key]!r}, not a whole number"
    history = results.get("val_loss_history")
    if history is not None and (
        not isinstance(history, list) or any(v is not None and not _is_number(v) for v in history)
    ):
        return "'val_loss_history' is not a list of numbers"
    return None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"it holds {name}, which JSON does not allow (a number that is not finite)")


def read_results_file(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """A results.json as (its content, None) when usable; (None, what is wrong) when damaged; (None, None) when absent.

    Every reader of a file that a run writes goes through here: a damaged file is named, never half-used.
    """
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None, None
    except (OSError, UnicodeDecodeError) as err:
        return None, f"it cannot be read ({err})"
    try:
        results = json.loads(text, parse_constant=_refuse_constant)
    except ValueError as err:
        return None, f"it is not valid JSON ({err})"
    problem = results_problem(results)
    return (None, problem) if problem else (results, None)


def set_aside(path: Path, why: str) -> Path:
    """Rename a damaged file to `<name>.corrupt` (numbered when one is there), so that nothing is lost."""
    target = path.with_name(f"{path.name}.corrupt")
    number = 1
    while target.exists():
        target, number = path.with_name(f"{path.name}.corrupt{number}"), number + 1
    log.warning("%s is damaged (%s); set aside as %s.", path, why, target.name)
    os.replace(path, target)
    return target


class FolderInUse(ValueError):
    """Another process is writing the same run (or pipeline, or study run): the second command is refused."""


def try_lock(path: Path) -> IO | None:
    """Hold an exclusive flock on `path` (made if absent, its folder too) for as long as the returned handle is
    open, with this process's pid in it; None when another process holds it. The kernel releases it when the
    process ends, however it ends."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")  # noqa: SIM115 (held open past this function: that is the lock)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def lock_folder(folder: Path, what: str) -> IO:
    """Hold `folder/.writing.lock` for as long as the returned handle is open (`try_lock`); FolderInUse when another
    process holds it."""
    path = folder / ".writing.lock"
    handle = try_lock(path)
    if handle is None:
        try:
            holder = path.read_text().strip() or "?"
        except OSError:
            holder = "?"
        raise FolderInUse(
            f"{folder} is in use: another process (pid {holder}) is writing {what} there. Two commands must not "
            "write one run; wait for it to end (or stop it), then run this again."
        )
    return handle


@contextmanager
def folder_locked(folder: Path, what: str) -> Iterator[None]:
    handle = lock_folder(folder, what)
    try:
        yield
    finally:
        handle.close()
