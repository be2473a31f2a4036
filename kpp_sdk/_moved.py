"""Old import paths of the modules that moved in the layout pass, kept for one release.

Importing an old name gives the new module (the same object) with a DeprecationWarning; the
old ``kpp_sdk.torch_bridge`` was split in two and is a module that looks each name up in its new
home. No file stays behind at the old path: :class:`_MovedFinder` on ``sys.meta_path`` answers
for them.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types
import warnings

#: old module -> new module
MOVED = {
    "kpp_sdk.annealing": "kpp_sdk.devices.annealing",
    "kpp_sdk.datasets": "kpp_sdk.models.datasets",
    "kpp_sdk.train_cli": "kpp_sdk.models.cli",
    "kpp_sdk.benchmarking": "kpp_sdk.bench.suite",
    "kpp_sdk.bench_cli": "kpp_sdk.bench.cli",
    "kpp_sdk.emulator_cli": "kpp_sdk.validation.cli",
}

#: kpp_sdk.torch_bridge was split: name -> (new module, new name)
TORCH_BRIDGE = {
    "as_device": ("kpp_sdk.interop", "as_device"),
    "KaiwuOptimizerDevice": ("kpp_sdk.interop.kaiwu", "KaiwuOptimizerDevice"),
    "DeviceOptimizer": ("kpp_sdk.interop.kaiwu", "DeviceOptimizer"),
    "InlineExecutor": ("kpp_sdk.job", "InlineExecutor"),
    "estimate_beta": ("kpp_sdk.models.samplers", "pseudo_likelihood_beta"),
}


def _warn(old: str, new: str) -> None:
    warnings.warn(f"{old} moved to {new}; the old name goes away in the next release",
                  DeprecationWarning, stacklevel=4)


class _TorchBridge(types.ModuleType):
    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        mod, new = TORCH_BRIDGE.get(name, ("kpp_sdk.models.samplers", name))
        if name == "kaiwu_solution_to_spins":
            from .problem import IsingProblem

            return IsingProblem.spins_from_kaiwu
        value = getattr(importlib.import_module(mod), new)
        setattr(self, name, value)
        return value


class _Loader(importlib.abc.Loader):
    def create_module(self, spec):
        if spec.name == "kpp_sdk.torch_bridge":
            importlib.import_module("kpp_sdk.models.samplers")  # torch missing: fail now
            _warn(spec.name, "kpp_sdk.models.samplers and kpp_sdk.interop.kaiwu")
            return _TorchBridge(spec.name)
        new = MOVED[spec.name]
        _warn(spec.name, new)
        module = importlib.import_module(new)
        self._spec = module.__spec__  # the import system overwrites it with the old name's
        return module

    def exec_module(self, module):
        if getattr(self, "_spec", None) is not None:
            module.__spec__ = self._spec


class _MovedFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname in MOVED or fullname == "kpp_sdk.torch_bridge":
            return importlib.util.spec_from_loader(fullname, _Loader())
        return None


def install() -> None:
    if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
        sys.meta_path.append(_MovedFinder())
