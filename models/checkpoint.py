"""Checkpoints: a model's configuration and weights in one file, checked on load.

A checkpoint is a ``torch.save`` file (read back with ``weights_only=True``: no pickled code
runs) holding ``format``, ``version``, the model's ``config()``, its ``state_dict``, a free
``extra`` dict and, when written by a training loop, the ``training`` state that lets the run
continue exactly where it stopped (:func:`load_training_state`). Files are written atomically
(a temporary file renamed into place, with the usual file mode), so a run killed while writing
leaves the previous checkpoint intact.

Everything a file claims is checked before it is trusted: the version, the configuration, the
parameter names and shapes the configuration implies against the tensors actually in the file
(so a tiny file whose configuration claims a 30000 x 30000 model fails before anything of that
size is allocated), and finite weights. Every problem is a :class:`CheckpointError` naming it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError

__all__ = ["build_model", "load_checkpoint", "load_training_state", "save_checkpoint"]

FORMAT = "kpp-model-checkpoint"
VERSION = 1


def _classes() -> dict:
    from .bm import BoltzmannMachine
    from .dbn import DeepBeliefNetwork
    from .gbrbm import GaussianBernoulliRBM
    from .qdiffusion import QDiffusion
    from .rbm import RestrictedBoltzmannMachine

    return {c.__name__: c for c in (BoltzmannMachine, RestrictedBoltzmannMachine,
                                    GaussianBernoulliRBM, DeepBeliefNetwork, QDiffusion)}


def _checked_config(config: Any, where: str) -> tuple[str, dict]:
    if not isinstance(config, dict) or not isinstance(config.get("class"), str):
        raise CheckpointError(f"{where}: the configuration must be a dict with a 'class' name, "
                              f"got {_short(config)}")
    cfg = dict(config)
    return cfg.pop("class"), cfg


def _config_shapes(config: dict, where: str = "the checkpoint") -> dict[str, tuple[int, ...]]:
    """The ``state_dict`` shapes the configuration ``config`` implies, computed without
    building the model (:class:`CheckpointError` for an unknown class or a configuration that
    does not describe one)."""
    name, cfg = _checked_config(config, where)
    classes = _classes()
    if name not in classes:
        raise CheckpointError(
            f"{where}: unknown model class {name!r}; known: {', '.join(sorted(classes))} (a "
            "model of another class loads with load_checkpoint(path, model))")
    try:
        shapes = classes[name].parameter_shapes(**cfg)
    except (TypeError, ValueError, OverflowError) as exc:
        raise CheckpointError(f"{where}: the configuration {_short(config)} does not describe "
                              f"a {name}: {exc}") from None
    if any(d < 0 for shape in shapes.values() for d in shape):
        raise CheckpointError(f"{where}: the configuration {_short(config)} gives negative sizes")
    return shapes


def build_model(config: dict) -> torch.nn.Module:
    """A freshly initialised model from :meth:`config` output (any problem with the
    configuration is a :class:`CheckpointError`)."""
    name, cfg = _checked_config(config, "the configuration")
    _config_shapes(config, "the configuration")  # the class exists and the keys fit
    try:
        return _classes()[name](**cfg)
    except Exception as exc:  # noqa: BLE001 - whatever the constructor refuses is a bad config
        raise CheckpointError(f"the configuration {_short(config)} does not build a {name}: "
                              f"{exc}") from None


def save_checkpoint(path: str | os.PathLike, model: torch.nn.Module, *,
                    extra: dict | None = None, training: dict | None = None) -> Path:
    """Write ``model``'s configuration and weights to ``path`` atomically, with a free
    ``extra`` dict (plain values and tensors) and, from a training loop, its ``training`` state
    (:func:`load_training_state`). The file gets the usual mode (not the temporary file's 0600).
    """
    from kpp_sdk.io import atomic_write

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "version": VERSION, "config": model.config(),
               "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
               "extra": dict(extra or {})}
    if training is not None:
        payload["training"] = training
    atomic_write(path, lambda f: torch.save(payload, f), binary=True)
    return path


def _short(x: Any, limit: int = 120) -> str:
    text = repr(x)
    return text if len(text) <= limit else text[:limit] + "..."


def _describe(config: dict) -> str:
    args = ", ".join(f"{k}={v}" for k, v in config.items() if k != "class")
    return f"{config.get('class')}({args})"


def _read(path: str | os.PathLike, map_location: Any) -> tuple[Path, dict]:
    """The file's payload with its header, version and field types checked."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
        raise CheckpointError(f"{path} is not a readable kpp model checkpoint: {exc}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a kpp model checkpoint (no {FORMAT!r} header)")
    version = payload.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{path}: checkpoint version {_short(version)} is not a version "
                              f"number (this kpp-sdk writes version {VERSION})")
    if version > VERSION:
        raise CheckpointError(
            f"{path} was written by a newer kpp-sdk (checkpoint version {version}, this one "
            f"reads up to {VERSION}); upgrade kpp-sdk")
    for key, kind in (("config", dict), ("state_dict", dict), ("extra", dict)):
        if not isinstance(payload.get(key, {} if key == "extra" else None), kind):
            raise CheckpointError(f"{path}: the checkpoint's {key!r} must be a dict, got "
                                  f"{_short(payload.get(key))}")
    if not isinstance(payload["config"].get("class"), str):
        raise CheckpointError(f"{path}: the checkpoint's configuration names no model class: "
                              f"{_short(payload['config'])}")
    state = payload["state_dict"]
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{path}: the state_dict maps {_short(key)} to "
                                  f"{type(value).__name__}, not a tensor")
    training = payload.get("training")
    if training is not None and not isinstance(training, dict):
        raise CheckpointError(f"{path}: the checkpoint's training state must be a dict")
    return path, payload


