"""The ``kpp`` command.

    kpp devices                                   registered devices and their limits
    kpp devices --options sa.cpu                  one device's options (default, range, doc)
    kpp sample FILE --device sa.cpu --num-reads 100 --seed 0 [--out result.json] [-o key=value]
    kpp --version

Errors the user can fix (a malformed file, an unknown device or option, a job beyond the limits)
print one line to stderr and exit with status 2; no traceback. Ctrl-C anywhere cancels the jobs
this process is running (locally, or on the server for ``cim.cloud``), waits up to
:data:`CANCEL_WAIT_S` seconds for them to stop, and exits with status 130.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Sequence

from . import __version__
from .errors import InvalidOptionError, KppError

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
#: On Ctrl-C, seconds the running jobs get to stop before the process exits without them.
CANCEL_WAIT_S = 2.0

#: Modules that add sub-commands: each has ``add_parser(subparsers)`` and imports nothing heavy
#: (torch, fastapi) at module level, so ``kpp --version`` stays fast.
PLUGIN_COMMANDS = (
    "kpp_sdk.cloud.cli",        # kpp serve
    "kpp_sdk.models.cli",       # kpp train
    "kpp_sdk.validation.cli",   # kpp emulate
    "kpp_sdk.bench.cli",        # kpp bench
)


class HelpFormatter(argparse.HelpFormatter):
    """The help layout of every ``kpp`` command. A description's paragraphs are wrapped to the
    terminal, except those with indented lines (examples, tables), which keep their layout. An
    option's default is shown once, as "(default: X)", unless its help states it already or
    there is none worth showing (None, False, an empty list)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        import textwrap

        out = []
        for para in text.strip("\n").split("\n\n"):
            lines = para.splitlines()
            if any(line.startswith(" ") for line in lines):
                out.append("\n".join(indent + line for line in lines))
            else:
                out.append(textwrap.fill(" ".join(para.split()), width, initial_indent=indent,
                                         subsequent_indent=indent))
        return "\n\n".join(out)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if ("default" in text or not action.option_strings or default is None
                or default is False or default == [] or default is argparse.SUPPRESS):
            return text
        return f"{text} (default: %(default)s)"


def _add_plugin_commands(sub: argparse._SubParsersAction) -> None:
    import importlib

    for name in PLUGIN_COMMANDS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and name.startswith(exc.name):
                continue  # that part of the SDK is not in this build
            raise
        module.add_parser(sub)


def _parse_option(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise InvalidOptionError(f"--option expects key=value, got {text!r}")
    key, raw = text.split("=", 1)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw  # a bare word such as gibbs
    return key.strip().replace("-", "_"), value


def _fmt_limit(v: Any) -> str:
    if v is None:
        return "float64"
    return f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v)


