"""Every method of lightning_ae that overrides a base class's (Lightning's hooks and private methods, torch's,
torchmetrics', argparse's, our own) says so with `@override`, and every `@override` still overrides something in
the installed versions: a Lightning upgrade that renames a private method we override fails here, not silently."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytorch_lightning as pl

import lightning_ae

# The Lightning release the overrides of its private methods (LightningCLI._parse_ckpt_path, _run_subcommand,
# _set_seed; the accelerator connector's cluster environment) were read against.
CHECKED_ON_LIGHTNING = "2.6.6"
PRIVATE_OVERRIDES = {
    "lightning_ae.experiment.AutoencoderCLI": {"_parse_ckpt_path", "_run_subcommand"},
    "lightning_ae.experiment.ConfigChecker": {"_set_seed", "_parse_ckpt_path", "_run_subcommand"},
}


def package_classes() -> list[type]:
    classes = []
    for info in pkgutil.walk_packages(lightning_ae.__path__, "lightning_ae."):
        if info.name.endswith("__main__"):  # runs the command
            continue
        module = importlib.import_module(info.name)
        classes += [cls for _, cls in inspect.getmembers(module, inspect.isclass) if cls.__module__ == module.__name__]
    return classes


def methods(cls: type) -> dict[str, object]:
    """The functions a class defines itself (properties by their getter), dunders aside."""
    found = {}
    for name, value in vars(cls).items():
        function = value.fget if isinstance(value, property) else getattr(value, "__func__", value)
        if inspect.isfunction(function) and not (name.startswith("__") and name.endswith("__")):
            found[name] = function
    return found


def test_the_private_overrides_were_checked_on_the_installed_lightning():
    assert pl.__version__ == CHECKED_ON_LIGHTNING, (
        f"Lightning is {pl.__version__}, the overrides were checked on {CHECKED_ON_LIGHTNING}: read the private "
        f"methods overridden ({PRIVATE_OVERRIDES}) against the new release, then update CHECKED_ON_LIGHTNING."
    )
    classes = {f"{cls.__module__}.{cls.__qualname__}": cls for cls in package_classes()}
    for name, private in PRIVATE_OVERRIDES.items():
        bases = classes[name].__mro__[1:]
        for method in private:
            assert any(method in vars(base) for base in bases), f"{name}.{method} overrides nothing in Lightning"


def test_every_override_is_marked_and_every_mark_overrides_a_base_method():
    classes = package_classes()
    assert len(classes) > 50  # the walk found the package
    unmarked, stale = [], []
    for cls in classes:
        for name, function in methods(cls).items():
            overrides = any(name in vars(base) for base in cls.__mro__[1:] if base is not object)
            marked = getattr(function, "__override__", False)
            if overrides and not marked:
                unmarked.append(f"{cls.__module__}.{cls.__qualname__}.{name}")
            if marked and not overrides:
                stale.append(f"{cls.__module__}.{cls.__qualname__}.{name}")
    assert not unmarked, f"overrides without @override: {unmarked}"
    assert not stale, f"@override on methods that override nothing: {stale}"