def _check_against(path: Path, config: dict, state: dict,
                   shapes: dict[str, tuple[int, ...]], what: str) -> None:
    """Every parameter ``shapes`` names is in ``state`` with that shape, and nothing else."""
    extra = sorted(set(state) - set(shapes))
    if extra:
        raise CheckpointError(f"{path} holds a {_describe(config)} with parameter(s) "
                              f"{', '.join(extra[:5])}, which {what} lacks")
    missing = sorted(set(shapes) - set(state))
    if missing:
        raise CheckpointError(f"{path} lacks the parameter(s) {', '.join(missing[:5])} of "
                              f"{what}")
    for key, shape in shapes.items():
        if tuple(state[key].shape) != tuple(shape):
            raise CheckpointError(
                f"{path} holds a {_describe(config)} but {what}: {key} has shape "
                f"{tuple(state[key].shape)} in the checkpoint and {tuple(shape)} in the model; "
                "build the model with the checkpoint's shape, or load without a model to "
                "rebuild it")


def _check_finite(path: Path, state: dict) -> None:
    for key, value in state.items():
        if (value.is_floating_point() or value.is_complex()) and value.numel():
            bad = int((~torch.isfinite(value)).sum())
            if bad:
                raise CheckpointError(
                    f"{path}: parameter {key} holds {bad} NaN or infinite value(s) of "
                    f"{value.numel()}; the run that wrote it diverged (resume from an earlier "
                    "checkpoint, or train again with a lower learning rate)")


def load_checkpoint(path: str | os.PathLike, model: torch.nn.Module | None = None, *,
                    map_location: Any = "cpu") -> tuple[torch.nn.Module, dict]:
    """Read a file written by :func:`save_checkpoint`; returns ``(model, extra)``.

    Without ``model``, a model of the stored class and configuration is built (classes:
    BoltzmannMachine, RestrictedBoltzmannMachine, GaussianBernoulliRBM, DeepBeliefNetwork,
    QDiffusion) after checking that the configuration's parameter shapes are exactly the
    tensors in the file. With ``model`` given (any class with ``config()``, a QGAN for
    instance), its class and every parameter shape must match the checkpoint and the weights
    are loaded into it. ``extra`` is the dict saved with the weights. Any problem (an
    unreadable file, a bad version, configuration or parameter names, shapes that disagree,
    NaN or infinite weights) is a :class:`CheckpointError` naming it.
    """
    path, payload = _read(path, map_location)
    config, state = payload["config"], payload["state_dict"]
    if model is None:
        _check_against(path, config, state, _config_shapes(config, str(path)),
                       f"a {config['class']} of that configuration")
        _check_finite(path, state)
        model = build_model(config)
    else:
        mine = model.config()
        if mine.get("class") != config.get("class"):
            raise CheckpointError(
                f"{path} holds a {_describe(config)} but the model is a {_describe(mine)}")
        own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        _check_against(path, config, state, own, f"the model is a {_describe(mine)}")
        _check_finite(path, state)
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: the weights do not load into a {_describe(config)}: "
                              f"{exc}") from None
    return model, dict(payload.get("extra", {}))


def load_training_state(path: str | os.PathLike, *, map_location: Any = "cpu") -> dict | None:
    """The training state a training loop saved with the weights (``None`` in a checkpoint
    written without one), after the same header and version checks as :func:`load_checkpoint`.
    ``kpp train --resume`` continues a run from it."""
    return _read(path, map_location)[1].get("training")
