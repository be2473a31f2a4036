"""``kpp bench``: every registered device against the peers from PyPI, on the same instances.

    kpp bench --suite quick --out bench-results          # < 5 minutes on 2 cores
    kpp bench --suite full --out bench-full              # every instance, longer ladders
    kpp bench --suite quick --solvers sa.cpu,"openjij SA" --out one-pair

Writes ``results.md`` (one table of solvers with the threads each uses, one table per instance:
best and mean energy, success probability per read, time to target in wall and in CPU seconds,
the ratios of both to ``sa.cpu``'s, throughput, energy at a fixed time), ``energy_vs_time.png``
(gap to the target versus wall time) and ``results.json`` (every read's energy, every rung's wall
and CPU seconds) into ``--out``. Devices that are
not available and peers that are not installed keep their row, with the reason. The suite logic
lives in :mod:`kpp_sdk.bench.suite`.

This module imports nothing heavy at import time.
"""

from __future__ import annotations

import argparse
import sys

SUITE_CHOICES = ("quick", "full", "smoke")


DESCRIPTION = """\
Benchmark every registered device against the peer solvers from PyPI, on the same instances.

examples:
  kpp bench --suite quick --out bench-results       # < 5 minutes on 2 cores
  kpp bench --suite full --out bench-full           # every instance, longer ladders
  kpp bench --suite quick --solvers sa.cpu,"openjij SA" --out one-pair

Writes results.md (a table of solvers, a table per instance: best and mean energy, success
probability per read, time to target, throughput, energy at a fixed time), energy_vs_time.png
and results.json (every read's energy) into --out. Devices that are not available and peers
that are not installed keep their row, with the reason.
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from ..cli import HelpFormatter

    p = subparsers.add_parser(
        "bench", help="benchmark every device against the peer solvers; writes a table and a plot",
        description=DESCRIPTION, formatter_class=HelpFormatter)
    p.add_argument("--suite", choices=SUITE_CHOICES, default="quick",
                   help="quick (< 5 min on 2 cores), full, or smoke (one tiny instance: a "
                        "self-check of the set-up)")
    p.add_argument("--out", default="bench-results", help="output folder (created if missing)")
    p.add_argument("--seed", type=int, default=0, help="seed of every run (per rung derived)")
    p.add_argument("--threads", type=int, default=None,
                   help="threads for solvers that take a thread count (default: the cores this "
                        "process may use)")
    p.add_argument("--solvers", default=None,
                   help="comma-separated solver names to run (default: all; see the table)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..errors import InvalidOptionError
    from . import suite as bm

    if args.threads is not None and args.threads < 1:
        raise InvalidOptionError(f"--threads must be >= 1, got {args.threads}")
    if args.seed < 0:
        raise InvalidOptionError(f"--seed must be non-negative, got {args.seed}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InvalidOptionError(f"--out {args.out!r} is a file; give a folder")
    only = [s.strip() for s in args.solvers.split(",") if s.strip()] if args.solvers else None
    if only is not None:
        bm.available_solvers(threads=1, only=only)  # unknown names fail before any work
    out.mkdir(parents=True, exist_ok=True)

    def log(line: str) -> None:
        if not args.quiet:
            print(line, file=sys.stderr, flush=True)

    report = bm.run_suite(args.suite, seed=args.seed, threads=args.threads, solvers=only, log=log)
    text = bm.write_markdown(report, out / "results.md")
    bm.write_json(report, out / "results.json")
    bm.write_plot(report, out / "energy_vs_time.png")
    print(text)
    print(f"wrote {out / 'results.md'}, {out / 'results.json'}, {out / 'energy_vs_time.png'} "
          f"in {report['seconds']:.0f} s")
    return 0
