"""Feature selection for any PyTorch model with a hard 0/1 input mask chosen by a QUBO.

:class:`FeatureSelectionWrapper` multiplies the model's input by a mask ``m in {0,1}^F``. Every
``mask_update_epochs`` epochs it expands the loss around the current mask to second order,

    L(m) ~ L(m0) + g^T (m - m0) + 1/2 (m - m0)^T H (m - m0)       (g, H: d/dm of the loss),

adds ``lambda_reg * sum(m)`` and, with ``cardinality_k``, the penalty
``P (sum(m) - k)^2`` (``P`` = :data:`CARDINALITY_PENALTY`), and minimises the resulting QUBO

    f(m) = 1/2 m^T Q m + l^T m,   Q = H (+ 2P 11^T),   l = g - H m0 + lambda_reg (- 2Pk)

with :func:`solve_qubo` on a local search, ``sa.cpu``, the emulated CIM or any Device. The mask
is then moved into ``[min_selected_features, max_selected_features]`` by the cheapest single
changes. The names, arguments and results are those of kaiwu-torch-plugin 0.3.0's
``FeatureSelectionWrapper`` (its "MAIFS"), which :mod:`kpp_sdk.models.kaiwu_compat` re-exports.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from math import ceil
from typing import Any

import numpy as np
import torch
from torch import nn

from kpp_sdk.problem import IsingProblem

__all__ = [
    "AVAILABLE_SOLVERS",
    "CARDINALITY_PENALTY",
    "FeatureSelectionWrapper",
    "QuadraticLinearSolver",
    "qubo_objective",
    "solve_qubo",
]

#: Solver names :func:`solve_qubo` knows (a Device, a device name or a Kaiwu optimizer work too).
AVAILABLE_SOLVERS = ("local_search", "sa", "kaiwu_cim")
#: ``P`` of the cardinality penalty ``P (sum(m) - k)^2``.
CARDINALITY_PENALTY = 10.0


def qubo_objective(Q: np.ndarray, l: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``f(x) = 1/2 x^T Q x + l^T x`` for one state ``(F,)`` or each row of ``(k, F)``."""
    x = np.asarray(x, dtype=np.float64)
    return 0.5 * np.einsum("...i,ij,...j->...", x, Q, x) + x @ l


class QuadraticLinearSolver:
    """The QUBO ``f(x) = 1/2 x^T Q x + l^T x`` as a Kaiwu Ising matrix (kaiwu-torch-plugin's
    name for this conversion).

    :meth:`solve` returns the ``(F+1) x (F+1)`` Kaiwu matrix ``M`` (ancilla last) with
    ``-s^T M s = f((s + 1) / 2) + const``: the convention every Kaiwu optimizer and
    :meth:`kpp_sdk.IsingProblem.from_kaiwu` use, so minimising either minimises ``f``. (Plugin
    0.3.0 returned an upper-triangular matrix of the opposite sign; see
    ``docs/migrating-from-kaiwu.md``.)
    """

    @staticmethod
    def qubo_matrix_to_ising_matrix(qubo_matrix: Any) -> np.ndarray:
        """The Kaiwu matrix of ``E(x) = x^T Q x`` (``Q`` any square matrix: only ``Q + Q^T``
        matters, its diagonal is linear)."""
        Q = np.asarray(qubo_matrix, dtype=np.float64)
        if Q.ndim != 2 or Q.shape[0] != Q.shape[1]:
            raise ValueError(f"qubo_matrix must be a square matrix, got shape {Q.shape}")
        if not np.isfinite(Q).all():
            raise ValueError("qubo_matrix must contain only finite values")
        return IsingProblem.from_qubo(Q).to_kaiwu()

    def solve(self, quadratic_matrix: Any, linear_vector: Any) -> np.ndarray:
        """The Kaiwu matrix of ``1/2 x^T Q x + l^T x`` (class docstring)."""
        Q, l = _checked_terms(quadratic_matrix, linear_vector)
        return self.qubo_matrix_to_ising_matrix(0.5 * Q + np.diag(l))


def _checked_terms(quadratic_matrix: Any, linear_vector: Any) -> tuple[np.ndarray, np.ndarray]:
    Q = np.asarray(quadratic_matrix, dtype=np.float64)
    l = np.asarray(linear_vector, dtype=np.float64)
    if Q.ndim != 2 or Q.shape[0] != Q.shape[1]:
        raise ValueError(f"quadratic_matrix must be a square matrix, got shape {Q.shape}")
    if l.shape != (Q.shape[0],):
        raise ValueError(f"linear_vector must have shape ({Q.shape[0]},) to match "
                         f"quadratic_matrix, got {l.shape}")
    if not (np.isfinite(Q).all() and np.isfinite(l).all()):
        raise ValueError("quadratic_matrix and linear_vector must contain only finite values")
    return 0.5 * (Q + Q.T), l


