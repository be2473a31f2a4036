"""Training loops: maximum likelihood for Boltzmann machines, greedy training for DBNs, and
supervised fine-tuning of a DBN classifier."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from .base import AbstractBoltzmannMachine
from .dbn import DBNClassifier, DeepBeliefNetwork
from .errors import InvalidDataError

__all__ = ["fit", "fit_dbn", "fine_tune_classifier", "make_optimizer"]


def make_optimizer(model: torch.nn.Module, *, lr: float = 0.05, momentum: float = 0.5,
                   weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """SGD with momentum, the usual choice for Boltzmann machines (Hinton's practical guide)."""
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum,
                           weight_decay=weight_decay)


#: The learning-rate schedules of :func:`fit` (``lr_decay``).
LR_DECAYS = (None, "linear")


def _decay_lr(opt: torch.optim.Optimizer, done: float) -> None:
    """Set every group's rate to its initial rate times ``1 - done`` (``done``: the fraction of
    the steps taken); the initial rate is kept in the group, so a resumed run continues it."""
    for group in opt.param_groups:
        group.setdefault("initial_lr", group["lr"])
        group["lr"] = group["initial_lr"] * (1.0 - done)


def _batches(n: int, batch_size: int, generator: torch.Generator):
    perm = torch.randperm(n, generator=generator)
    return [perm[i:i + batch_size] for i in range(0, n, batch_size)]


def _progress(progress: Any, total: int, desc: str | None, initial: int = 0):
    if progress is False or progress is None:
        return None
    if progress is True:
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=initial, desc=desc, unit="batch", leave=True)
    return progress  # a tqdm-like object the caller manages


def _epoch_label(desc: str | None, epoch: int, epochs: int) -> str:
    return f"{desc + ', ' if desc else ''}epoch {epoch}/{epochs}"


def _check_state(state: Any, kind: str, **expected: Any) -> dict:
    """A training state handed back for resuming: the right kind, and the settings that fix
    the batches (``expected``) unchanged."""
    from .errors import CheckpointError

    if not isinstance(state, dict) or state.get("kind") != kind:
        got = state.get("kind") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"the training state to resume is not a {kind} state (got {got!r})")
    for key, value in expected.items():
        if state.get(key) != value:
            raise CheckpointError(
                f"the training state to resume was saved with {key}={state.get(key)!r}, this run "
                f"has {key}={value!r}; resume with the settings of the run that saved it")
    return state