def cmd_devices(args: argparse.Namespace) -> int:
    from .registry import device_class, list_devices

    if args.options:
        cls = device_class(args.options)
        print(f"{cls.name}: options of submit()/sample() (default in brackets)\n")
        print(cls.OPTIONS.describe())
        return 0

    rows = list_devices()
    header = ("name", "status", "max spins", "coef bits", "fields", "remote")
    table = []
    for r in rows:
        if r.available:
            p = r.properties
            table.append((r.name, "available", _fmt_limit(p.max_spins), _fmt_limit(p.coefficient_bits),
                          "yes" if p.supports_fields else "no", "yes" if p.is_remote else "no"))
        else:
            table.append((r.name, "unavailable", "-", "-", "-", "-"))
    widths = [max(len(str(x)) for x in col) for col in zip(header, *table)]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    print(line.format(*header))
    print(line.format(*("-" * w for w in widths)))
    for row in table:
        print(line.format(*row))
    for r in rows:
        if not r.available:
            print(f"\n{r.name}: {r.reason}")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from .io import atomic_write
    from .problem import IsingProblem
    from .registry import get_device

    options = dict(_parse_option(o) for o in args.option)
    problem = IsingProblem.load(args.file)
    # the options become the device's defaults: some fix its properties (cim.emulator's
    # profile sets its spin limit), so they must be known before the size check
    device = get_device(args.device, **options)
    ss = device.sample(problem, num_reads=args.num_reads, seed=args.seed)
    best = ss.top_k(args.top)
    print(f"{args.file}: n={problem.n}  device={device.name}  reads={ss.num_reads}  "
          f"seed={ss.info['seed']}")
    print(f"timing: wall {ss.timing['wall_s']:.3f} s, queue {ss.timing['queue_s']:.3f} s, "
          f"device {ss.timing['device_s']:.3f} s")
    print(f"{'rank':>4}  {'energy':>16}  {'occurrences':>11}")
    for k, (e, c) in enumerate(zip(best.energies, best.num_occurrences), 1):
        print(f"{k:>4}  {e:>16.6f}  {c:>11d}")
    if args.out:
        text = json.dumps(ss.to_dict())
        atomic_write(args.out, lambda f: f.write(text))
        print(f"wrote {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kpp", formatter_class=HelpFormatter,
        description="kpp-sdk: Ising machines (QBoson's coherent Ising machine, its emulator and "
                    "simulated annealing) from Python and PyTorch.",
        epilog="Run 'kpp COMMAND --help' for a command's options. Errors you can fix print one "
               "line and exit with status 2.")
    parser.add_argument("--version", action="version", version=f"kpp-sdk {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("devices", help="list registered devices and their limits",
                       formatter_class=HelpFormatter,
                       description="List the registered devices and their limits, or with "
                                   "--options NAME one device's options.")
    p.add_argument("--options", metavar="NAME", default=None,
                   help="print the options of device NAME (name, default, allowed values, doc)")
    p.set_defaults(func=cmd_devices)

    p = sub.add_parser("sample", help="sample a problem file on a device",
                       formatter_class=HelpFormatter,
                       description="Sample an Ising problem file on a device and print the "
                                   "lowest energies found.\n\nexample:\n  kpp sample "
                                   "problem.json --device sa.cpu --num-reads 100 --seed 0 "
                                   "--out result.json")
    p.add_argument("file", help="problem file: .npz, .json or a rudy/Gset edge list (.txt)")
    p.add_argument("--device", default="sa.cpu", help="device name (see: kpp devices)")
    p.add_argument("--num-reads", type=int, default=None,
                   help="number of reads (samples; default: the device's)")
    p.add_argument("--seed", type=int, default=None,
                   help="random seed (the same seed gives the same samples)")
    p.add_argument("--top", type=int, default=5, help="how many best distinct energies to print")
    p.add_argument("--out", default=None, help="write the full result as JSON here")
    p.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE",
                   help="device option, e.g. -o num_sweeps=2000 -o acceptance=gibbs (repeatable; "
                        "see: kpp devices --options NAME)")
    p.set_defaults(func=cmd_sample)

    _add_plugin_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return _interrupted()
    except (KppError, OSError, ValueError) as exc:
        print(f"kpp: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except MemoryError:
        print("kpp: error: out of memory; use a smaller problem, fewer reads, or lower the job "
              "limits (KPP_MAX_JOB_MEMORY) so that such jobs are refused up front",
              file=sys.stderr)
        return EXIT_USAGE


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _interrupted() -> int:
    """Ctrl-C: cancel this process's jobs, wait a little, exit 130 (see the module docstring).
    Worker threads of a job that does not stop in time would keep the interpreter alive, so the
    process then ends with ``os._exit``."""
    from .job import cancel_active_jobs

    left = 0
    try:
        cancelled, left = cancel_active_jobs(timeout=CANCEL_WAIT_S)
        note = f"; cancelled {cancelled} running job(s)" if cancelled else ""
        if left:
            note += f", {left} did not stop within {CANCEL_WAIT_S:g} s"
        print(f"kpp: interrupted{note}", file=sys.stderr)
    except KeyboardInterrupt:  # a second Ctrl-C: stop waiting
        left = 1
    if left:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_INTERRUPTED)
    return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
