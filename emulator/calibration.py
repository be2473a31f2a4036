"""Boltzmann-sampling calibration (docs/cim-physics.md section 7).

* :func:`enumerate_energies`: E(s) of all 2^N states (N <= 24, vectorised in blocks).
* :func:`estimate_beta`: effective inverse temperature of a set of samples, two ways:
  (1) moment matching, <E>_beta = mean(E_samples), solved by bisection over the exact
      enumeration; (2) maximum likelihood of log n(s) = -beta E(s) + c over the states (or,
      without spins, the energy levels weighted by their degeneracy) seen at least
      ``min_count`` times (the Poisson likelihood; its stationarity condition is again a
      restricted moment match, solved by bisection).
* :func:`sample_quality`: KL and TV distances to exp(-beta E), KS statistic of the energy
  histogram, and the correlation-matrix error ||C_emp - C_beta||_F / N.
* :func:`temperature_knob`: one knob t in [0, 1] mapped to the end pump p1 and the injected
  additive noise: t = 0 leaves the parameters as they are (cold), t = 1 puts p1 at the coupled
  threshold and ``sigma_add`` at ``hot_sigma_add`` (hot).

State index convention: state b (0 <= b < 2^N) has s_i = +1 when bit i of b is 0, -1 when 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .coupling import ising_energy, spectral_bounds, validate_problem
from .errors import ParameterError

__all__ = [
    "BetaEstimate",
    "KnobCalibration",
    "SampleQuality",
    "ProfileFit",
    "calibrate_knob",
    "fit_profile",
    "energy_levels",
    "enumerate_energies",
    "estimate_beta",
    "sample_quality",
    "spins_to_index",
    "success_probabilities",
    "temperature_knob",
]

MAX_ENUM_SPINS = 24


def _bits(idx: np.ndarray, n: int) -> np.ndarray:
    return ((idx[:, None] >> np.arange(n, dtype=np.int64)[None, :]) & 1).astype(np.int8)


def enumerate_energies(J, h=None, *, block: int = 1 << 16) -> np.ndarray:
    """Energies of all 2^N states, float64 array indexed by the state index (module doc)."""
    Jv, hv = validate_problem(J, h)
    n = Jv.shape[0]
    if n > MAX_ENUM_SPINS:
        raise ParameterError("n_spins", n, f"<= {MAX_ENUM_SPINS} for exact enumeration")
    Jd = Jv.toarray() if hasattr(Jv, "toarray") else Jv
    total = 1 << n
    out = np.empty(total, dtype=np.float64)
    for start in range(0, total, block):
        idx = np.arange(start, min(total, start + block), dtype=np.int64)
        S = 1.0 - 2.0 * _bits(idx, n)
        e = -0.5 * np.einsum("ij,ij->i", S @ Jd, S)
        if hv is not None:
            e -= S @ hv
        out[start : start + idx.size] = e
    return out


def spins_to_index(spins) -> np.ndarray:
    """State indices of spin rows (int8 +-1, shape (M, N)); N <= 62."""
    S = np.atleast_2d(np.asarray(spins))
    bits = (S < 0).astype(np.int64)
    return bits @ (np.int64(1) << np.arange(S.shape[1], dtype=np.int64))


def energy_levels(state_energies: np.ndarray, decimals: int = 9):
    """Distinct energy levels (ascending) and their degeneracies."""
    levels, deg = np.unique(
        np.round(np.asarray(state_energies, dtype=np.float64), decimals), return_counts=True
    )
    return levels, deg


def _mean_energy(beta: float, E: np.ndarray, g: np.ndarray) -> float:
    a = -beta * E
    a = a - a.max()
    w = g * np.exp(a)
    return float(np.sum(w * E) / np.sum(w))


def _solve_mean(
    target: float, E: np.ndarray, g: np.ndarray, beta_max: float | None = None
) -> float:
    """beta with <E>_beta = target over levels E (degeneracy g); +-inf outside the range."""
    emin, emax = float(E.min()), float(E.max())
    if emax - emin <= 0:
        return 0.0
    if target <= emin:
        return math.inf
    if target >= emax:
        return -math.inf
    gaps = np.diff(np.unique(E))
    if beta_max is None:
        beta_max = 60.0 / max(float(gaps.min()) if gaps.size else 1.0, 1e-12)
    lo, hi = -beta_max, beta_max
    if _mean_energy(hi, E, g) > target:
        return math.inf
    if _mean_energy(lo, E, g) < target:
        return -math.inf
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if _mean_energy(mid, E, g) > target:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-12 * max(1.0, abs(mid)):
            break
    return 0.5 * (lo + hi)


@dataclass(frozen=True)
class BetaEstimate:
    """Effective inverse temperature of a sample set.

    beta_moment: from <E>_beta = mean sample energy (exact enumeration).
    beta_ml: Poisson maximum likelihood of log n(s) = -beta E(s) + c over the states (or
        levels) with count >= min_count; None when fewer than two such energies.
    beta_lsq: ordinary least-squares slope of the same log-count fit (for reference).
    n_used: number of states (or levels) in the ML fit. per_state: whether the ML fit used
    states (spins given) or energy levels. mean_energy: mean sample energy.
    """

    beta_moment: float
    beta_ml: float | None
    beta_lsq: float | None
    n_used: int
    per_state: bool
    mean_energy: float


def estimate_beta(
    energies=None, *, spins=None, J=None, h=None, state_energies=None, min_count: int = 5
) -> BetaEstimate:
    """Effective beta of samples, from their energies and the exact spectrum.

    energies: sample energies (M,), or None when ``spins`` and (J, h) are given.
    spins: optional sample spins (M, N) int8; enables the per-state ML fit.
    J, h: the problem (N <= 24), used to enumerate the spectrum, or ``state_energies``: the
        energies of all 2^N states (from :func:`enumerate_energies`).
    """
    if state_energies is None:
        if J is None:
            raise ParameterError("J", None, "J (and h) or state_energies to enumerate the spectrum")
        state_energies = enumerate_energies(J, h)
    state_energies = np.asarray(state_energies, dtype=np.float64)
    if energies is None:
        if spins is None:
            raise ParameterError("energies", None, "sample energies or spins")
        energies = state_energies[spins_to_index(spins)]
    energies = np.asarray(energies, dtype=np.float64).reshape(-1)
    if energies.size == 0:
        raise ParameterError("energies", energies, "at least one sample")
    levels, deg = energy_levels(state_energies)
    beta_m = _solve_mean(float(energies.mean()), levels, deg.astype(np.float64))

    if spins is not None:
        idx = spins_to_index(spins)
        uniq, cnt = np.unique(idx, return_counts=True)
        keep = cnt >= min_count
        E_used = state_energies[uniq[keep]]
        n_used = cnt[keep].astype(np.float64)
        g_used = np.ones_like(E_used)
        per_state = True
    else:
        lv, cnt = np.unique(np.round(energies, 9), return_counts=True)
        lvl_pos = np.searchsorted(levels, lv)
        lvl_pos = np.clip(lvl_pos, 0, levels.size - 1)
        keep = cnt >= min_count
        E_used = lv[keep]
        n_used = cnt[keep].astype(np.float64)
        g_used = deg[lvl_pos[keep]].astype(np.float64)
        per_state = False
    beta_ml = beta_lsq = None
    if np.unique(E_used).size >= 2:
        target = float(np.sum(n_used * E_used) / np.sum(n_used))
        beta_ml = _solve_mean(target, E_used, g_used)
        y = np.log(n_used / g_used)
        A = np.vstack([E_used, np.ones_like(E_used)]).T
        coef = np.linalg.lstsq(A, y, rcond=None)[0]
        beta_lsq = float(-coef[0])
    return BetaEstimate(
        beta_moment=beta_m,
        beta_ml=beta_ml,
        beta_lsq=beta_lsq,
        n_used=int(E_used.size),
        per_state=per_state,
        mean_energy=float(energies.mean()),
    )


@dataclass(frozen=True)
class SampleQuality:
    """Distances between the empirical distribution of samples and exp(-beta E)/Z.

    kl_levels: KL(P_emp || P_beta) over energy levels. tv_levels / tv_states: total variation
    over levels / over states. ks: largest gap between the two energy CDFs. corr_error:
    ||C_emp - C_beta||_F / N with C_ij = <s_i s_j>. beta: the beta used.
    """

    beta: float
    kl_levels: float
    tv_levels: float
    tv_states: float
    ks: float
    corr_error: float


def sample_quality(
    spins, J, h=None, beta: float | None = None, *, state_energies=None
) -> SampleQuality:
    """Compare samples (M, N) with the Boltzmann distribution at ``beta`` (default: the
    moment-matching estimate). Exact enumeration, N <= 24."""
    S = np.atleast_2d(np.asarray(spins)).astype(np.int8)
    n = S.shape[1]
    if state_energies is None:
        state_energies = enumerate_energies(J, h)
    idx = spins_to_index(S)
    if beta is None:
        beta = estimate_beta(state_energies[idx], state_energies=state_energies).beta_moment
    a = -beta * state_energies
    a -= a.max()
    p = np.exp(a)
    p /= p.sum()
    q = np.bincount(idx, minlength=state_energies.size).astype(np.float64) / S.shape[0]
    tv_states = 0.5 * float(np.abs(q - p).sum())
    levels, inv = np.unique(np.round(state_energies, 9), return_inverse=True)
    pl = np.bincount(inv, weights=p, minlength=levels.size)
    ql = np.bincount(inv, weights=q, minlength=levels.size)
    m = ql > 0
    kl = float(np.sum(ql[m] * np.log(ql[m] / np.maximum(pl[m], 1e-300))))
    tv_levels = 0.5 * float(np.abs(ql - pl).sum())
    ks = float(np.max(np.abs(np.cumsum(ql) - np.cumsum(pl))))
    C_emp = (S.astype(np.float64).T @ S.astype(np.float64)) / S.shape[0]
    C_b = np.zeros((n, n))
    block = 1 << 16
    for start in range(0, state_energies.size, block):
        ids = np.arange(start, min(state_energies.size, start + block), dtype=np.int64)
        Sb = 1.0 - 2.0 * _bits(ids, n)
        C_b += (Sb * p[ids, None]).T @ Sb
    corr = float(np.linalg.norm(C_emp - C_b) / n)
    return SampleQuality(
        beta=float(beta),
        kl_levels=kl,
        tv_levels=tv_levels,
        tv_states=tv_states,
        ks=ks,
        corr_error=corr,
    )


def temperature_knob(
    params,
    t: float,
    *,
    J=None,
    h=None,
    p_threshold: float | None = None,
    hot_sigma_add: float = 0.2,
):
    """Map one knob ``t`` in [0, 1] onto the end pump p1 and the injected (additive) noise.

    t = 0: ``params`` unchanged (cold: p1 well above threshold, nominal noise).
    t = 1: p1 at the coupled threshold p_th (hot: the broadest distribution, Honjo 2021) and
    sigma_add = hot_sigma_add. In between, both move linearly:
        p1(t) = p1 + t (p_th - p1),   sigma_add(t) = sigma_add + t (hot_sigma_add - sigma_add).
    Lower p1 (smaller amplitudes A, beta_eff ~ xi A^2 / D) and more noise D both heat.
    p_th is the map's coupled threshold 1 - ln(1 + dtau xi lambda_max)/dtau with the reference
    gain xi = xi0/rho (rho the spectral radius; pass p_th, or pass J (and h) to compute it). A
    larger t gives a smaller beta_eff (checked in the V6 tests).

    The knob's scale keeps the spectral-radius gain on purpose. With the problem-aware gain
    (:func:`~kpp_sdk.emulator.coupling.feedback_gain`) the emulator's actual threshold is lower,
    so t = 1 here stays above it, in the bifurcating regime. Scaling the knob to the actual
    threshold (t = 1 right at it) made the thermostat of
    :class:`~kpp_sdk.models.samplers.BoltzmannSampler` overshoot into the noise: the README's
    main job with the emulator alone (``--gibbs-steps 0``, seed 0) fell from -20.89 to -25.75
    test log-likelihood.
    """
    if not (isinstance(t, (int, float)) and 0.0 <= t <= 1.0):
        raise ParameterError("t", t, "0 <= t <= 1")
    if p_threshold is None:
        if J is None:
            raise ParameterError("p_threshold", None, "a threshold or J to compute it")
        from .coupling import augment_with_ancilla

        Jv, hv = validate_problem(J, h)
        M = augment_with_ancilla(Jv, hv) if hv is not None else Jv
        lmin, lmax = spectral_bounds(M)
        rho = max(abs(lmin), abs(lmax))
        xi = params.xi0 / rho if rho > 0 else 0.0
        c = params.dtau * xi * lmax
        p_threshold = 1.0 - math.log1p(c) / params.dtau
    p1 = params.p1 + t * (p_threshold - params.p1)
    s = params.sigma_add + t * (hot_sigma_add - params.sigma_add)
    return params.replace(p1=float(p1), sigma_add=float(s))


@dataclass(frozen=True)
class KnobCalibration:
    """Result of :func:`calibrate_knob`.

    knob: the calibrated parameter; value: its calibrated value; mean_energy: the mean run
    energy at ``value``; target: the target energy; rel_error: |mean - target| / |target|;
    history: (value, mean energy) of every evaluation, in order; profile: the profile with
    ``knob = value``.
    """

    knob: str
    value: float
    mean_energy: float
    target: float
    rel_error: float
    history: tuple
    profile: object


def calibrate_knob(
    profile,
    J,
    target_energy: float,
    *,
    knob: str = "sigma_el",
    bounds: tuple[float, float] = (0.0, 1.0),
    h=None,
    runs: int = 16,
    seed=0,
    rtol: float = 0.002,
    max_evals: int = 12,
    engine: str = "auto",
) -> KnobCalibration:
    """Set one imperfection knob of ``profile`` so that the mean run energy on (J, h) equals
    ``target_energy`` (docs/cim-physics.md, V5).

    The knob must make the machine worse monotonically (more noise: a higher mean energy);
    the search brackets ``target_energy`` within ``bounds`` and then interpolates (regula falsi
    on the measured mean energies, bisection when it stalls) until the mean is within
    ``rtol`` of the target or ``max_evals`` evaluations were spent; it returns the best value
    seen. Every evaluation runs ``runs`` runs with the same seed (common random numbers, so
    the mean energy is a smooth function of the knob). Raises :class:`ParameterError` when
    the target is outside what the bounds can reach.
    """
    from .physics import sample

    lo, hi = float(bounds[0]), float(bounds[1])
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ParameterError("bounds", bounds, "finite (lo, hi) with lo < hi")
    profile.replace(**{knob: lo})  # validates the knob name and the bounds
    profile.replace(**{knob: hi})
    history = []

    def energy(v):
        res = sample(profile, J, h, runs=runs, seed=seed, engine=engine, **{knob: v})
        e = float(res.energies.mean())
        history.append((v, e))
        return e

    target = float(target_energy)
    e_lo, e_hi = energy(lo), energy(hi)
    if not (min(e_lo, e_hi) <= target <= max(e_lo, e_hi)):
        raise ParameterError(
            "target_energy",
            target,
            f"a mean energy between {e_lo:.6g} ({knob}={lo}) and {e_hi:.6g} ({knob}={hi}); "
            "widen the bounds or pick another knob",
        )
    side = 0
    for _ in range(max_evals - 2):
        if abs(e_hi - e_lo) <= 0:
            break
        v = lo + (target - e_lo) * (hi - lo) / (e_hi - e_lo)
        if side == 2 or not (lo < v < hi):
            v = 0.5 * (lo + hi)
        e = energy(v)
        if abs(e - target) <= rtol * abs(target):
            break
        if (e - target) * (e_lo - target) > 0:
            lo, e_lo = v, e
            side = side + 1 if side > 0 else 1
        else:
            hi, e_hi = v, e
            side = side - 1 if side < 0 else -1
        side = 2 if abs(side) >= 2 else side
    best_v, best_e = min(history, key=lambda ve: abs(ve[1] - target))
    return KnobCalibration(
        knob=knob,
        value=best_v,
        mean_energy=best_e,
        target=target,
        rel_error=abs(best_e - target) / abs(target),
        history=tuple(history),
        profile=profile.replace(**{knob: best_v}),
    )


@dataclass(frozen=True)
class ProfileFit:
    """Result of :func:`fit_profile`.

    values: the fitted parameters; loss: the objective at them; groups: per (class, N) group
    ``(class, n, measured median P, emulated median P)`` at the fitted values; history:
    ``(values, loss)`` of every evaluation in order; profile: the profile with the values.
    """

    values: dict
    loss: float
    groups: tuple
    history: tuple
    profile: object


def _median_groups(measurements):
    groups: dict = {}
    for i, m in enumerate(measurements):
        groups.setdefault((getattr(m, "cls", ""), int(m.n)), []).append(i)
    return groups


def success_probabilities(profile, problems, ground_energies, *, runs: int, seed: int = 0,
                          engine: str = "auto", tol: float = 1e-6, progress=None) -> np.ndarray:
    """Per-run success probability of each problem on ``profile``: ``runs`` runs of problem
    ``i`` (an int, or one per problem) with seed ``seed + i``; a run succeeds when its final
    energy, the problem's offset included, is within ``tol`` of ``ground_energies[i]``.
    ``progress(i, p_i)`` after each."""
    from .physics import sample

    out = np.empty(len(problems))
    per = np.broadcast_to(np.asarray(runs, dtype=np.int64), (len(problems),))
    for i, (prob, e0) in enumerate(zip(problems, ground_energies)):
        h = prob.h if prob.has_fields else None
        res = sample(profile, prob.J, h, runs=int(per[i]), seed=seed + i, engine=engine)
        out[i] = float(np.mean(res.energies + prob.offset <= e0 + tol))
        if progress is not None:
            progress(i, out[i])
    return out


def fit_profile(
    profile,
    measurements,
    params: dict,
    *,
    runs: int = 200,
    seed: int = 0,
    max_evals: int = 40,
    scan: int = 5,
    step: float = 1.5,
    min_step: float = 1.05,
    engine: str = "auto",
    progress=None,
) -> ProfileFit:
    """Fit some parameters of ``profile`` to success probabilities measured on a real machine.

    The generalisation of :func:`calibrate_knob` from one knob and one mean energy to several
    parameters and many instances: ONE parameter set for all instances and sizes.

    measurements: objects with ``problem()`` (an IsingProblem; ``ground_energy`` includes its
        offset), ``ground_energy``, ``p`` (the
        measured success probability per run), ``n`` and optionally ``cls`` (a class label), as
        :func:`kpp_sdk.validation.hardware.load_measurements` returns them.
    params: ``{name: (lo, hi)}``, positive bounds of each fitted parameter (a CIMParameters or
        profile field); the search starts at the profile's current value (clipped).
    Objective: the sum over (class, N) groups of (ln median P_emulated - ln median P_measured)^2,
    with P floored at 0.5/runs (a group the emulator never solves is counted, not skipped).
    Search, with common random numbers (every evaluation runs ``runs`` runs per instance with
    the same seeds, so the objective is a smooth function of the parameters): first each
    parameter in turn over ``scan`` log-spaced values across its bounds (the others held), then
    coordinate descent in log space: each parameter is multiplied and divided by ``step`` and
    the first improving move kept; when a sweep improves nothing ``step`` is square-rooted, down
    to ``min_step`` or until ``max_evals`` evaluations were spent.
    """
    if not params:
        raise ParameterError("params", params, "at least one {name: (lo, hi)} to fit")
    bounds = {}
    for name, b in params.items():
        try:
            lo, hi = float(b[0]), float(b[1])
        except (TypeError, ValueError, IndexError):
            raise ParameterError(name, b, "bounds (lo, hi)") from None
        if not (0.0 < lo < hi and math.isfinite(hi)):
            raise ParameterError(name, b, "finite bounds 0 < lo < hi (the search is in log space)")
        bounds[name] = (lo, hi)
    ms = list(measurements)
    if not ms:
        raise ParameterError("measurements", ms, "at least one measured instance")
    if not (isinstance(runs, int) and runs >= 1):
        raise ParameterError("runs", runs, "an integer >= 1")
    cim = profile.cim
    start = {}
    for name, (lo, hi) in bounds.items():
        v = getattr(cim, name, getattr(profile, name, None))
        if v is None:
            raise ParameterError(name, None, "a CIMParameters or profile field")
        start[name] = min(hi, max(lo, float(v) if float(v) > 0 else lo))
        profile.replace(**{name: lo})  # validates the name and the bounds
        profile.replace(**{name: hi})
    problems = [m.problem() for m in ms]
    grounds = [m.ground_energy for m in ms]
    measured = np.array([float(m.p) for m in ms])
    groups = _median_groups(ms)
    floor = 0.5 / runs
    history = []
    cache = {}

    def evaluate(values):
        key = tuple(round(values[k], 12) for k in bounds)
        if key in cache:
            return cache[key]
        p = success_probabilities(profile.replace(**values), problems, grounds, runs=runs,
                                  seed=seed, engine=engine)
        loss, rows = 0.0, []
        for (cls, n), idx in sorted(groups.items()):
            hw = max(float(np.median(measured[idx])), floor)
            em = max(float(np.median(p[idx])), floor)
            loss += (math.log(em) - math.log(hw)) ** 2
            rows.append((cls, n, float(np.median(measured[idx])), float(np.median(p[idx]))))
        cache[key] = (loss, tuple(rows))
        history.append((dict(values), loss))
        if progress is not None:
            progress(dict(values), loss)
        return cache[key]

    cur = dict(start)
    cur_loss, cur_rows = evaluate(cur)
    # a coarse scan of each parameter over its bounds first (the objective is flat where the
    # emulator always or never succeeds: a local search started there would not move)
    for name, (lo, hi) in bounds.items():
        for v in np.geomspace(lo, hi, scan) if scan >= 2 else ():
            if len(history) >= max_evals:
                break
            trial = dict(cur)
            trial[name] = float(v)
            loss, rows = evaluate(trial)
            if loss < cur_loss:
                cur, cur_loss, cur_rows = trial, loss, rows
    while step > min_step and len(history) < max_evals:
        improved = False
        for name, (lo, hi) in bounds.items():
            for factor in (step, 1.0 / step):
                if len(history) >= max_evals:
                    break
                trial = dict(cur)
                trial[name] = min(hi, max(lo, cur[name] * factor))
                if trial[name] == cur[name]:
                    continue
                loss, rows = evaluate(trial)
                if loss < cur_loss:
                    cur, cur_loss, cur_rows, improved = trial, loss, rows, True
                    break
        if not improved:
            step = math.sqrt(step)
    return ProfileFit(
        values=cur,
        loss=cur_loss,
        groups=cur_rows,
        history=tuple(history),
        profile=profile.replace(**cur),
    )


_ = ising_energy  # re-exported helper used by callers of this module
