"""Checkpoints are written atomically: a full disk or a kill mid-write leaves the previous file, never a cut-off one."""

from __future__ import annotations

import errno

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.plugins.io import TorchCheckpointIO

from lightning_ae.files import is_complete_checkpoint, resumable_checkpoint
from lightning_ae.strategies import AtomicCheckpointIO, GroupedSteps, use_atomic_checkpoints


def test_a_write_that_fails_half_way_leaves_the_previous_checkpoint_and_no_temporary_file(tmp_path, monkeypatch):
    target = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": 1, "w": torch.ones(3)}, target)
    real_save = torch.save

    def disk_fills(obj, handle, *args, **kwargs):
        handle.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_fills)
    with pytest.raises(OSError, match="No space left"):
        io.save_checkpoint({"step": 2, "w": torch.zeros(3)}, target)
    monkeypatch.setattr(torch, "save", real_save)
    assert torch.load(target, weights_only=True)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_lightnings_own_writer_leaves_a_cut_off_file_where_ours_does_not(tmp_path, monkeypatch):
    """The reference: the same failure (the disk fills while the file is copied into place) through Lightning's
    TorchCheckpointIO leaves a truncated file under the real name."""
    import shutil

    def copy_fills(src, dst, *args, **kwargs):
        with open(src, "rb") as source, open(dst, "wb") as target:
            target.write(source.read()[:100])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(shutil, "move", copy_fills)
    with pytest.raises(OSError):
        TorchCheckpointIO().save_checkpoint({"w": torch.ones(1000)}, tmp_path / "lightning.ckpt")
    assert (tmp_path / "lightning.ckpt").exists() and not is_complete_checkpoint(tmp_path / "lightning.ckpt")


@pytest.mark.parametrize("strategy", ["auto", GroupedSteps()], ids=["default", "grouped"])
def test_trainers_get_the_atomic_writer_unless_the_user_chose_one(strategy):
    trainer = pl.Trainer(strategy=strategy, logger=False, enable_checkpointing=False)
    use_atomic_checkpoints(trainer)
    assert type(trainer.strategy.checkpoint_io) is AtomicCheckpointIO

    class Mine(TorchCheckpointIO):
        pass

    chosen = pl.Trainer(plugins=[Mine()], logger=False, enable_checkpointing=False)
    use_atomic_checkpoints(chosen)
    assert type(chosen.strategy.checkpoint_io) is Mine


def test_the_cli_and_the_pipeline_write_checkpoints_atomically(tmp_path):
    from conftest import REPO

    from lightning_ae.callbacks import ResultsJSON
    from lightning_ae.experiment import lightning_cli
    from lightning_ae.pretraining import LayerwisePretraining, Stage

    cli = lightning_cli(["--config", str(REPO / "configs" / "basic_ae.yaml")], run=False)
    assert type(cli.trainer.strategy.checkpoint_io) is AtomicCheckpointIO
    pipeline = LayerwisePretraining(output_dir=str(tmp_path))
    assert type(pipeline._trainer("layer1", Stage(), ResultsJSON()).strategy.checkpoint_io) is AtomicCheckpointIO


def test_resuming_takes_the_newest_complete_checkpoint_and_sets_cut_off_ones_aside(tmp_path, caplog):
    import os

    folder = tmp_path / "checkpoints"
    folder.mkdir()
    assert resumable_checkpoint(folder, "run x") is None
    for age, name in enumerate(["best-epoch3.ckpt", "best-epoch5.ckpt"]):
        torch.save({"name": name}, folder / name)
        os.utime(folder / name, (1000 + age, 1000 + age))
    torch.save({"name": "last"}, folder / "last.ckpt")
    assert resumable_checkpoint(folder, "run x") == folder / "last.ckpt"

    for name in ("last.ckpt", "best-epoch5.ckpt"):
        (folder / name).write_bytes((folder / name).read_bytes()[:64])
    with caplog.at_level("WARNING"):
        assert resumable_checkpoint(folder, "run x") == folder / "best-epoch3.ckpt"
    assert sorted(p.name for p in folder.iterdir()) == [
        "best-epoch3.ckpt",
        "best-epoch5.ckpt.corrupt",
        "last.ckpt.corrupt",
    ]
    assert "run x:" in caplog.text and "is not a complete checkpoint" in caplog.text


def test_a_legacy_format_checkpoint_is_complete_and_a_cut_off_one_is_not(tmp_path):
    """torch.save's pre-1.6 format is no zip archive: it is recognised by its magic number and read to the end."""
    legacy = tmp_path / "legacy.ckpt"
    torch.save({"state_dict": {"w": torch.ones(100)}}, legacy, _use_new_zipfile_serialization=False)
    assert is_complete_checkpoint(legacy)
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(legacy.read_bytes()[: legacy.stat().st_size // 2])
    assert not is_complete_checkpoint(cut)
    (tmp_path / "text.ckpt").write_text("not a checkpoint")
    assert not is_complete_checkpoint(tmp_path / "text.ckpt")


def test_resuming_takes_the_state_with_the_most_steps_whatever_lightning_named_it(tmp_path):
    """Before, last.ckpt was always taken first: after one resume Lightning had saved the newer state as
    last-v1.ckpt, and the next resume went back to the first interruption's last.ckpt."""
    import os

    folder = tmp_path / "checkpoints"
    folder.mkdir()
    for name, step, written in [("last.ckpt", 5, 3000), ("best-epoch1.ckpt", 32, 1000), ("last-v1.ckpt", 32, 2000)]:
        torch.save({"global_step": step, "name": name}, folder / name)
        os.utime(folder / name, (written, written))
    assert resumable_checkpoint(folder, "run x") == folder / "last-v1.ckpt"  # most steps, then the latest written


def test_a_full_disk_is_the_os_error_naming_the_file_not_torchs_internal_text(tmp_path, monkeypatch):
    """torch's zip writer reports a disk that stops taking bytes as `RuntimeError: [enforce fail at
    inline_container.cc:672] . unexpected pos 704 vs 598` (seen on a 200 KB tmpfs); it reached the user as that."""
    import shutil
    from collections import namedtuple

    from lightning_ae.cli.errors import translated

    def torch_on_a_full_disk(obj, handle, *args, **kwargs):
        handle.write(b"PK\x03\x04 a part")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(torch, "save", torch_on_a_full_disk)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**6, 10**6, 0))
    target = tmp_path / "checkpoints" / "best-epoch0.ckpt"
    with pytest.raises(OSError) as raised:
        AtomicCheckpointIO().save_checkpoint({"w": torch.ones(3)}, target)
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(target)
    assert not list(target.parent.iterdir()), "nothing half-written"

    def save() -> int:
        AtomicCheckpointIO().save_checkpoint({"w": torch.ones(3)}, target)
        return 0

    assert translated(save) == 2  # one `lightning-ae: error: cannot write ... No space left on device` line


def test_a_real_full_tmpfs_gives_the_disk_full_error(tmp_path):
    """The same on a real file system that fills (a 200 KB tmpfs; needs root to mount, skipped otherwise)."""
    import subprocess

    mount = tmp_path / "tiny"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (not root)")
    try:
        with pytest.raises(OSError) as raised:
            AtomicCheckpointIO().save_checkpoint({"w": torch.ones(100_000)}, mount / "last.ckpt")
        assert raised.value.errno == errno.ENOSPC and str(mount / "last.ckpt") == raised.value.filename
        assert not list(mount.iterdir())
    finally:
        subprocess.run(["umount", str(mount)], check=False)
