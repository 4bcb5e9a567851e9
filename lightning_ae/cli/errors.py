"""What a user sees when something is wrong: one line that names the problem, and an exit code.

Config and checkpoint files named on the command line are checked before Lightning opens
them; known exceptions become `lightning-ae: error: ...` lines (set LIGHTNING_AE_DEBUG=1 for
the traceback of an unexpected one).
"""

from __future__ import annotations

import errno
import os
import pickle
import re
import signal
import sys
from argparse import ArgumentError
from collections.abc import Callable
from pathlib import Path

from lightning_fabric.utilities.exceptions import MisconfigurationException
from pytorch_lightning.utilities.exceptions import SIGTERMException

from lightning_ae.callbacks import RunInterrupted
from lightning_ae.callbacks.interruption import RESUME_FIT, SIGNAL_EXIT_BASE, signals_stop_the_command
from lightning_ae.checks import check_expansion
from lightning_ae.experiment import check_checkpoint_file

# An output folder that cannot take a file: read-only, no permission, or full.
UNWRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT)
# A folder to be made where a file of that name (or on its path) already is.
IN_THE_WAY = (errno.ENOTDIR, errno.EEXIST)

MAX_MESSAGE = 1000  # characters of an error line

_PARSE_NOISE = (
    "Given value",
    "Subtypes:",
    "Errors:",
    "Does not validate against any",
    "- Expected a <class 'NoneType'>",
    "- Problem with given class_path",
    "Given value type:",
    # why a value is not some other kind of callback/model entry: never the user's problem
    "Not a valid subclass of",
    "Subclass types expect one of",
    "- a class path (str)",
    "- a dict with",
    "- a dict without",
)


def concise_error(message: str) -> str:
    """The part of a (jsonargparse) error message that names the problem, on one line.

    For a subclass-typed key such as `model`, jsonargparse lists why each candidate type
    failed (including "Expected a <class 'NoneType'>") and repeats the whole given value;
    keep the keys and the reasons. A one-line message passes through unchanged.
    """
    keys = re.findall(r'Parser key "([^"]+)"', message)
    reasons = []
    for line in (line.strip() for line in message.splitlines()):
        line = re.sub(r'^Parser key "[^"]+":\s*', "", line)  # the key is named once, in front
        if line and not line.startswith(_PARSE_NOISE):
            reasons.append(line.removeprefix("- "))
    where = ".".join(dict.fromkeys(keys))
    text = "; ".join(dict.fromkeys(reasons)) or message.strip().splitlines()[0]
    if len(text) > MAX_MESSAGE:  # a value repeated into the message (a huge list) would bury the problem
        text = f"{text[:MAX_MESSAGE]}... ({len(text) - MAX_MESSAGE:,} more characters)"
    # A Literal-typed choice (activation, loss, layout): said as the models' own checks say it.
    choice = re.search(r"Expected a typing\.Literal\[(.*?)\]\. Got value: (.*)", text)
    if choice and keys:
        name, value = keys[-1].rsplit(".", 1)[-1], choice.group(2).strip()
        text = f"{name}={value!r} is not valid; valid values: [{choice.group(1)}]."
    return f"{where}: {text}" if where else text


def flag_values(args: list[str], flag: str) -> list[str]:
    values = [value for name, value in zip(args, args[1:], strict=False) if name == flag]
    return values + [arg.split("=", 1)[1] for arg in args if arg.startswith(f"{flag}=")]


def check_files(args: list[str]) -> None:
    """Config and checkpoint files named on the command line, checked before Lightning opens them.

    LightningCLI reads a checkpoint while it parses (for its hyperparameters), so a truncated
    one would otherwise fail with a bare OSError.
    """
    for path in flag_values(args, "--ckpt_path"):
        check_checkpoint_file(path)
    check_config_files(flag_values(args, "--config"))
    check_flag_values(args)


def check_config_files(files: list[str]) -> None:
    """Each `--config FILE` must be a YAML mapping; say which file and where, before Lightning sees it."""
    import yaml

    for name in files:
        path = Path(name)
        if not path.is_file():
            continue  # the parser names a missing file itself
        try:
            content = yaml.safe_load(path.read_text())
        except (yaml.YAMLError, UnicodeDecodeError) as err:
            where = getattr(err, "problem_mark", None)
            at = f" (line {where.line + 1}, column {where.column + 1})" if where else ""
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise ValueError(f"config {name}: not valid YAML{at}: {problem}.") from None
        if not isinstance(content, dict):
            found = "an empty file" if content is None else f"a {type(content).__name__}"
            raise ValueError(f"config {name}: expected a mapping of sections (trainer, model, data), found {found}.")
        check_expansion(content, f"config {name}")


