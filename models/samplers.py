"""The bridge between PyTorch energy-based models and Ising machines.

A :class:`ModelSampler` draws the two phases of the log-likelihood gradient of a Boltzmann
machine (:mod:`kpp_sdk.models`):

* ``positive(model, visible)``: data states with the hidden units filled in: ``E[h | v]`` where
  ``p(h | v)`` factorises (RBMs: exact, no sampling), otherwise samples of ``p(h | v)`` (clamped
  sampling);
* ``negative(model, visible)``: samples of the model.

Then ``model.objective(positive, negative)`` is the loss whose gradient is the negative
log-likelihood gradient. Samplers in one API:

* :class:`BoltzmannSampler`: model weights -> :class:`~kpp_sdk.IsingProblem` -> a device job ->
  torch tensors on the model's device; any :class:`~kpp_sdk.Device` (or a Kaiwu optimizer, an
  object with ``solve(ising_matrix)``).
* :class:`ContrastiveDivergence` (CD-k) and :class:`PersistentContrastiveDivergence` (PCD):
  Gibbs sampling in torch, the baselines.
* :class:`ExactSampler`: exact Boltzmann samples by enumeration, for small models and tests.

Spin mapping: units ``x in {0, 1}``, spins ``s = 2x - 1``; :meth:`AbstractBoltzmannMachine.to_ising`
gives a problem whose energy equals the model's, so Ising samples at inverse temperature 1 are
model samples.
"""

from __future__ import annotations

import abc
import concurrent.futures as cf
import weakref
from typing import Any

import numpy as np
from scipy.special import expit

from kpp_sdk.device import Device
from kpp_sdk.errors import (
    InvalidOptionError,
    KppError,
    MissingDependencyError,
    ProblemError,
    ProblemTooLargeError,
)
from kpp_sdk.interop import as_device
from kpp_sdk.job import InlineExecutor
from kpp_sdk.options import check_int, check_number
from kpp_sdk.problem import IsingProblem

try:
    import torch
except ImportError:  # pragma: no cover - exercised only without torch
    raise MissingDependencyError("torch", extra="models", feature="kpp_sdk.models.samplers") from None

__all__ = [
    "ModelSampler", "BoltzmannSampler", "ContrastiveDivergence", "PersistentContrastiveDivergence",
    "ExactSampler", "as_sampler", "pseudo_likelihood_beta", "supports_boltzmann_sampling",
]


def supports_boltzmann_sampling(device: Device) -> bool:
    """True when ``device`` can sample ``exp(-beta E)`` at a given beta: it declares the options
    ``mode`` and ``beta`` and accepts ``mode="sample"`` (as ``sa.cpu`` does)."""
    if not {"mode", "beta"} <= set(device.OPTIONS):
        return False
    try:
        device.validate(IsingProblem(np.zeros((2, 2)), np.ones(2)), 1, mode="sample", beta=1.0)
    except KppError:
        return False
    return True


# --- effective temperature ---------------------------------------------------------------------


def pseudo_likelihood_beta(problem: IsingProblem, spins: Any, num_occurrences: Any = None, *,
                  beta_max: float = 1e3) -> float:
    """Maximum pseudo-likelihood estimate of the inverse temperature of samples.

    Assuming ``spins ~ exp(-beta E(s))`` for ``problem``'s energy, each spin's conditional is
    ``p(s_i | s_rest) = sigmoid(2 beta s_i f_i)`` with local field ``f = J s + h``. The summed
    log-conditional is concave in beta; its maximiser is returned, in ``[0, beta_max]`` (0 when
    the samples look no better than random, ``beta_max`` when every spin is aligned with its
    field: local minima only). Consistent as the number of samples grows.
    """
    s = problem.check_spins(spins)
    a = (2.0 * s * problem.local_fields(s)).ravel()
    w = None
    if num_occurrences is not None:
        w = np.repeat(np.asarray(num_occurrences, dtype=np.float64), problem.n)
    keep = a != 0
    a = a[keep]
    w = np.ones_like(a) if w is None else w[keep]
    if a.size == 0:
        return 0.0

    def slope(beta: float) -> float:  # derivative of the log pseudo-likelihood
        return float(np.sum(w * a * expit(-beta * a)))

    if slope(0.0) <= 0:
        return 0.0
    if slope(beta_max) > 0:
        return float(beta_max)
    lo, hi = 0.0, float(beta_max)
    beta = 1.0 if slope(1.0) > 0 and 1.0 < hi else 0.5 * hi
    for _ in range(200):
        g = slope(beta)
        if g > 0:
            lo = beta
        else:
            hi = beta
        p = expit(beta * a)
        curv = float(np.sum(w * a * a * p * (1 - p)))
        step = beta + g / curv if curv > 0 else 0.5 * (lo + hi)
        beta = step if lo < step < hi else 0.5 * (lo + hi)
        if hi - lo < 1e-10 * max(1.0, beta):
            break
    return float(beta)