def _local_search(Q: np.ndarray, l: np.ndarray, x: np.ndarray, max_iter: int) -> np.ndarray:
    """Steepest single-flip descent from ``x`` (at most ``max_iter`` flips)."""
    x = x.astype(np.float64).copy()
    field = Q @ x + l
    diag = np.diagonal(Q)
    for _ in range(int(max_iter)):
        d = 1.0 - 2.0 * x
        delta = d * field + 0.5 * diag  # f(x + d e_i) - f(x), since d_i^2 = 1
        i = int(np.argmin(delta))
        if delta[i] >= 0:
            break
        x[i] += d[i]
        field += d[i] * Q[:, i]
    return x.astype(int)


def _best_row(Q: np.ndarray, l: np.ndarray, spins: np.ndarray) -> np.ndarray:
    xs = (np.asarray(spins) + 1) // 2
    return xs[int(np.argmin(qubo_objective(Q, l, xs)))].astype(int)


def solve_qubo(quadratic_matrix: Any, linear_vector: Any, initial_state: Any,
               solver: Any = "local_search", **solver_kwargs: Any) -> np.ndarray:
    """A binary ``x`` minimising ``1/2 x^T Q x + l^T x`` (``(F,)`` ints).

    ``solver``:

    * ``"local_search"``: steepest single-flip descent from ``initial_state`` (``max_iter``,
      default 2000);
    * ``"sa"``: :class:`kpp_sdk.kaiwu.classical.SimulatedAnnealingOptimizer` with
      ``solver_kwargs`` (its parameters; ``random_state`` seeds it as ``rand_seed`` does;
      ``max_iter`` is accepted and unused, as in the plugin), the lowest of its solutions;
    * ``"kaiwu_cim"``: :class:`kpp_sdk.kaiwu.cim.CIMOptimizer` (the emulated machine) behind a
      :class:`~kpp_sdk.kaiwu.cim.PrecisionReducer` at ``min(target_precision, 8)`` bits,
      ``sample_number`` / ``task_mode`` passed on; the plugin's precision-splitting arguments
      (``max_bits``, ``max_precision``, ``precision_step``, ``save_dir``, ``cleanup_records``,
      ``project_no``, ``interval``) are accepted; no variable splitting is done;
    * a kpp Device, a device name, a ``dimod.Sampler`` or a Kaiwu optimizer object
      (``solver_kwargs`` are the Device's options), the lowest of its reads.
    """
    Q, l = _checked_terms(quadratic_matrix, linear_vector)
    x0 = np.asarray(initial_state)
    if x0.shape != l.shape or not np.isin(x0, (0, 1)).all():
        raise ValueError(f"initial_state must be a 0/1 vector of length {l.size}")
    if isinstance(solver, str) and solver not in AVAILABLE_SOLVERS:
        from kpp_sdk.registry import list_devices

        if solver not in {d.name for d in list_devices()}:
            raise ValueError(f"Unsupported solver {solver!r}. Available solvers: "
                             f"{', '.join(AVAILABLE_SOLVERS)}, or a kpp device name")
    kw = dict(solver_kwargs)
    if solver == "local_search":
        return _local_search(Q, l, x0, kw.get("max_iter", 2000))
    M = QuadraticLinearSolver().solve(Q, l)
    if solver == "sa":
        from kpp_sdk.kaiwu.classical import SimulatedAnnealingOptimizer

        kw.pop("max_iter", None)
        if "random_state" in kw:
            kw.setdefault("rand_seed", kw.pop("random_state"))
        kw.setdefault("size_limit", 1)
        spins = SimulatedAnnealingOptimizer(**kw).solve(M)
        return _best_row(Q, l, IsingProblem.spins_from_kaiwu(spins, l.size))
    if solver == "kaiwu_cim":
        from kpp_sdk.kaiwu.cim import CIMOptimizer, PrecisionReducer

        cim = CIMOptimizer(task_name=str(kw.get("task_name", "feature_selection")),
                           task_mode=kw.get("task_mode", "optimization"),
                           sample_number=int(kw.get("sample_number", 1)),
                           wait=True)
        bits = min(int(kw.get("target_precision", 8)), 8)
        spins = PrecisionReducer(cim, precision=bits).solve(M)
        return _best_row(Q, l, IsingProblem.spins_from_kaiwu(spins, l.size))
    from kpp_sdk.interop import as_device

    problem = IsingProblem.from_kaiwu(M)
    ss = as_device(solver).sample(problem, **kw)
    return _best_row(Q, l, ss.spins)


def _numpy(t: torch.Tensor, dtype=None) -> np.ndarray:
    a = t.detach().cpu().double().numpy().copy()
    return a if dtype is None else a.astype(dtype)