def check_flag_values(args: list[str]) -> None:
    """A value on the command line may be YAML too (`--model.init_args.hidden_dims '[...]'`), aliases included."""
    import yaml

    for value in args:
        if "*" in value and "&" in value:  # an alias and an anchor: the only way a value can expand
            try:
                check_expansion(yaml.safe_load(value.split("=", 1)[-1]), f"the value {value[:60]!r}")
            except yaml.YAMLError:
                continue  # not YAML: the parser says what is wrong with it


def translated(command: Callable[[], int], resume: str = RESUME_FIT) -> int:
    """Run `command`; a known failure is one line on stderr and an exit code (2: bad input, 130/143: a signal).

    `resume` says how the command resumes after a signal (a fit with --ckpt_path last; pretrain and study by
    running them again)."""
    try:
        with signals_stop_the_command():
            return command()
    except RunInterrupted as err:
        print(f"lightning-ae: {err.explain(resume)}", file=sys.stderr)
        return err.exit_code
    except SIGTERMException:
        # Lightning's own SIGTERM handling (a signal between its handler's registration and ours): a SystemExit
        # whose status would be 0, as if the run had finished.
        print(
            "lightning-ae: SIGTERM received: stopped; nothing was saved after the last checkpoint. "
            + resume.format(checkpoint="<a file in checkpoints/>"),
            file=sys.stderr,
        )
        return SIGNAL_EXIT_BASE + signal.SIGTERM
    except pickle.UnpicklingError as err:
        print(
            "lightning-ae: error: the checkpoint holds Python objects that a safe load refuses (it could run code "
            f"when loaded): {str(err).strip().splitlines()[-1]}. Load only checkpoints written by lightning-ae; "
            "for a file you trust, pass --weights_only false.",
            file=sys.stderr,
        )
        return 2
    except ArgumentError as err:
        print(f"lightning-ae: error: {concise_error(str(err))}", file=sys.stderr)
        print("  (see `lightning-ae <subcommand> --help` for every option)", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError) as err:
        # A plain user mistake (bad value, missing file) is one line, not a traceback wall.
        print(f"lightning-ae: error: {concise_error(str(err))}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as err:
        if os.environ.get("LIGHTNING_AE_DEBUG"):
            raise
        # A setting whose backend is not installed (--trainer.accelerator tpu wants torch_xla).
        print(
            "lightning-ae: error: a setting needs a package that is not installed: "
            f"{err.name or str(err).splitlines()[0]}. Install it, or choose another setting (set LIGHTNING_AE_DEBUG=1 "
            "to see which line imported it).",
            file=sys.stderr,
        )
        return 2
    except MisconfigurationException as err:
        # Lightning's own refusals of a trainer setting (max_epochs -5, devices 0, a GPU where there is none).
        print(
            f"lightning-ae: error: the trainer refused a setting: {str(err).strip().splitlines()[0]}", file=sys.stderr
        )
        return 2
    except OSError as err:
        if err.errno == errno.ENAMETOOLONG:
            print(
                f"lightning-ae: error: cannot make {err.filename or 'a file'}: a name in that path is too long for the "
                "file system (at most 255 bytes each). Choose a shorter folder or run name.",
                file=sys.stderr,
            )
            return 2
        if err.errno in IN_THE_WAY:
            print(
                f"lightning-ae: error: cannot make the folder {err.filename}: a file is in the way ({err.strerror}). "
                "Move that file, or choose another folder (trainer.logger.init_args.save_dir, --output_dir, or a "
                "study's --folder).",
                file=sys.stderr,
            )
            return 2
        if err.errno not in UNWRITABLE:
            raise
        where = f" {err.filename}" if err.filename else ""
        print(
            f"lightning-ae: error: cannot write{where}: {err.strerror}. Free space or choose a writable folder "
            "(trainer.logger.init_args.save_dir, or a study's --folder); a run stopped here resumes with "
            "--ckpt_path last.",
            file=sys.stderr,
        )
        return 2
    except RuntimeError as err:
        if os.environ.get("LIGHTNING_AE_DEBUG"):
            raise
        print(f"lightning-ae: error: {err}", file=sys.stderr)
        print("  (set LIGHTNING_AE_DEBUG=1 to see the traceback)", file=sys.stderr)
        return 2
