"""``kpp emulate``: solve a problem on the CIM emulator and plot the pulses as the machine works.

    kpp emulate kpp_sdk/data/cim_instances/MC50/MC50_N=50_1.npz --profile qboson-550 --plot amplitudes.png
    kpp emulate problem.txt --runs 2000 --top 10 --feedback cac --out result.json

Runs one task (``--runs`` runs, the cloud's 2,000 by default) with the cloud's post-processing
(de-duplicate, Top-K by energy), prints the best energies, the emulated device time and the wall
time, and with ``--plot`` draws the in-phase amplitude of every pulse over the round trips of one
run beside the pump schedule (matplotlib; the amplitudes bifurcate to +-A and the signs are the
spins). The figure comes from a separate recorded run with the same settings: the task itself never
stores trajectories.

This module imports nothing heavy at import time.
"""

from __future__ import annotations

import argparse
import json


DESCRIPTION = """\
Solve a problem on the CIM emulator and plot the pulses as the machine works.

Runs one task (--runs runs, the cloud's 2,000 by default) with the cloud's post-processing
(de-duplicate, Top-K by energy), prints the best energies, the emulated device time and the wall
time, and with --plot draws the in-phase amplitude of every pulse over the round trips of one
run beside the pump schedule (the amplitudes bifurcate to +-A; their signs are the spins).

examples:
  kpp emulate kpp_sdk/data/cim_instances/MC50/MC50_N=50_1.npz --plot amplitudes.png
  kpp emulate kpp_sdk/data/cim_instances/SK/SK1_N=100_1.npz --top 10 --feedback cac --out r.json
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from ..cli import HelpFormatter

    p = subparsers.add_parser(
        "emulate", help="solve a problem on the CIM emulator and plot the pulse amplitudes",
        description=DESCRIPTION, formatter_class=HelpFormatter)
    p.add_argument("file", help="problem file: .npz, .json or a rudy/Gset edge list (.txt)")
    p.add_argument("--profile", default="qboson-550",
                   help="hardware profile: qboson-550, ntt-2000 or ideal")
    p.add_argument("--runs", type=int, default=None, help="runs per task (default: the profile's)")
    p.add_argument("--round-trips", type=int, default=None,
                   help="round trips per run (default: the profile's)")
    p.add_argument("--feedback", choices=("none", "ahc", "cac", "cfc"), default=None,
                   help="amplitude control (default: the profile's)")
    p.add_argument("--temperature", type=float, default=0.0, help="temperature knob in [0, 1]")
    p.add_argument("--top", type=int, default=5, help="distinct lowest energies to print")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--plot", default=None, metavar="PNG",
                   help="write the amplitudes of one run over the round trips here")
    p.add_argument("--out", default=None, help="write the Top-K result as JSON here")
    p.set_defaults(func=cmd_emulate)


def _check_out(path: str | None, suffixes: tuple[str, ...], what: str) -> None:
    from pathlib import Path

    from ..errors import InvalidOptionError

    if path is None:
        return
    p = Path(path)
    if p.suffix.lower() not in suffixes:
        raise InvalidOptionError(f"{what} {path!r} must end in {' or '.join(suffixes)}")
    if p.parent != Path("") and not p.parent.is_dir():
        raise InvalidOptionError(f"{what} {path!r}: folder {str(p.parent)!r} does not exist; "
                                 "create it first")


def _check_profile(name: str) -> None:
    """An unknown --profile is named, with the closest known one and the list, in the
    command line's spelling."""
    import difflib

    from ..emulator import list_profiles
    from ..errors import InvalidOptionError

    known = list_profiles()
    if name.strip().lower() in known:
        return
    close = difflib.get_close_matches(name.strip().lower(), known, n=1, cutoff=0.6)
    hint = f"did you mean --profile {close[0]}? " if close else ""
    raise InvalidOptionError(f"unknown --profile {name!r}; {hint}known profiles: "
                             f"{', '.join(known)}")


def cmd_emulate(args: argparse.Namespace) -> int:
    from ..io import atomic_write
    from ..problem import IsingProblem
    from ..registry import get_device

    _check_out(args.plot, (".png", ".pdf", ".svg"), "--plot")
    _check_out(args.out, (".json",), "--out")
    if args.top < 1:
        from ..errors import InvalidOptionError
        raise InvalidOptionError(f"--top must be >= 1, got {args.top}")
    _check_profile(args.profile)
    problem = IsingProblem.load(args.file)
    device = get_device("cim.emulator", profile=args.profile)
    opts = dict(output="topk", runs=args.runs, round_trips=args.round_trips,
                feedback=args.feedback, temperature=args.temperature)
    runs = args.runs or device.profile.default_runs
    job = device.submit(problem, num_reads=min(args.top, runs), seed=args.seed, **opts)
    ss = job.result()
    print(f"{args.file}: n={problem.n}  profile={device.profile.name}  runs={ss.info['runs']}  "
          f"round trips={ss.info['round_trips']}  feedback={ss.info['feedback']}  seed={args.seed}")
    wall, dev = ss.timing["wall_s"], ss.timing["device_s"]
    print(f"device time {dev:.3f} s (the machine), wall time {wall:.3f} s (this computer), "
          f"real-time factor {dev / wall:.2f}")
    print(f"{'rank':>4}  {'energy':>16}  {'occurrences':>11}")
    for k, (e, c) in enumerate(zip(ss.energies, ss.num_occurrences), 1):
        print(f"{k:>4}  {e:>16.6f}  {c:>11d}")
    if args.out:
        text = json.dumps(ss.to_dict())
        atomic_write(args.out, lambda f: f.write(text))
        print(f"wrote {args.out}")
    if args.plot:
        opts.pop("output"), opts.pop("runs")
        trace = device.trace(problem, runs=1, seed=args.seed, **opts)
        plot_amplitudes(trace, problem, args.plot, title=f"{args.file} on {device.profile.name}")
        print(f"wrote {args.plot}")
    return 0


def plot_amplitudes(trace, problem, path: str, title: str = "") -> None:
    """Amplitudes of every pulse of the first recorded run over the round trips, and the pump."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from ..io import atomic_write

    k = np.asarray(trace.trajectory_round_trips)
    x = np.asarray(trace.trajectories)[:, 0, : problem.n]
    spins = np.asarray(trace.spins[0])
    energy = float(problem.energy(spins))
    fig, (ax, axp) = plt.subplots(2, 1, figsize=(8, 6), sharex=True,
                                  gridspec_kw={"height_ratios": [3, 1]})
    step = max(1, problem.n // 200)  # at most ~200 lines
    ax.plot(k, x[:, ::step], lw=0.6, alpha=0.7)
    ax.axhline(0.0, color="k", lw=0.5)
    ax.set_ylabel("in-phase amplitude x")
    ax.set_title(f"{title}\nfinal energy {energy:.4f} (one run)", fontsize=9)
    axp.plot(k, trace.params.pump(k), color="tab:red")
    axp.axhline(1.0, color="k", lw=0.5, ls="--")
    axp.set_ylabel("pump p / p_th")
    axp.set_xlabel("round trip")
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format=path.rsplit(".", 1)[-1], dpi=120),
                 binary=True)
    plt.close(fig)