class FeatureSelectionWrapper(nn.Module):
    """Wrap ``model`` with a hard 0/1 mask on ``feature_dim`` input features (module docstring).

    Parameters
    ----------
    model : nn.Module
        Receives the masked input.
    feature_dim : int
        Size of the masked axis (``input_feature_axis``, default the last).
    lambda_reg : float, default 0
        Cost per selected feature.
    cardinality_k : int, optional
        Target number of selected features (a quadratic penalty).
    min_selected_features, max_selected_features : int, optional
        Bounds enforced after each update (default ``max(1, ceil(0.2 F))`` .. ``F``; the lower
        default only applies when the solver selects nothing).
    solver : str or Device or optimizer, default "local_search"
        See :func:`solve_qubo`; ``solver_kwargs`` go to it.
    mask_update_epochs : int, optional
        Update the mask every this many epochs of :meth:`fit_weights` (None: never).
    """

    def __init__(self, model: nn.Module, feature_dim: int, lambda_reg: float = 0.0,
                 cardinality_k: int | None = None, min_selected_features: int | None = None,
                 max_selected_features: int | None = None, solver: Any = "local_search",
                 mask_update_epochs: int | None = None, input_feature_axis: int = -1,
                 solver_kwargs: dict | None = None) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        feature_dim = int(feature_dim)
        if feature_dim < 1:
            raise ValueError(f"feature_dim must be >= 1, got {feature_dim}")
        hi = feature_dim if max_selected_features is None else int(max_selected_features)
        lo = (min(max(1, ceil(0.2 * feature_dim)), hi) if min_selected_features is None
              else int(min_selected_features))
        if not 0 <= lo <= hi <= feature_dim:
            raise ValueError(f"need 0 <= min_selected_features ({lo}) <= max_selected_features "
                             f"({hi}) <= feature_dim ({feature_dim})")
        if cardinality_k is not None and not 0 <= int(cardinality_k) <= feature_dim:
            raise ValueError(f"cardinality_k must be in 0..{feature_dim}, got {cardinality_k}")
        if isinstance(solver, str):
            from kpp_sdk.registry import list_devices

            if solver not in AVAILABLE_SOLVERS and solver not in {d.name for d in list_devices()}:
                raise ValueError(f"Unsupported solver {solver!r}. Available solvers: "
                                 f"{', '.join(AVAILABLE_SOLVERS)}, or a kpp device name")
        self.model = model
        self.feature_dim = feature_dim
        self.lambda_reg = float(lambda_reg)
        self.cardinality_k = None if cardinality_k is None else int(cardinality_k)
        self.min_selected_features = lo
        self.max_selected_features = hi
        self._min_explicit = min_selected_features is not None
        self.solver = solver
        self.solver_kwargs = dict(solver_kwargs or {})
        self.mask_update_epochs = None if mask_update_epochs is None else int(mask_update_epochs)
        self.input_feature_axis = int(input_feature_axis)
        self._trained_epochs = 0
        self.register_buffer("mask", torch.ones(feature_dim))

    # --- the mask ---------------------------------------------------------------------------

    def _mask_view(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if x.ndim == 0:
            raise ValueError("input_feature must have at least one dimension")
        axis = self.input_feature_axis % x.ndim
        if x.shape[axis] != self.feature_dim:
            raise ValueError(f"input feature axis {self.input_feature_axis} has size "
                             f"{x.shape[axis]}, expected feature_dim={self.feature_dim}")
        shape = [1] * x.ndim
        shape[axis] = self.feature_dim
        return mask.reshape(shape).to(device=x.device, dtype=x.dtype)

    def apply_mask(self, input_feature: torch.Tensor,
                   mask: torch.Tensor | None = None) -> torch.Tensor:
        """``input_feature`` times the mask (``self.mask`` unless ``mask`` is given)."""
        return input_feature * self._mask_view(input_feature, self.mask if mask is None else mask)

    def forward(self, input_feature: torch.Tensor) -> torch.Tensor:
        return self.model(self.apply_mask(input_feature))

    def get_support(self) -> np.ndarray:
        """The mask as booleans (sklearn's name)."""
        return _numpy(self.mask) > 0.5

    def selected_indices(self) -> np.ndarray:
        return np.flatnonzero(self.get_support())

    def num_selected(self) -> int:
        return int(self.get_support().sum())

    # --- training -------------------------------------------------------------------------------

    def fit_weights(self, data_loader: Iterable, loss_fn: Callable, optimizer: torch.optim.Optimizer,
                    train_epochs: int = 1) -> float:
        """Train the model's weights for ``train_epochs`` epochs (the mask fixed), updating the
        mask every ``mask_update_epochs`` epochs; returns the mean batch loss."""
        self.train()
        total, count = 0.0, 0
        for _ in range(int(train_epochs)):
            batches = 0
            for xb, yb in data_loader:
                xb, yb = xb.to(self.mask.device), yb.to(self.mask.device)
                optimizer.zero_grad(set_to_none=True)
                loss = loss_fn(self(xb), yb)
                if loss.ndim != 0:
                    raise ValueError("loss_fn must return a scalar tensor")
                loss.backward()
                optimizer.step()
                total += float(loss.detach())
                batches += 1
            if batches == 0:
                raise ValueError("data_loader produced no batches")
            count += batches
            self._trained_epochs += 1
            if self.mask_update_epochs and self._trained_epochs % self.mask_update_epochs == 0:
                self.update_mask(data_loader, loss_fn)
        if count == 0:
            raise ValueError("train_epochs must be >= 1")
        return total / count

    def compute_mask_derivatives(self, data_loader: Iterable, loss_fn: Callable,
                                 hessian_mode: str = "full",
                                 max_samples: int | None = 1000) -> tuple[np.ndarray, np.ndarray]:
        """``(g, H)``: gradient and Hessian of the loss (over at most ``max_samples`` examples)
        with respect to a continuous mask at the current one; ``hessian_mode="diagonal"`` keeps
        the diagonal only."""
        if hessian_mode not in ("full", "diagonal"):
            raise ValueError(f"hessian_mode must be 'full' or 'diagonal', got {hessian_mode!r}")
        xs, ys, n = [], [], 0
        for xb, yb in data_loader:
            xs.append(xb)
            ys.append(yb)
            n += len(xb)
            if max_samples is not None and n >= max_samples:
                break
        if not xs:
            raise ValueError("data_loader produced no batches")
        x = torch.cat(xs)[:max_samples].to(self.mask.device)
        y = torch.cat(ys)[:max_samples].to(self.mask.device)
        was_training = self.training
        grads = [p.requires_grad for p in self.model.parameters()]
        self.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        try:
            def loss_of(m: torch.Tensor) -> torch.Tensor:
                loss = loss_fn(self.model(self.apply_mask(x, m)), y)
                if loss.ndim != 0:
                    raise ValueError("loss_fn must return a scalar tensor")
                return loss

            m0 = self.mask.detach().clone().to(x.dtype)
            g = torch.autograd.functional.jacobian(loss_of, m0)
            H = torch.autograd.functional.hessian(loss_of, m0)
        finally:
            for p, r in zip(self.model.parameters(), grads):
                p.requires_grad_(r)
            self.train(was_training)
        H = 0.5 * (H + H.T)
        if hessian_mode == "diagonal":
            H = torch.diag(torch.diagonal(H))
        return _numpy(g), _numpy(H)

    def build_qubo(self, gradient: np.ndarray, hessian: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(Q, l)`` of the module docstring at the current mask."""
        m0 = _numpy(self.mask)
        Q = np.asarray(hessian, dtype=np.float64).copy()
        l = np.asarray(gradient, dtype=np.float64) - Q @ m0 + self.lambda_reg
        if self.cardinality_k is not None:
            Q += 2.0 * CARDINALITY_PENALTY
            l -= 2.0 * CARDINALITY_PENALTY * self.cardinality_k
        return Q, l

    def project_to_bounds(self, mask: np.ndarray, Q: np.ndarray, l: np.ndarray) -> np.ndarray:
        """``mask`` moved into ``[min_selected_features, max_selected_features]`` by dropping
        (adding) one feature at a time, each time the one whose change raises ``f`` least."""
        x = np.asarray(mask, dtype=int).copy()
        if x.shape != (self.feature_dim,) or not np.isin(x, (0, 1)).all():
            raise ValueError(f"a mask must be a 0/1 vector of length {self.feature_dim}")
        enforce_min = self._min_explicit or x.sum() == 0
        while x.sum() > self.max_selected_features or (enforce_min
                                                        and x.sum() < self.min_selected_features):
            drop = x.sum() > self.max_selected_features
            idx = np.flatnonzero(x == (1 if drop else 0))
            trial = np.repeat(x[None, :], idx.size, axis=0)
            trial[np.arange(idx.size), idx] = 0 if drop else 1
            x = trial[int(np.argmin(qubo_objective(Q, l, trial)))]
        return x

    def update_mask(self, data_loader: Iterable, loss_fn: Callable, hessian_mode: str = "full",
                    max_samples: int | None = 1000) -> np.ndarray:
        """Solve the mask QUBO once and store the new mask; returns it."""
        g, H = self.compute_mask_derivatives(data_loader, loss_fn, hessian_mode, max_samples)
        Q, l = self.build_qubo(g, H)
        current = _numpy(self.mask, dtype=int)
        selected = solve_qubo(Q, l, current, self.solver, **self.solver_kwargs)
        selected = self.project_to_bounds(selected, Q, l)
        with torch.no_grad():
            self.mask.copy_(torch.as_tensor(selected, dtype=self.mask.dtype))
        return selected.copy()
