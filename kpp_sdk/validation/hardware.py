"""The emulator against a real machine: measurements, emulated success probabilities, a table
and a figure (``kpp validate --against``).

Measurement format (docs/validation.md), a tab-separated file; lines starting with ``#`` are
comments, the first other line is the header:

    instance  class  n  runs  successes  ground_energy  [ground_state]  [samples]

* ``instance``: the problem, a file any kpp loader reads (.npz, .json, rudy .txt), relative to
  the measurement file, or ``bundle.npz:key`` for one weight matrix W (J = -W) in an .npz bundle.
* ``class``: a label; results are grouped by class and N.
* ``n``: spins. ``runs``: runs measured. ``successes``: runs whose energy reached
  ``ground_energy`` (the kpp convention E = -1/2 s^T J s - h^T s + offset).
* ``ground_state`` (optional): bits of a ground state, '1' = +1; checked against the energy.
* ``samples`` (optional): a SampleSet JSON file (``SampleSet.to_json``) of the raw runs; with it
  ``runs`` and ``successes`` may be empty (``-``) and are counted from the samples.

:func:`load_measurements` reads one, :func:`hamerly2019` the packaged NTT data, and
:func:`emulate` runs a hardware profile on every instance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np

from ..errors import ProblemFormatError

__all__ = [
    "Measurement",
    "alpha_fit",
    "compare",
    "emulate",
    "exponential_floor",
    "hamerly2019",
    "load_measurements",
    "median_ratio_interval",
    "plot",
    "spearman",
    "write_table",
]

COLUMNS = ("instance", "class", "n", "runs", "successes", "ground_energy")
OPTIONAL = ("ground_state", "samples")
ENERGY_TOL = 1e-6


@dataclass(frozen=True)
class Measurement:
    """One instance measured on a machine: ``successes`` of ``runs`` reached ``ground_energy``."""

    instance: str
    cls: str
    n: int
    runs: int
    successes: int
    ground_energy: float
    ground_state: str | None = None
    source: Path | None = field(default=None, repr=False, compare=False)

    @property
    def p(self) -> float:
        """Measured success probability per run."""
        return self.successes / self.runs

    def problem(self):
        """The instance as an :class:`~kpp_sdk.IsingProblem`."""
        from ..io import load_problem
        from ..problem import IsingProblem

        base = self.source.parent if self.source is not None else Path(".")
        name, _, key = self.instance.partition(":")
        path = base / name
        if key:
            bundle = _bundle(str(path.resolve()) if path.exists() else str(path))
            if key not in bundle:
                raise ProblemFormatError(f"{self.instance}: the bundle has no key {key!r}")
            return IsingProblem(-bundle[key].astype(np.float64))
        return load_problem(path)


@lru_cache(maxsize=4)
def _bundle(path: str) -> dict:
    if not Path(path).is_file():
        raise ProblemFormatError(f"no instance bundle {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise ProblemFormatError(f"{path}: not a readable .npz bundle ({exc})") from None


def _bad(where: str, what: str) -> ProblemFormatError:
    return ProblemFormatError(f"{where}: {what} (see docs/validation.md, 'Measurement format')")


def _count_samples(path: Path, problem, e0: float, where: str) -> tuple[int, int]:
    from ..sampleset import SampleSet

    if not path.is_file():
        raise _bad(where, f"no samples file {path}")
    ss = SampleSet.from_json(path.read_text(), problem)
    occ = np.asarray(ss.num_occurrences, dtype=np.int64)
    hit = np.asarray(ss.energies) <= e0 + ENERGY_TOL
    return int(occ.sum()), int(occ[hit].sum())


def load_measurements(path, *, check_ground_states: bool = True) -> list[Measurement]:
    """Read a measurement file (module doc). Raises :class:`ProblemFormatError` naming the line
    and the problem for a missing column, a bad number, successes > runs, or a ground state
    whose energy is not ``ground_energy``."""
    path = Path(path)
    if not path.is_file():
        raise ProblemFormatError(f"{path}: no such measurement file")
    lines = [(i + 1, ln.rstrip("\n")) for i, ln in enumerate(path.read_text().splitlines())]
    lines = [(i, ln) for i, ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        raise _bad(str(path), "no header line")
    header = lines[0][1].split("\t")
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise _bad(f"{path.name} line {lines[0][0]}",
                   f"missing column(s) {missing}; the header needs {list(COLUMNS)} (tab-separated)")
    col = {c: header.index(c) for c in header}
    out = []
    for lineno, ln in lines[1:]:
        where = f"{path.name} line {lineno}"
        cells = ln.split("\t")
        if len(cells) != len(header):
            raise _bad(where, f"{len(cells)} fields, the header has {len(header)}")
        get = {c: cells[i].strip() for c, i in col.items()}
        try:
            n = int(get["n"])
            e0 = float(get["ground_energy"])
        except ValueError:
            raise _bad(where, f"n={get['n']!r} and ground_energy={get['ground_energy']!r} "
                              "must be numbers") from None
        if n < 1 or not math.isfinite(e0):
            raise _bad(where, f"n must be >= 1 and ground_energy finite, got {n}, {e0}")
        gs = get.get("ground_state") or None
        m = Measurement(get["instance"], get["class"], n, 0, 0, e0, gs, path)
        samples = get.get("samples") or ""
        if samples and samples != "-":
            runs, succ = _count_samples(path.parent / samples, m.problem(), e0, where)
        else:
            try:
                runs, succ = int(get["runs"]), int(get["successes"])
            except ValueError:
                raise _bad(where, f"runs={get['runs']!r}, successes={get['successes']!r} must be "
                                  "integers (or give a samples file)") from None
        if runs < 1 or not 0 <= succ <= runs:
            raise _bad(where, f"need runs >= 1 and 0 <= successes <= runs, got {runs}, {succ}")
        m = replace(m, runs=runs, successes=succ)
        if gs is not None and check_ground_states:
            if len(gs) != n or set(gs) - {"0", "1"}:
                raise _bad(where, f"ground_state must be {n} characters 0/1")
            prob = m.problem()
            if prob.num_spins != n:
                raise _bad(where, f"the instance has {prob.num_spins} spins, n says {n}")
            s = np.array([1 if b == "1" else -1 for b in gs], dtype=np.int8)
            e = float(prob.energy(s))
            if abs(e - e0) > ENERGY_TOL * max(1.0, abs(e0)):
                raise _bad(where, f"the ground state has energy {e:g}, not ground_energy {e0:g} "
                                  "(kpp convention: E = -1/2 s^T J s - h^T s)")
        out.append(m)
    if not out:
        raise _bad(path.name, "no measurement rows")
    return out


def hamerly2019(classes=("sk", "cubic"), *, check_ground_states: bool = False) -> list[Measurement]:
    """The packaged NTT measurements of Hamerly et al. 2019 (SOURCE.txt beside the data)."""
    root = Path(str(resources.files("kpp_sdk") / "data" / "hardware" / "hamerly2019"))
    rows = load_measurements(root / "measurements.tsv", check_ground_states=check_ground_states)
    known = sorted({m.cls for m in rows})
    bad = [c for c in classes if c not in known]
    if bad:
        raise ProblemFormatError(f"hamerly2019 has no class {bad}; known: {known}")
    return [m for m in rows if m.cls in classes]


def select(rows, *, ns=None, per_n: int | None = None, max_n: int | None = None):
    """A subset: only sizes ``ns``, at most ``max_n`` spins, the first ``per_n`` per (class, N)."""
    out, seen = [], {}
    for m in rows:
        if ns is not None and m.n not in ns:
            continue
        if max_n is not None and m.n > max_n:
            continue
        key = (m.cls, m.n)
        seen[key] = seen.get(key, 0) + 1
        if per_n is not None and seen[key] > per_n:
            continue
        out.append(m)
    return out


def emulate(profile, rows, *, runs: int = 1000, seed: int = 0, min_shots: int = 20,
            progress=None, **overrides):
    """Emulated success probability of every measured instance: ``runs`` runs of ``profile``
    (a name or :class:`~kpp_sdk.emulator.HardwareProfile`, with ``overrides``), seed
    ``seed + row index``, and at least ``min_shots`` shots of the ring per instance (a profile
    with ``parallel_copies`` runs floor(2000/N) copies per shot, and its shot loss takes whole
    shots: 400 runs of a 10-spin problem are 2 shots, too few to estimate P). Returns an array
    of P, in the order of ``rows``."""
    from kpp_sdk.emulator import get_profile
    from kpp_sdk.emulator.calibration import success_probabilities
    from kpp_sdk.emulator.timing import copies_per_shot

    rows = list(rows)
    prof = get_profile(profile, **overrides)
    problems = [m.problem() for m in rows]
    per = [max(int(runs), int(min_shots) * copies_per_shot(prof, p.n, p.has_fields))
           for p in problems]
    return success_probabilities(
        prof, problems, [m.ground_energy for m in rows], runs=per, seed=seed, tol=ENERGY_TOL,
        progress=None if progress is None else (lambda i, p: progress(i, rows[i], p)))


def _ranks(x) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    order = np.argsort(x, kind="mergesort")
    r = np.empty(len(x))
    r[order] = np.arange(len(x), dtype=float)
    for v in np.unique(x):  # average ranks over ties
        idx = x == v
        r[idx] = r[idx].mean()
    return r


def spearman(a, b) -> float:
    """Spearman rank correlation (ties get average ranks); nan for fewer than 3 points."""
    if len(a) < 3:
        return float("nan")
    ra, rb = _ranks(a), _ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def alpha_fit(ns, ps) -> float:
    """Decay rate alpha of P ~ exp(-alpha N): least squares of ln P on N (P > 0 only)."""
    ns, ps = np.asarray(ns, float), np.asarray(ps, float)
    ok = ps > 0
    if ok.sum() < 2:
        return float("nan")
    return float(-np.polyfit(ns[ok], np.log(ps[ok]), 1)[0])


def exponential_floor(ns, ps) -> float:
    """The smallest factor within which one curve P = A exp(-alpha N) comes to every point
    (``ns``, ``ps``): min over A and alpha of max_N max(P/curve, curve/P) (P > 0 only; 1 for
    points on an exponential; nan for fewer than 2 points).

    A property of the data alone: per-N medians of a handful of instances scatter around any
    smooth size dependence, and no model whose success probability falls smoothly with N comes
    closer to all of them than this floor.
    """
    ns, ps = np.asarray(ns, float), np.asarray(ps, float)
    ok = ps > 0
    if ok.sum() < 2:
        return float("nan")
    ns, y = ns[ok], np.log(ps[ok])
    # For a fixed alpha the best A centres the residuals y + alpha N, leaving half their range.
    # That half-range is convex and piecewise linear in alpha, with its minimum where two lines
    # y_i + alpha N_i cross: evaluate it at every crossing.
    i, j = np.triu_indices(len(ns), 1)
    dn = ns[j] - ns[i]
    cand = np.concatenate([[0.0], (y[i] - y[j])[dn != 0] / dn[dn != 0]])
    r = y[None, :] + cand[:, None] * ns[None, :]
    return float(np.exp(np.min(r.max(axis=1) - r.min(axis=1)) / 2))


def median_ratio_interval(p_hardware, p_emulator, *, level: float = 0.9,
                          resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """A bootstrap interval of median(emulator P) / median(hardware P) over the same instances.

    The instances are resampled with replacement, the same draw for both (the pairs are the
    same problems), ``resamples`` times; returns the central ``level`` interval of the ratio
    (order statistics of the resampled ratios, no interpolation). With ten instances per N it
    shows how far the per-N ratio can move from the choice of instances alone. A resample
    whose hardware median is 0 has the ratio inf (1 when the emulator's is 0 too), so an
    end of the interval can be inf. Deterministic for a ``seed``.
    """
    hw = np.asarray(p_hardware, float)
    em = np.asarray(p_emulator, float)
    if hw.shape != em.shape or hw.ndim != 1 or len(hw) == 0:
        raise ValueError("p_hardware and p_emulator must be 1-D arrays of the same length >= 1")
    if not 0 < level < 1:
        raise ValueError(f"level={level!r}: need 0 < level < 1")
    idx = np.random.default_rng(seed).integers(0, len(hw), size=(int(resamples), len(hw)))
    mh, me = np.median(hw[idx], axis=1), np.median(em[idx], axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(mh > 0, me / mh, np.where(me > 0, np.inf, 1.0))
    lo = np.quantile(ratio, (1 - level) / 2, method="lower")
    hi = np.quantile(ratio, (1 + level) / 2, method="higher")
    return float(lo), float(hi)


def compare(rows, p_emu) -> dict:
    """Per class: the per-N medians of hardware and emulator P, their ratio with a 90% bootstrap
    interval over the instances (:func:`median_ratio_interval`), the decay rates, the
    per-instance rank correlation, and the hardware medians' :func:`exponential_floor`."""
    p_emu = np.asarray(p_emu, float)
    out = {}
    for cls in sorted({m.cls for m in rows}):
        idx = [i for i, m in enumerate(rows) if m.cls == cls]
        ns = sorted({rows[i].n for i in idx})
        per_n = []
        for n in ns:
            ii = [i for i in idx if rows[i].n == n]
            hw_n = [rows[i].p for i in ii]
            hw = float(np.median(hw_n))
            em = float(np.median(p_emu[ii]))
            per_n.append({"n": n, "instances": len(ii), "hardware": hw, "emulator": em,
                          "ratio": em / hw if hw > 0 else float("inf"),
                          "ratio_interval": median_ratio_interval(hw_n, p_emu[ii])})
        hw_all = [rows[i].p for i in idx]
        out[cls] = {
            "per_n": per_n,
            "alpha_hardware": alpha_fit([r["n"] for r in per_n], [r["hardware"] for r in per_n]),
            "alpha_emulator": alpha_fit([r["n"] for r in per_n], [r["emulator"] for r in per_n]),
            "spearman": spearman(hw_all, p_emu[idx]),
            "max_ratio": max(max(r["ratio"], 1 / r["ratio"]) if r["ratio"] > 0 else float("inf")
                             for r in per_n),
            "exponential_floor": exponential_floor([r["n"] for r in per_n],
                                                   [r["hardware"] for r in per_n]),
        }
    return out


def write_table(rows, p_emu, summary: dict, path) -> None:
    """A TSV of every instance (hardware and emulator P) and a Markdown summary beside it."""
    path = Path(path)
    with open(path, "w") as f:
        f.write("instance\tclass\tn\thardware_runs\thardware_p\temulator_p\n")
        for m, pe in zip(rows, p_emu):
            f.write(f"{m.instance}\t{m.cls}\t{m.n}\t{m.runs}\t{m.p:.6g}\t{pe:.6g}\n")
    lines = []
    for cls, s in summary.items():
        lines += [f"## {cls}", "",
                  ("| N | instances | median P hardware | median P emulator | ratio "
                   "| ratio, 90% interval over instances |"),
                  "|---|---|---|---|---|---|"]
        for r in s["per_n"]:
            lo, hi = r["ratio_interval"]
            lines.append(f"| {r['n']} | {r['instances']} | {r['hardware']:.4g} | "
                         f"{r['emulator']:.4g} | {r['ratio']:.3g} | {lo:.3g}-{hi:.3g} |")
        lines += ["", f"alpha (P ~ exp(-alpha N), fit to the medians): hardware "
                      f"{s['alpha_hardware']:.4f}, emulator {s['alpha_emulator']:.4f}; "
                      f"largest median ratio {s['max_ratio']:.3g} (the best curve A exp(-alpha N) "
                      f"misses a hardware median by {s['exponential_floor']:.3g}); "
                      f"Spearman rank correlation over instances {s['spearman']:.3f}", ""]
    path.with_suffix(".md").write_text("\n".join(lines))


def plot(rows, p_emu, summary: dict, path, *, title: str = "") -> None:
    """P against N per class on a log scale (medians and instances, emulator beside hardware),
    and emulator P against hardware P per instance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p_emu = np.asarray(p_emu, float)
    classes = list(summary)
    fig, axes = plt.subplots(1, len(classes) + 1, figsize=(5.2 * (len(classes) + 1), 4.4))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    floor = 0.5 / max(m.runs for m in rows)
    for ax, cls in zip(axes, classes):
        idx = [i for i, m in enumerate(rows) if m.cls == cls]
        n = np.array([rows[i].n for i in idx], float)
        hw = np.array([rows[i].p for i in idx])
        em = p_emu[idx]
        ax.scatter(n - 1.5, np.maximum(hw, floor), s=9, alpha=0.35, color=colors[0])
        ax.scatter(n + 1.5, np.maximum(em, floor), s=9, alpha=0.35, color=colors[1])
        pn = summary[cls]["per_n"]
        ax.plot([r["n"] for r in pn], [max(r["hardware"], floor) for r in pn], "o-",
                color=colors[0], label=f"hardware (alpha {summary[cls]['alpha_hardware']:.4f})")
        ax.plot([r["n"] for r in pn], [max(r["emulator"], floor) for r in pn], "s--",
                color=colors[1], label=f"emulator (alpha {summary[cls]['alpha_emulator']:.4f})")
        ax.set_yscale("log")
        ax.set_xlabel("N (spins)")
        ax.set_ylabel("success probability per run")
        ax.set_title(f"{cls}: medians (lines) and instances (dots)")
        ax.legend(fontsize=8)
    ax = axes[-1]
    for k, cls in enumerate(classes):
        idx = [i for i, m in enumerate(rows) if m.cls == cls]
        ax.scatter(np.maximum([rows[i].p for i in idx], floor), np.maximum(p_emu[idx], floor),
                   s=10, alpha=0.6, color=colors[k % len(colors)],
                   label=f"{cls} (Spearman {summary[cls]['spearman']:.2f})")
    lo = floor
    ax.plot([lo, 1], [lo, 1], "k:", lw=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("hardware P")
    ax.set_ylabel("emulator P")
    ax.set_title("per instance")
    ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
