"""Checkpoints: a model's configuration and weights in one file, checked on load."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError

__all__ = ["save_checkpoint", "load_checkpoint", "build_model"]

FORMAT = "kpp-model-checkpoint"
VERSION = 1


def _classes() -> dict:
    from .bm import BoltzmannMachine
    from .dbn import DeepBeliefNetwork
    from .gbrbm import GaussianBernoulliRBM
    from .rbm import RestrictedBoltzmannMachine

    return {c.__name__: c for c in (BoltzmannMachine, RestrictedBoltzmannMachine,
                                    GaussianBernoulliRBM, DeepBeliefNetwork)}


def build_model(config: dict) -> torch.nn.Module:
    """A freshly initialised model from :meth:`config` output."""
    cfg = dict(config)
    name = cfg.pop("class", None)
    classes = _classes()
    if name not in classes:
        raise CheckpointError(
            f"unknown model class {name!r} in the checkpoint; known: {', '.join(sorted(classes))}")
    try:
        return classes[name](**cfg)
    except TypeError as exc:
        raise CheckpointError(f"the checkpoint's configuration {config} does not build a {name}: "
                              f"{exc}") from None


def save_checkpoint(path: str | os.PathLike, model: torch.nn.Module, *,
                    extra: dict | None = None) -> Path:
    """Write ``model``'s configuration and weights (and a JSON-like ``extra`` dict) to ``path``
    atomically (a temporary file renamed into place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "version": VERSION, "config": model.config(),
               "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
               "extra": dict(extra or {})}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _describe(config: dict) -> str:
    args = ", ".join(f"{k}={v}" for k, v in config.items() if k != "class")
    return f"{config.get('class')}({args})"


def load_checkpoint(path: str | os.PathLike, model: torch.nn.Module | None = None, *,
                    map_location: Any = "cpu") -> tuple[torch.nn.Module, dict]:
    """``(model, extra)`` from a file written by :func:`save_checkpoint`.

    With ``model`` given, its class and every parameter shape must match the checkpoint
    (:class:`CheckpointError` naming both shapes otherwise) and the weights are loaded into it;
    without, a model is built from the stored configuration.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
        raise CheckpointError(f"{path} is not a readable kpp model checkpoint: {exc}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a kpp model checkpoint (no {FORMAT!r} header)")
    if payload.get("version", 0) > VERSION:
        raise CheckpointError(
            f"{path} was written by a newer kpp-sdk (checkpoint version {payload['version']}); "
            "upgrade kpp-sdk")
    config, state = payload["config"], payload["state_dict"]
    if model is None:
        model = build_model(config)
    else:
        mine = model.config()
        if mine.get("class") != config.get("class"):
            raise CheckpointError(
                f"{path} holds a {_describe(config)} but the model is a {_describe(mine)}")
        own = model.state_dict()
        for key, value in state.items():
            if key not in own:
                raise CheckpointError(
                    f"{path} holds a {_describe(config)} with parameter {key!r}, which the model "
                    f"{_describe(mine)} lacks")
            if tuple(own[key].shape) != tuple(value.shape):
                raise CheckpointError(
                    f"{path} holds a {_describe(config)} but the model is a {_describe(mine)}: "
                    f"{key} has shape {tuple(value.shape)} in the checkpoint and "
                    f"{tuple(own[key].shape)} in the model; build the model with the "
                    "checkpoint's shape, or load without a model to rebuild it")
        missing = sorted(set(own) - set(state))
        if missing:
            raise CheckpointError(f"{path} lacks the parameter(s) {', '.join(missing)}")
    model.load_state_dict(state)
    return model, dict(payload.get("extra", {}))