def _scaled(problem: IsingProblem, factor: float) -> IsingProblem:
    if factor == 1.0:
        return problem
    return IsingProblem(problem.J * factor, problem.h * factor, problem.offset * factor)


# --- samplers ---------------------------------------------------------------------------------


class ModelSampler(abc.ABC):
    """Draws the positive and negative phases for a Boltzmann machine (module docstring).

    Parameters
    ----------
    seed : int, optional
        Makes every draw reproducible (torch generators and device job seeds derive from it).
    clamped_steps : int, default 20
        Gibbs sweeps over the hidden units per positive-phase sample of models whose ``p(h | v)``
        does not factorise (Boltzmann machines with hidden units), from a random start.
    sample_steps : int, default 1000
        Gibbs sweeps from a random start for :meth:`sample` (generation) by Gibbs samplers.

    State (persistent chains) is kept per model, so one sampler can serve several models.
    """

    def __init__(self, *, seed: int | None = None, clamped_steps: int = 20,
                 sample_steps: int = 1000):
        if seed is None:
            seed = int(np.random.SeedSequence().entropy % (2**63))
        self.seed = int(seed)
        self.clamped_steps = check_int(clamped_steps, "clamped_steps", ge=1)
        self.sample_steps = check_int(sample_steps, "sample_steps", ge=1)
        self._rng = np.random.default_rng(self.seed)
        self._generators: dict[str, torch.Generator] = {}
        self._state: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        #: What the last call measured (device time, estimated beta, ...).
        self.last: dict = {}

    def generator(self, device: torch.device) -> torch.Generator:
        key = str(device)
        if key not in self._generators:
            g = torch.Generator(device=device)
            g.manual_seed(int(self._rng.integers(2**63 - 1)))
            self._generators[key] = g
        return self._generators[key]

    def check(self, model) -> None:
        """Raise before training if this sampler cannot serve ``model`` (Gibbs samplers serve
        every model; :class:`BoltzmannSampler` checks the device's limits)."""
        return None

    def reset(self, model=None) -> None:
        """Forget persistent state (of one model, or of all)."""
        if model is None:
            self._state.clear()
        else:
            self._state.pop(model, None)

    # --- state, for checkpoints ----------------------------------------------------------------

    def state_dict(self, model=None) -> dict:
        """What decides the next draws: the random streams and, with ``model``, that model's
        persistent chains (tensors and plain values, for :func:`~kpp_sdk.models.save_checkpoint`).
        :meth:`load_state_dict` of it on a sampler built with the same arguments continues the
        same draws, so a training run resumed from a checkpoint gives the results of one that
        never stopped."""
        state: dict = {"rng": self._rng.bit_generator.state,
                       "generators": {k: g.get_state() for k, g in self._generators.items()}}
        chains = None if model is None else self._state.get(model)
        if chains is not None:
            state["chains"] = (torch.from_numpy(np.array(chains)) if isinstance(chains, np.ndarray)
                               else chains.detach().cpu().clone())
        return state

    def load_state_dict(self, state: dict, model=None) -> None:
        """Restore :meth:`state_dict` output (:class:`~kpp_sdk.models.CheckpointError` if it
        does not fit this sampler)."""
        from .errors import CheckpointError

        try:
            rng_state = state["rng"]
            generators = {}
            for key, g_state in state["generators"].items():
                g = torch.Generator(device=key)
                g.set_state(g_state)
                generators[key] = g
            self._rng.bit_generator.state = rng_state
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise CheckpointError(
                f"the saved sampler state does not fit {self!r}: {type(exc).__name__}: {exc}"
            ) from None
        self._generators = generators
        if model is not None:
            chains = state.get("chains")
            if chains is None:
                self._state.pop(model, None)
            else:
                self._state[model] = self._chains_from_state(chains, model)

    def _chains_from_state(self, chains: torch.Tensor, model):
        """Persistent chains as :meth:`negative` keeps them (torch states on the model's
        device here; device spins in :class:`BoltzmannSampler`)."""
        return chains.to(model.device)

    def positive(self, model, visible) -> torch.Tensor:
        """Data states ``(B', num_nodes)``: the visible data with hidden units from ``p(h | v)``
        (their expectation where exact)."""
        v = model.check_visible(visible)
        if model.num_hidden == 0:
            return v
        if model.exact_hidden_conditional:
            return model.hidden_expectation(v)
        return self.clamped(model, v)

    @abc.abstractmethod
    def negative(self, model, visible=None) -> torch.Tensor:
        """Model states for the negative phase (``visible``: the batch, used by CD)."""

    def sample(self, model, num_samples: int | None = None) -> torch.Tensor:
        """``num_samples`` states of the model (generation; hidden units sampled, not averaged)."""
        n = 100 if num_samples is None else check_int(num_samples, "num_samples", ge=1)
        g = self.generator(model.device)
        x = model.random_states(n, g)
        for _ in range(self.sample_steps):
            x = model.gibbs_step(x, generator=g)
        return x

    def clamped(self, model, visible: torch.Tensor) -> torch.Tensor:
        """Samples of ``p(h | v)`` for each row of ``visible`` (which fixes the leading units),
        as full states: torch Gibbs here, the device in :class:`BoltzmannSampler`."""
        g = self.generator(model.device)
        k = visible.shape[1]
        x = model.random_states(visible.shape[0], g)
        x[:, :k] = visible
        for _ in range(self.clamped_steps):
            x = model.gibbs_step(x, num_clamped=k, generator=g)
        return x

    def _start_from_data(self, model, visible: torch.Tensor) -> torch.Tensor:
        """The data with hidden units sampled from ``p(h | v)``: where CD chains start."""
        if model.num_hidden == 0:
            return visible
        g = self.generator(model.device)
        if model.exact_hidden_conditional:
            x = model.hidden_expectation(visible)
            V = model.num_visible
            u = torch.rand(x.shape[0], model.num_hidden, generator=g, device=x.device,
                           dtype=x.dtype)
            x[:, V:] = (u < x[:, V:]).to(x.dtype)
            return x
        return self.clamped(model, visible)


