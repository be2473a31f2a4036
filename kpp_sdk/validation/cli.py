"""``kpp emulate`` and ``kpp validate``.

``kpp emulate``: solve a problem on the CIM emulator and plot the pulses as the machine works.

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
    add_validate_parser(subparsers)


VALIDATE_DESCRIPTION = """\
Check a hardware profile of the CIM emulator against measurements from a real machine.

Runs the profile on every measured instance (--runs runs each), and writes the emulated
success probability beside the measured one: a per-instance table (TSV), a per-class summary
(Markdown: per-N medians, their ratio, the decay rate alpha of P ~ exp(-alpha N), the rank
correlation over instances) and a figure (P against N on a log scale, emulator beside hardware,
and emulator P against hardware P per instance). --against takes the packaged NTT data of
Hamerly et al. 2019 (hamerly2019) or a measurement file of your own machine (docs/validation.md).

--suite families runs the fresh instance families of kpp_sdk.validation.families instead (SK,
dense MAX-CUT, G-set-like graphs, tori, fields; seeds no default was tuned on): the cloud-mode
best against sa.cpu's per instance and amplitude-control mode (Markdown table + JSON), and the
success probability against round trips (figure).

examples:
  kpp validate --profile ntt-2000 --against hamerly2019 --out validation/
  kpp validate --against hamerly2019 --classes sk --max-n 30 --per-n 3 --runs 200 --out v/
  kpp validate --profile qboson-550 --against my_runs/measurements.tsv --out v/
  kpp validate --profile qboson-550 --suite families --out v/