def fit(model: AbstractBoltzmannMachine, data: Any, sampler: Any, *, epochs: int = 10,
        batch_size: int = 100, optimizer: torch.optim.Optimizer | None = None,
        lr: float = 0.05, momentum: float = 0.5, weight_decay: float = 0.0,
        seed: int | None = 0,
        callback: Callable[[int, AbstractBoltzmannMachine, dict], dict | None] | None = None,
        progress: Any = False, desc: str | None = None, state: dict | None = None,
        on_checkpoint: Callable[[dict], None] | None = None,
        stop: Callable[[], bool] | None = None, lr_decay: str | None = None,
        lr_decay_start: float = 0.0) -> list[dict]:
    """Train ``model`` on ``data`` by stochastic gradient descent on
    ``model.objective(sampler.positive(model, v), sampler.negative(model, v))``.

    ``data``: ``(num_examples, num_visible)``, checked as a whole before the first step
    (:class:`InvalidDataError` for values outside {0, 1} on binary units). ``sampler``: a
    :class:`~kpp_sdk.models.samplers.ModelSampler`, Device, device name or Kaiwu optimizer; checked
    against the model before the first step (a device too small raises
    :class:`~kpp_sdk.ProblemTooLargeError`). ``optimizer`` defaults to :func:`make_optimizer`.
    ``seed`` fixes the order of the batches. ``callback(epoch, model, stats)`` runs after each
    epoch; a dict it returns is merged into that epoch's stats (evaluations, for instance).
    ``progress``: True for a tqdm bar (its label reads ``epoch k/K``), or a tqdm-like object.
    ``lr_decay``: ``None`` keeps the learning rate; ``"linear"`` keeps every parameter group's
    initial rate for the first ``lr_decay_start`` fraction of the ``T = epochs x batches`` steps
    and then decays it linearly towards zero (the last step takes ``1 / (T (1 - start))`` of
    it). A resumed run continues the schedule; one resumed with more ``epochs`` follows the
    longer run's schedule from that step (a jump in the rate, not the longer run). Sampled
    negative phases are unbiased but noisy; decaying the rate averages their noise out, where
    a constant rate leaves the final weights a noisy snapshot.

    Stopping and resuming: ``on_checkpoint(state)`` is called after every epoch with the
    loop's complete state (epochs and batches done, the batch order's random stream, the
    optimizer's and the sampler's state, the history so far: tensors and plain values, to be
    stored with :func:`~kpp_sdk.models.save_checkpoint`). ``stop()`` is polled before every
    batch; when it returns True the loop hands ``on_checkpoint`` the state at that batch
    boundary and raises :class:`~kpp_sdk.models.TrainingInterrupted`. Passing a saved
    ``state`` back, with the model's weights from the same checkpoint and the same data,
    sampler, optimizer settings and ``batch_size``, continues the run: the result is, weight
    for weight, that of a run that never stopped (``epochs`` may be raised to train longer).

    Returns one dict per epoch: ``epoch``, ``objective`` (mean over batches), ``seconds``
    (training only, callback excluded), ``sampler`` (the sampler's ``last`` report) and what the
    callback added.
    """
    from kpp_sdk.models.samplers import as_sampler

    from .errors import TrainingInterrupted

    if epochs < 0 or batch_size < 1:
        raise InvalidDataError(
            f"epochs must be >= 0 and batch_size >= 1, got {epochs} and {batch_size}")
    if lr_decay not in LR_DECAYS:
        raise InvalidDataError(
            f"lr_decay must be one of {', '.join(map(repr, LR_DECAYS))}, got {lr_decay!r}")
    if not 0.0 <= lr_decay_start < 1.0:
        raise InvalidDataError(
            f"lr_decay_start is the fraction of the steps before the decay begins, in [0, 1); "
            f"got {lr_decay_start!r}")
    data = model.check_visible(data)
    sampler = as_sampler(sampler)
    sampler.check(model)
    opt = optimizer or make_optimizer(model, lr=lr, momentum=momentum, weight_decay=weight_decay)
    g = torch.Generator()
    g.manual_seed(0 if seed is None else int(seed))
    n = data.shape[0]
    num_batches = -(-n // batch_size)
    done_epochs, done_batches, history = 0, 0, []
    partial = {"objective_sum": 0.0, "seconds": 0.0}
    if state is not None:
        _check_state(state, "fit", num_examples=n, batch_size=batch_size)
        done_epochs, done_batches = int(state["epoch"]), int(state["batch"])
        g.set_state(state["order"])
        opt.load_state_dict(state["optimizer"])
        sampler.load_state_dict(state["sampler"], model)
        history = [dict(r) for r in state["history"]]
        partial = {k: float(state[k]) for k in partial}

    def snapshot(epoch_done: int, batch: int, order: torch.Tensor, objective_sum: float,
                 seconds: float) -> dict:
        return {"kind": "fit", "epoch": epoch_done, "batch": batch, "order": order,
                "num_examples": n, "batch_size": batch_size, "objective_sum": objective_sum,
                "seconds": seconds, "optimizer": opt.state_dict(),
                "sampler": sampler.state_dict(model), "history": [dict(r) for r in history]}

    bar = _progress(progress, epochs * num_batches, desc,
                    initial=min(done_epochs * num_batches + done_batches, epochs * num_batches))
    try:
        for epoch in range(done_epochs + 1, epochs + 1):
            if bar is not None and hasattr(bar, "set_description"):
                bar.set_description(_epoch_label(desc, epoch, epochs), refresh=False)
            order = g.get_state()
            batches = _batches(n, batch_size, g)
            first = done_batches if epoch == done_epochs + 1 else 0
            total, before = ((partial["objective_sum"], partial["seconds"]) if first
                             else (0.0, 0.0))
            t0 = time.perf_counter()
            for b in range(first, num_batches):
                if stop is not None and stop():
                    if on_checkpoint is not None:
                        on_checkpoint(snapshot(epoch - 1, b, order, total,
                                               before + time.perf_counter() - t0))
                    raise TrainingInterrupted(
                        f"stopped in {desc + ', ' if desc else ''}epoch {epoch} of {epochs} "
                        f"after {b} of {num_batches} batches", epoch=epoch - 1, batch=b)
                if lr_decay is not None:
                    done = ((epoch - 1) * num_batches + b) / (epochs * num_batches)
                    _decay_lr(opt, max(0.0, done - lr_decay_start) / (1.0 - lr_decay_start))
                v = data[batches[b].to(data.device)]
                pos = sampler.positive(model, v)
                neg = sampler.negative(model, v)
                loss = model.objective(pos, neg)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach())
                if bar is not None:
                    bar.update(1)
            stats = {"epoch": epoch, "objective": total / num_batches,
                     "seconds": before + time.perf_counter() - t0, "sampler": dict(sampler.last)}
            if callback is not None:
                extra = callback(epoch, model, stats)
                if extra:
                    stats.update(extra)
                    shown = {k: f"{v:.3f}" for k, v in extra.items()
                             if isinstance(v, float) and k.endswith(("log_likelihood", "accuracy"))}
                    if bar is not None and shown:
                        bar.set_postfix(shown)
            history.append(stats)
            if on_checkpoint is not None:
                on_checkpoint(snapshot(epoch, 0, g.get_state(), 0.0, 0.0))
    finally:
        if bar is not None and progress is True:
            bar.close()
    return history