class ContrastiveDivergence(ModelSampler):
    """CD-k: ``k`` Gibbs sweeps from the data (Hinton 2002); biased but cheap.

    The negative states are the chain ends, with hidden units replaced by ``E[h | v]`` for RBMs
    (Rao-Blackwellisation)."""

    def __init__(self, k: int = 1, **kwargs: Any):
        super().__init__(**kwargs)
        self.k = check_int(k, "k", ge=1)

    def __repr__(self) -> str:
        return f"ContrastiveDivergence(k={self.k})"

    def negative(self, model, visible=None) -> torch.Tensor:
        if visible is None:
            raise InvalidOptionError("CD starts its chains at the data: pass the batch as visible")
        x = self._start_from_data(model, model.check_visible(visible))
        g = self.generator(model.device)
        for _ in range(self.k):
            x = model.gibbs_step(x, generator=g)
        self.last = {"sampler": "cd", "k": self.k}
        return model.rao_blackwellize(x)


class PersistentContrastiveDivergence(ModelSampler):
    """PCD (Tieleman 2008): ``num_chains`` Gibbs chains that persist across calls, ``k`` sweeps
    per call, started uniformly at random (``num_chains`` default: the first batch's size)."""

    def __init__(self, k: int = 1, num_chains: int | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.k = check_int(k, "k", ge=1)
        self.num_chains = None if num_chains is None else check_int(num_chains, "num_chains", ge=1)

    def __repr__(self) -> str:
        return f"PersistentContrastiveDivergence(k={self.k}, num_chains={self.num_chains})"

    def negative(self, model, visible=None) -> torch.Tensor:
        g = self.generator(model.device)
        chains = self._state.get(model)
        if chains is None or chains.shape[1] != model.num_nodes:
            n = self.num_chains or (len(visible) if visible is not None else 100)
            chains = model.random_states(n, g)
        for _ in range(self.k):
            chains = model.gibbs_step(chains, generator=g)
        self._state[model] = chains
        self.last = {"sampler": "pcd", "k": self.k, "num_chains": int(chains.shape[0])}
        return model.rao_blackwellize(chains)


class ExactSampler(ModelSampler):
    """Exact samples by enumerating the model's Ising problem (at most 24 spins): the reference
    for tests. Positive phases of models with coupled hidden units are exact too."""

    def __init__(self, num_samples: int = 1000, **kwargs: Any):
        super().__init__(**kwargs)
        self.num_samples = check_int(num_samples, "num_samples", ge=1)

    def negative(self, model, visible=None) -> torch.Tensor:
        return model.rao_blackwellize(self.sample(model, self.num_samples))

    def sample(self, model, num_samples=None) -> torch.Tensor:
        from kpp_sdk.exact import all_states, boltzmann_distribution

        n = self.num_samples if num_samples is None else check_int(num_samples, "num_samples", ge=1)
        problem = model.to_ising()
        p = boltzmann_distribution(problem, 1.0)
        idx = self._rng.choice(p.size, size=n, p=p)
        return model.states_from_spins(all_states(problem.n)[idx], self.generator(model.device))

    def clamped(self, model, visible):
        from kpp_sdk.exact import all_states

        problem = model.clamped_ising(visible)
        B, H = visible.shape[0], problem.n // visible.shape[0]
        states = all_states(H)
        spins = np.empty((1, B * H), dtype=np.int8)
        for r in range(B):
            block = IsingProblem(problem.J[r * H:(r + 1) * H, r * H:(r + 1) * H].toarray(),
                                 problem.h[r * H:(r + 1) * H])
            e = block.energy(states)
            p = np.exp(-(e - e.min()))
            spins[0, r * H:(r + 1) * H] = states[self._rng.choice(p.size, p=p / p.sum())]
        return model.states_from_clamped_spins(visible, spins)


class BoltzmannSampler(ModelSampler):
    """Samples a model on an Ising machine: weights -> IsingProblem -> device job -> tensors.

    Parameters
    ----------
    device : Device, str or Kaiwu optimizer
        Where samples come from (:func:`as_device`). Default ``"sa.cpu"``.
    num_reads : int, default 100
        Samples per negative phase (one device job).
    beta : float or "estimate", optional
        The inverse temperature at which the device samples the problem it is sent; the sampler
        sends ``E / beta`` so that the samples follow the model (inverse temperature 1).
        In ``mode="sample"`` the device is told this beta, so the correction is exact; default
        1.0. In ``mode="anneal"`` it is the device's effective temperature: a number measured
        beforehand, or ``"estimate"`` (the default there): after every job the pseudo-likelihood
        estimate (:func:`pseudo_likelihood_beta`) of the samples' temperature under the model updates the
        running beta (geometric average with weight ``adapt_rate``), and, with ``reweight``, the
        samples are importance-resampled with weights ``exp((beta_hat - 1) E(s))`` so that they
        follow the model now even where rescaling cannot help (devices that normalise every
        problem, as int8 hardware does).
    mode : "auto", "sample" or "anneal"
        ``"sample"``: Boltzmann sampling at a fixed beta (devices with ``mode``/``beta`` options,
        such as ``sa.cpu``); ``"anneal"``: the device's own dynamics; ``"auto"`` (default):
        ``"sample"`` where the device supports it (:func:`supports_boltzmann_sampling`).
    persistent : bool, default True
        In ``mode="sample"`` on devices with an ``initial_states`` option, each job starts from
        the previous job's samples (persistent chains on the device, as in PCD), so a few sweeps
        per job suffice.
    clamped_reads : int, default 1
        Samples of ``p(h | v)`` per data row in the positive phase of models whose hidden units
        are coupled (many rows are packed into one problem, up to the device's ``max_spins``).
    clamped_options : dict, optional
        Device options for those clamped jobs (default: the same as ``device_options``).
    reweight : bool, default True
        Importance-resample the samples of ``beta="estimate"`` (above).
    adapt_rate : float in (0, 1], default 0.5
        Weight of each new estimate in the running beta.
    knob_gain : float, default 0.08
        On devices with a ``temperature`` knob (``cim.emulator``) and ``beta="estimate"``, the
        sampler does not rescale the problem (such devices normalise it away) but turns the knob:
        ``t <- clip(t + knob_gain * log(beta_hat), 0, 1)`` after every job, starting at 0 (unless
        you pass ``temperature=...``, which then stays fixed).
    beta_bounds : (float, float), default (1e-3, 1e3)
        The running beta stays inside; ``beta_hat`` saturates at the upper bound when every
        sample is a local minimum.
    gibbs_steps : int, default 0
        The hybrid sampler: the device's states (after any reweighting) start ``gibbs_steps``
        Gibbs sweeps of the model in torch, at the model's temperature, and the chain ends are
        the samples. Every sweep moves the samples towards the model's distribution whatever
        the device gave, so the result is labelled ``hybrid`` (``last["sampler"]``, the repr).
        Costs no device time: per sweep, two matrix products of the batch with the weights.
    refresh : float in (0, 1], default 1.0
        With ``gibbs_steps``: the fraction of the hybrid's Gibbs chains that device states
        replace at each negative phase. 1.0: every chain starts at a fresh device state (the
        plain hybrid). Below 1 the ``num_reads`` chains persist across negative phases (per model,
        saved in :meth:`state_dict`): each call the device draws ``round(refresh * num_reads)``
        states (at least one), they replace as many chains chosen at random, and every chain runs
        ``gibbs_steps`` sweeps; a chain lives ``1 / refresh`` calls on average, so it has run
        about ``gibbs_steps / refresh`` sweeps of the slowly changing model. The first call
        starts every chain at a device state; no chain ever starts at the data. Device time:
        ``refresh`` times the plain hybrid's.
    topk_runs : int, optional
        The cloud's post-processing (the paper's method), on devices with an ``output`` option
        offering ``"topk"`` (``cim.emulator``, ``cim.cloud``): each job is ``topk_runs`` runs,
        de-duplicated, and the ``num_reads`` lowest-energy states come back with their counts.
        The samples are those states resampled (systematic resampling, ``num_reads`` rows) with
        weights: their counts (``reweight=False``, the cloud's distribution: low-energy modes
        only), or, with ``reweight`` (default), ``exp(-E(s))`` of each distinct state, the
        model's distribution restricted to the states found (importance weights from the model
        energy). Device time: ``topk_runs`` runs per job instead of ``num_reads``.
    executor : concurrent.futures.Executor, optional
        Runs the jobs; default: in the caller's thread for local devices, the device's own
        for remote ones.
    seed : int, optional
    options, **device_options
        Device options passed to every job, e.g. ``num_sweeps=2`` for ``sa.cpu``; unknown ones
        are rejected now. ``options`` (a dict) carries names that are also parameters here
        (a device's own ``mode`` or ``beta`` in ``mode="anneal"``).
    """

    MODES = ("auto", "sample", "anneal")

    def __init__(self, device: Any = "sa.cpu", num_reads: int = 100, *, beta: Any = None,
                 mode: str = "auto", persistent: bool = True, clamped_reads: int = 1,
                 clamped_options: dict | None = None, reweight: bool = True,
                 adapt_rate: float = 0.5, beta_bounds: tuple[float, float] = (1e-3, 1e3),
                 knob_gain: float = 0.08, gibbs_steps: int = 0, refresh: float = 1.0,
                 topk_runs: int | None = None,
                 executor: cf.Executor | None = None, seed: int | None = None,
                 options: dict | None = None, **device_options: Any):
        super().__init__(seed=seed)
        self.device = as_device(device)
        self.num_reads = check_int(num_reads, "num_reads", ge=1)
        self.clamped_reads = check_int(clamped_reads, "clamped_reads", ge=1)
        if mode not in self.MODES:
            raise InvalidOptionError(f"mode must be one of {self.MODES}, got {mode!r}")
        if mode == "auto":
            mode = "sample" if supports_boltzmann_sampling(self.device) else "anneal"
        elif mode == "sample" and not supports_boltzmann_sampling(self.device):
            raise InvalidOptionError(
                f"{self.device.name} has no Boltzmann sampling mode (options mode='sample' and "
                "beta); use mode='anneal' with beta='estimate' (its effective temperature is then "
                "estimated from the samples)")
        self.mode = mode
        device_options = {**(options or {}), **device_options}
        if mode == "sample" and {"mode", "beta"} & set(device_options):
            raise InvalidOptionError(
                "in mode='sample' the sampler sets the device options 'mode' and 'beta' itself; "
                "pass beta=... to BoltzmannSampler instead")
        if beta is None:
            beta = 1.0 if mode == "sample" else "estimate"
        if isinstance(beta, str):
            if beta != "estimate":
                raise InvalidOptionError(
                    f"beta must be a positive number or 'estimate', got {beta!r}")
            if mode == "sample":
                raise InvalidOptionError(
                    "beta='estimate' is for mode='anneal'; mode='sample' samples at the beta it is "
                    "given (default 1.0)")
            self.estimate = True
            self.beta = 1.0
        else:
            self.estimate = False
            self.beta = check_number(beta, "beta", gt=0)
        lo, hi = (float(b) for b in beta_bounds)
        if not 0 < lo < hi:
            raise InvalidOptionError(f"beta_bounds must be 0 < low < high, got {beta_bounds!r}")
        self.beta_bounds = (lo, hi)
        if not 0 < adapt_rate <= 1:
            raise InvalidOptionError(f"adapt_rate must be in (0, 1], got {adapt_rate}")
        self.adapt_rate = float(adapt_rate)
        self.reweight = bool(reweight)
        self.persistent = bool(persistent)
        self.gibbs_steps = check_int(gibbs_steps, "gibbs_steps", ge=0)
        self.refresh = check_number(refresh, "refresh", gt=0)
        if self.refresh > 1:
            raise InvalidOptionError(f"refresh must be in (0, 1], got {refresh}")
        if self.refresh < 1 and not self.gibbs_steps:
            raise InvalidOptionError(
                f"refresh={refresh} keeps the hybrid's Gibbs chains between calls, and there are "
                "none without Gibbs sweeps: pass gibbs_steps >= 1 too, or leave refresh at 1")
        self._gibbs_chains: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self.topk_runs = None if topk_runs is None else check_int(topk_runs, "topk_runs", ge=1)
        if self.topk_runs is not None:
            if {"output", "runs"} & set(device_options):
                raise InvalidOptionError(
                    "topk_runs sets the device options 'output' and 'runs' itself; pass "
                    "topk_runs=... alone")
            choices = getattr(self.device.OPTIONS.get("output"), "choices", None) or ()
            if "topk" not in choices:
                raise InvalidOptionError(
                    f"topk_runs needs a device with output='topk' (the cloud's de-duplicated "
                    f"Top-K), which {self.device.name} has not; use cim.emulator or cim.cloud, "
                    "or leave topk_runs out")
            if self.topk_runs < num_reads:
                raise InvalidOptionError(
                    f"topk_runs={self.topk_runs} runs cannot give num_reads={num_reads} distinct "
                    "states; use topk_runs >= num_reads")
            device_options = {**device_options, "output": "topk", "runs": self.topk_runs}
        self.device_options = self._checked_options(device_options)
        if clamped_options is None:  # clamped jobs sample p(h | v): no Top-K there
            clamped_options = {k: v for k, v in self.device_options.items()
                               if self.topk_runs is None or k not in ("output", "runs")}
        self.clamped_options = self._checked_options(clamped_options)
        if executor is None and not self.device.properties.is_remote:
            executor = InlineExecutor()
        self.executor = executor
        # A device with a temperature knob (``temperature`` in [0, 1], higher is hotter, e.g.
        # cim.emulator) normalises its couplings, so rescaling the problem cannot move its
        # temperature; with beta="estimate" the sampler turns the knob instead (a thermostat:
        # t <- t + knob_gain * log(beta_hat), so too-cold samples (beta_hat > 1) heat it up).
        self.thermostat = (self.estimate and "temperature" in self.device.OPTIONS
                           and "temperature" not in device_options)
        self.knob = 0.0
        self.knob_gain = float(knob_gain)
        if not self.knob_gain > 0:
            raise InvalidOptionError(f"knob_gain must be > 0, got {knob_gain}")

    def _checked_options(self, options: dict) -> dict:
        """Unknown names and bad values fail now, naming the known options / the allowed range."""
        full = dict(options)
        if self.mode == "sample":
            full.update(mode="sample", beta=self.beta)
        self.device.check_options(**full)
        return dict(options)

    def __repr__(self) -> str:
        beta = "estimate" if self.estimate else self.beta
        extra = ""
        if self.topk_runs is not None:
            extra += f", topk_runs={self.topk_runs}"
        if self.gibbs_steps:
            extra += f", gibbs_steps={self.gibbs_steps} (hybrid)"
        if self.refresh < 1:
            extra += f", refresh={self.refresh:g} (persistent chains)"
        return (f"BoltzmannSampler(device={self.device.name!r}, num_reads={self.num_reads}, "
                f"mode={self.mode!r}, beta={beta!r}{extra})")

    def state_dict(self, model=None) -> dict:
        """As :meth:`ModelSampler.state_dict`, plus the running ``beta`` and the thermostat's
        knob (``beta="estimate"``) and, with ``refresh < 1``, the model's persistent Gibbs
        chains."""
        state = {**super().state_dict(model), "beta": float(self.beta), "knob": float(self.knob)}
        chains = None if model is None else self._gibbs_chains.get(model)
        if chains is not None:
            state["gibbs_chains"] = chains.detach().cpu().clone()
        return state

    def load_state_dict(self, state: dict, model=None) -> None:
        from .errors import CheckpointError

        super().load_state_dict(state, model)
        try:
            self.beta, self.knob = float(state["beta"]), float(state["knob"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(
                f"the saved sampler state does not fit {self!r}: {type(exc).__name__}: {exc}"
            ) from None
        if model is not None:
            chains = state.get("gibbs_chains")
            if chains is None:
                self._gibbs_chains.pop(model, None)
            else:
                self._gibbs_chains[model] = chains.to(device=model.device, dtype=model.dtype)

    def reset(self, model=None) -> None:
        super().reset(model)
        if model is None:
            self._gibbs_chains.clear()
        else:
            self._gibbs_chains.pop(model, None)

    def _chains_from_state(self, chains: torch.Tensor, model):
        return chains.cpu().numpy().astype(np.int8, copy=True)

    # --- checks ---------------------------------------------------------------------------------

    def check(self, model) -> None:
        """:class:`ProblemTooLargeError` (before any training) if ``model`` does not fit."""
        props = self.device.properties
        n = model.num_spins
        if n > props.max_spins:
            raise ProblemTooLargeError(
                f"{type(model).__name__} with {model.num_visible} visible and {model.num_hidden} "
                f"hidden units needs {n} spins but {self.device.name} takes at most "
                f"{props.max_spins}; use fewer units, or a device or hardware profile with more "
                "spins")
        if (model.num_hidden and not model.exact_hidden_conditional
                and model.num_hidden > props.max_spins):
            raise ProblemTooLargeError(
                f"clamped sampling of {model.num_hidden} hidden units needs that many spins but "
                f"{self.device.name} takes at most {props.max_spins}")
        if not props.supports_fields:
            raise ProblemError(
                f"{self.device.name} does not support external fields, which every Boltzmann "
                "machine with biases needs")

    # --- sampling ---------------------------------------------------------------------------------

    def warm_up(self, model) -> None:
        """Run one tiny job of the kinds training sends for ``model`` (two reads of its
        problem, with the same options and, where used, initial states; for coupled hidden
        units also a clamped job), outside this sampler's random streams and state, so that a
        device compiling kernels on first use does it now rather than in the first batch."""
        fixed: dict = {}
        if self.mode == "sample":
            fixed.update(mode="sample", beta=self.beta)
        if self.thermostat:
            fixed["temperature"] = self.knob
        problem = model.to_ising()
        reads = min(2, self.num_reads)
        jobs = [(problem, dict(self.device_options))]
        if (self.persistent and self.mode == "sample" and "initial_states" in self.device.OPTIONS
                and "initial_states" not in self.device_options):
            start = np.where(np.arange(reads * problem.n).reshape(reads, problem.n) % 2, 1, -1)
            jobs.append((problem, {**self.device_options, "initial_states": start.astype(np.int8)}))
        if model.num_hidden and not model.exact_hidden_conditional:
            visible = torch.zeros(1, model.num_visible, dtype=model.dtype, device=model.device)
            jobs.append((model.clamped_ising(visible), dict(self.clamped_options)))
        for p, options in jobs:
            p = _scaled(p, 1.0 / self.beta)
            if p.is_sparse and not self.device.properties.supports_sparse:
                p = p.to_dense()
            self.device.sample(p, num_reads=reads, seed=0, executor=self.executor,
                               **options, **fixed)

    def negative(self, model, visible=None) -> torch.Tensor:
        if self.refresh < 1:
            return model.rao_blackwellize(self._persistent_hybrid(model))
        return model.rao_blackwellize(self._draw(model, self.num_reads, persistent=True))

    def _persistent_hybrid(self, model) -> torch.Tensor:
        """``refresh < 1``: device states replace a random part of the persistent Gibbs
        chains, then every chain runs ``gibbs_steps`` sweeps."""
        chains = self._gibbs_chains.get(model)
        n = self.num_reads
        g = self.generator(model.device)
        if chains is None or tuple(chains.shape) != (n, model.num_nodes):
            m = n
            chains = self._draw(model, n, persistent=True, gibbs_steps=0)
        else:
            m = max(1, round(self.refresh * n))
            fresh = self._draw(model, m, persistent=True, gibbs_steps=0)
            rows = torch.randperm(n, generator=g, device=model.device)[:m]
            chains = chains.clone()
            chains[rows] = fresh.to(chains.dtype)
        for _ in range(self.gibbs_steps):
            chains = model.gibbs_step(chains, generator=g)
        self._gibbs_chains[model] = chains
        self.last.update(refreshed=m, num_samples=n)
        return chains

    def sample(self, model, num_samples: int | None = None) -> torch.Tensor:
        n = self.num_reads if num_samples is None else check_int(num_samples, "num_samples", ge=1)
        return self._draw(model, n, persistent=False)

    def _submit(self, problem: IsingProblem, num_reads: int, options: dict):
        sent = _scaled(problem, 1.0 / self.beta)
        if getattr(self, "thermostat", False):
            options = {**options, "temperature": self.knob}
        if sent.is_sparse and not self.device.properties.supports_sparse:
            sent = sent.to_dense()
        opts = dict(options)
        if self.mode == "sample":
            opts.update(mode="sample", beta=self.beta)
        seed = int(self._rng.integers(2**63 - 1))
        return self.device.submit(sent, num_reads=num_reads, seed=seed, executor=self.executor,
                                  **opts)

    def _draw(self, model, num_reads: int, *, persistent: bool,
              gibbs_steps: int | None = None) -> torch.Tensor:
        self.check(model)
        problem = model.to_ising()
        opts = dict(self.device_options)
        chains = self._state.get(model) if persistent else None
        use_chains = (persistent and self.persistent and self.mode == "sample"
                      and "initial_states" in self.device.OPTIONS
                      and "initial_states" not in opts)
        if use_chains and chains is not None and chains.shape == (num_reads, problem.n):
            opts["initial_states"] = chains
        ss = self._submit(problem, num_reads, opts).result()
        info = {"sampler": "hybrid" if self.gibbs_steps else "device",
                "device": self.device.name, "mode": self.mode, "beta": self.beta,
                "device_s": ss.timing.get("device_s", 0.0), "run_s": ss.timing.get("run_s", 0.0)}
        if self.topk_runs is not None:
            spins, info["ess"] = self._topk_samples(problem, ss, num_reads)
            info["distinct_states"] = int(ss.spins.shape[0])
        else:
            spins = ss.spins
            if np.any(ss.num_occurrences != 1):
                spins = np.repeat(spins, ss.num_occurrences, axis=0)
        if use_chains and spins.shape == (num_reads, problem.n):
            self._state[model] = spins
        info["num_samples"] = int(spins.shape[0])
        if self.estimate:
            beta_hat = pseudo_likelihood_beta(problem, spins, beta_max=self.beta_bounds[1])
            info["beta_hat"] = beta_hat
            if beta_hat > 0 and self.thermostat:
                info["temperature"] = self.knob
                self.knob = float(np.clip(self.knob + self.knob_gain * np.log(beta_hat), 0.0, 1.0))
            elif beta_hat > 0:
                lo, hi = self.beta_bounds
                self.beta = float(np.clip(self.beta * beta_hat ** self.adapt_rate, lo, hi))
            if self.reweight and beta_hat > 0 and self.topk_runs is None:
                logw = (beta_hat - 1.0) * problem.energy(spins)
                spins, info["ess"] = self._resample(spins, logw, spins.shape[0])
        self.last = info
        g = self.generator(model.device)
        states = model.states_from_spins(spins, g)
        for _ in range(self.gibbs_steps if gibbs_steps is None else gibbs_steps):
            states = model.gibbs_step(states, generator=g)
        return states

    def _topk_samples(self, problem: IsingProblem, ss, num_reads: int):
        """The Top-K states of one task as ``num_reads`` rows: resampled by their counts, or
        (``reweight``) by ``exp(-E(s))`` of each distinct state (:class:`BoltzmannSampler`'s
        ``topk_runs``)."""
        if self.reweight:
            logw = -problem.energy(ss.spins)
        else:
            logw = np.log(np.asarray(ss.num_occurrences, dtype=np.float64))
        return self._resample(ss.spins, logw, num_reads)

    def _resample(self, spins: np.ndarray, logw: np.ndarray, m: int):
        """``m`` rows drawn by systematic resampling with weights ``exp(logw)``; also the
        effective sample size of the weights."""
        w = np.exp(logw - logw.max())
        w /= w.sum()
        ess = float(1.0 / np.sum(w * w))
        positions = (self._rng.random() + np.arange(m)) / m
        idx = np.minimum(np.searchsorted(np.cumsum(w), positions), len(w) - 1)
        return spins[idx], ess

    def clamped(self, model, visible: torch.Tensor) -> torch.Tensor:
        k = visible.shape[1]
        H = model.num_nodes - k
        per_job = max(1, self.device.properties.max_spins // H)
        jobs = []
        for lo in range(0, visible.shape[0], per_job):
            chunk = visible[lo:lo + per_job]
            jobs.append((chunk, self._submit(model.clamped_ising(chunk), self.clamped_reads,
                                             self.clamped_options)))
        parts = []
        for chunk, job in jobs:
            ss = job.result()
            spins = np.repeat(ss.spins, ss.num_occurrences, axis=0)
            parts.append(model.states_from_clamped_spins(chunk, spins))
        return torch.cat(parts)


def as_sampler(obj: Any) -> ModelSampler:
    """A :class:`ModelSampler` from a sampler, a Device, a device name or a Kaiwu optimizer
    (the latter three through :class:`BoltzmannSampler` with ``mode="auto"``)."""
    if isinstance(obj, ModelSampler):
        return obj
    return BoltzmannSampler(as_device(obj))