"""


def add_validate_parser(subparsers: argparse._SubParsersAction) -> None:
    from ..cli import HelpFormatter

    p = subparsers.add_parser(
        "validate", help="the emulator against a real machine's measurements (table + figure)",
        description=VALIDATE_DESCRIPTION, formatter_class=HelpFormatter)
    p.add_argument("--profile", default="ntt-2000",
                   help="hardware profile: qboson-550, ntt-2000 or ideal")
    p.add_argument("--suite", choices=("hardware", "families"), default="hardware",
                   help="hardware: against measurements (--against); families: fresh families "
                        "against sa.cpu")
    p.add_argument("--against", default="hamerly2019",
                   help="hamerly2019 (packaged NTT data) or a measurement .tsv file")
    p.add_argument("--out", required=True, help="folder for the table, summary and figure")
    p.add_argument("--classes", default=None,
                   help="comma-separated classes to use (default: all in the measurements)")
    p.add_argument("--max-n", type=int, default=None, help="skip instances above this size")
    p.add_argument("--families", default=None,
                   help="--suite families: comma-separated families (default: all that fit)")
    p.add_argument("--feedback", default="none,cac",
                   help="--suite families: comma-separated amplitude-control modes")
    p.add_argument("--per-n", type=int, default=None,
                   help="use the first K instances of each (class, N) (default: all)")
    p.add_argument("--runs", type=int, default=1000,
                   help="emulated runs per instance, raised to 20 shots where a shot holds "
                   "several copies (--suite families: per instance and mode)")
    p.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE",
                   help="override a profile parameter, e.g. -p sigma_add=0.1 -p xi0=0.8 "
                        "(repeatable; any CIMParameters field, docs/cim-physics.md)")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.set_defaults(func=cmd_validate)


def cmd_validate(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from ..errors import InvalidOptionError
    from ..io import atomic_write, jsonable
    from . import hardware as hw

    _check_profile(args.profile)
    if args.runs < 1:
        raise InvalidOptionError(f"--runs must be >= 1, got {args.runs}")
    for name in ("max_n", "per_n"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise InvalidOptionError(f"--{name.replace('_', '-')} must be >= 1, got {v}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InvalidOptionError(f"--out {args.out!r} is a file; give a folder")
    overrides = _profile_overrides(args)
    if args.suite == "families":
        return _validate_families(args, out)
    if args.against == "hamerly2019":
        rows = hw.hamerly2019(("sk", "cubic"))
        tag = "hamerly2019"
    else:
        path = Path(args.against)
        if not path.is_file():
            raise InvalidOptionError(f"--against {args.against!r}: not 'hamerly2019' and no such "
                                     "measurement file")
        rows = hw.load_measurements(path)
        tag = path.stem
    if args.classes:
        want = [c.strip() for c in args.classes.split(",") if c.strip()]
        known = sorted({m.cls for m in rows})
        bad = [c for c in want if c not in known]
        if bad:
            raise InvalidOptionError(f"--classes {bad} not in the measurements; known: {known}")
        rows = [m for m in rows if m.cls in want]
    rows = hw.select(rows, max_n=args.max_n, per_n=args.per_n)
    if not rows:
        raise InvalidOptionError("no measured instance is left after --classes/--max-n/--per-n")
    out.mkdir(parents=True, exist_ok=True)
    print(f"{len(rows)} instances from {tag}; profile {args.profile}, {args.runs} runs each "
          "(at least 20 shots of the ring)")
    t0, t_cpu = time.perf_counter(), time.process_time()
    if overrides:
        print("profile overrides: " + ", ".join(f"{k}={v}" for k, v in overrides.items()))
    p_emu = hw.emulate(args.profile, rows, runs=args.runs, seed=args.seed, **overrides)
    wall, cpu = time.perf_counter() - t0, time.process_time() - t_cpu
    summary = hw.compare(rows, p_emu)
    base = out / f"{args.profile}_vs_{tag}"
    hw.write_table(rows, p_emu, summary, base.with_suffix(".tsv"))
    hw.plot(rows, p_emu, summary, str(base.with_suffix(".png")),
            title=f"{args.profile} against {tag} ({args.runs} emulated runs per instance)")
    text = json.dumps(jsonable({"profile": args.profile, "overrides": overrides,
                                "against": tag, "runs": args.runs,
                                "seed": args.seed, "wall_s": wall, "cpu_s": cpu,
                                "classes": summary}), indent=1)
    atomic_write(str(base.with_suffix(".json")), lambda f: f.write(text))
    print(base.with_suffix(".md").read_text())
    print(f"emulation: wall {wall:.1f} s, CPU {cpu:.1f} s")
    for suffix in (".tsv", ".md", ".json", ".png"):
        print(f"wrote {base.with_suffix(suffix)}")
    return 0


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


def _profile_overrides(args: argparse.Namespace) -> dict:
    """``-p NAME=VALUE`` as profile overrides, checked on the profile before any work."""
    from ..cli import _parse_option
    from ..emulator import get_profile
    from ..errors import InvalidOptionError

    overrides = dict(_parse_option(o) for o in args.param)
    if overrides:
        try:
            get_profile(args.profile, **overrides)
        except ValueError as exc:
            raise InvalidOptionError(f"-p: {exc}") from None
    return overrides


def _validate_families(args: argparse.Namespace, out) -> int:
    import time

    from ..errors import InvalidOptionError
    from ..io import atomic_write, jsonable
    from . import families as fam

    names = None
    if args.families:
        names = [f.strip() for f in args.families.split(",") if f.strip()]
        bad = [f for f in names if f not in fam.FAMILIES]
        if bad:
            raise InvalidOptionError(f"--families {bad} unknown; known: {', '.join(fam.FAMILIES)}")
    modes = [m.strip() for m in args.feedback.split(",") if m.strip()]
    bad = [m for m in modes if m not in ("none", "ahc", "cac", "cfc")]
    if bad or not modes:
        raise InvalidOptionError(f"--feedback {args.feedback!r}: use none, ahc, cac, cfc")
    from ..emulator import get_profile

    prof = get_profile(args.profile, **_profile_overrides(args))
    if args.max_n is not None and (prof.max_spins is None or args.max_n < prof.max_spins):
        prof = prof.replace(max_spins=args.max_n)  # the suite keeps the sizes that fit
    pairs = fam.suite_for(prof, names)
    if not pairs:
        raise InvalidOptionError("no family size fits the profile and --max-n")
    names = sorted({f for f, _ in pairs}, key=list(fam.FAMILIES).index)
    print(f"families suite on {args.profile}: "
          f"{', '.join(f'{f} {[n for g, n in pairs if g == f]}' for f in names)}; "
          f"feedback {', '.join(modes)}; {args.runs} runs")
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    rows = fam.run_suite(prof, feedback=modes, runs=args.runs, families=names,
                         seed=fam.DEFAULT_SEED + args.seed, progress=print)
    table = fam.format_table(rows)
    base = out / f"{args.profile}_families"
    atomic_write(str(base.with_suffix(".md")), lambda f: f.write(table))
    text = json.dumps(jsonable({"profile": args.profile, "runs": args.runs, "rows": rows}),
                      indent=1)
    atomic_write(str(base.with_suffix(".json")), lambda f: f.write(text))
    best = {(r["family"], r["n"]): r["best_known"] for r in rows}
    curves = fam.success_curves(prof, runs=min(args.runs, 200), families=names,
                                best_known=best, seed=fam.DEFAULT_SEED + args.seed)
    fam.plot_success(curves, str(base) + "_success.png")
    print(table)
    print(f"wall {time.perf_counter() - t0:.1f} s")
    for path in (base.with_suffix(".md"), base.with_suffix(".json"), str(base) + "_success.png"):
        print(f"wrote {path}")
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