def fit_dbn(dbn: DeepBeliefNetwork, data: Any, sampler: Any, *, epochs: int = 10,
            seed: int | None = 0,
            callback: Callable[[int, int, AbstractBoltzmannMachine, dict], dict | None]
            | None = None,
            progress: Any = False, state: dict | None = None,
            on_checkpoint: Callable[[dict], None] | None = None,
            stop: Callable[[], bool] | None = None, **fit_kwargs: Any) -> list[list[dict]]:
    """Greedy layer-wise training: RBM ``l`` is trained with :func:`fit` for ``epochs`` on binary
    samples of layer ``l`` given the data (:meth:`DeepBeliefNetwork.sample_up`).

    ``sampler``: one sampler for every layer (state is kept per RBM), or a callable
    ``layer_index -> sampler``; every layer is checked against its sampler before any training.
    ``callback(layer, epoch, rbm, stats)``. ``state``, ``on_checkpoint``, ``stop``: as in
    :func:`fit` (the state also records the layer). Returns one history per layer.
    """
    from kpp_sdk.models.samplers import ModelSampler, as_sampler

    from kpp_sdk.device import Device

    data = dbn.check_visible(data)
    per_layer = (callable(sampler) and not isinstance(sampler, (ModelSampler, Device, str))
                 and not callable(getattr(sampler, "solve", None)))
    samplers = [as_sampler(sampler(layer) if per_layer else sampler)
                for layer in range(dbn.num_layers)]
    for s, rbm in zip(samplers, dbn.rbms, strict=True):
        s.check(rbm)
    g = torch.Generator(device=dbn.device)
    g.manual_seed(0 if seed is None else int(seed))
    start, histories, fit_state = 0, [], None
    if state is not None:
        _check_state(state, "dbn", num_layers=dbn.num_layers)
        start, fit_state = int(state["layer"]), state["fit"]
        histories = [[dict(r) for r in h] for h in state["histories"]]
        g.set_state(state["up_order"])
    for layer in range(start, dbn.num_layers):
        rbm, s = dbn.rbms[layer], samplers[layer]
        up_order = g.get_state()
        x = dbn.sample_up(data, layer, g)
        cb = None if callback is None else (
            lambda e, m, st, _layer=layer: callback(_layer, e, m, st))
        save = None if on_checkpoint is None else (
            lambda st, _layer=layer, _up=up_order: on_checkpoint(
                {"kind": "dbn", "num_layers": dbn.num_layers, "layer": _layer, "up_order": _up,
                 "histories": [[dict(r) for r in h] for h in histories], "fit": st}))
        histories.append(fit(rbm, x, s, epochs=epochs,
                             seed=None if seed is None else seed + layer, callback=cb,
                             progress=progress, desc=f"layer {layer + 1}/{dbn.num_layers}",
                             state=fit_state if layer == start else None,
                             on_checkpoint=save, stop=stop, **fit_kwargs))
    return histories


def fine_tune_classifier(classifier: DBNClassifier, data: Any, labels: Any, *, epochs: int = 10,
                         batch_size: int = 100, lr: float = 1e-3,
                         seed: int | None = 0) -> list[dict]:
    """Supervised fine-tuning (Adam, cross-entropy) of every layer; returns per-epoch mean loss
    and training accuracy."""
    p = next(classifier.parameters())
    x = torch.as_tensor(data, device=p.device, dtype=p.dtype)
    y = torch.as_tensor(labels, device=p.device, dtype=torch.long)
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise InvalidDataError(
            f"data must be (N, features) and labels (N,), got {tuple(x.shape)} and "
            f"{tuple(y.shape)}")
    opt = torch.optim.Adam(classifier.parameters(), lr=lr)
    g = torch.Generator()
    g.manual_seed(0 if seed is None else int(seed))
    history = []
    for epoch in range(1, epochs + 1):
        total, correct = 0.0, 0
        for idx in _batches(x.shape[0], batch_size, g):
            idx = idx.to(x.device)
            logits = classifier(x[idx])
            loss = torch.nn.functional.cross_entropy(logits, y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * idx.numel()
            correct += int((logits.argmax(1) == y[idx]).sum())
        history.append({"epoch": epoch, "loss": total / x.shape[0],
                        "train_accuracy": correct / x.shape[0]})
    return history
