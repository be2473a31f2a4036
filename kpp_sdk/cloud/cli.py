"""``kpp serve``: the command-line front of :mod:`kpp_sdk.cloud.server`.

Imports nothing heavy at module level (FastAPI and uvicorn load when the command runs).
"""

from __future__ import annotations

import argparse
import json
import sys

from ..errors import ConfigError, MissingDependencyError

DEFAULT_MAX_REQUEST_BYTES = 64 * 2**20


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve", help="serve devices over HTTP for the cim.cloud device",
        description="Serve registered devices over the kpp wire format (docs/cloud.md). Every "
                    "request carries one of the accepted tokens (a secret per client: who may "
                    "submit jobs, at what rate), from --tokens-file and/or the "
                    "KPP_SERVER_TOKENS environment variable; --no-auth serves without tokens, "
                    "on a loopback --host only.")
    p.add_argument("--device", action="append", dest="devices", metavar="NAME",
                   help="a device to serve (repeatable; the first is the default) [sa.cpu]")
    p.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE",
                   help="default option of the served devices, e.g. -o num_sweeps=2000")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on [127.0.0.1]")
    p.add_argument("--port", type=int, default=8000, help="port [8000]")
    p.add_argument("--tokens-file", metavar="FILE",
                   help="accepted tokens, one 'name token [role=admin] [rate=R] [burst=B]' a line")
    p.add_argument("--no-auth", action="store_true",
                   help="accept requests without a token (only with a loopback --host)")
    p.add_argument("--store", default="kpp-jobs.sqlite3", metavar="PATH",
                   help="SQLite job store; jobs survive restarts [kpp-jobs.sqlite3]")
    p.add_argument("--workers", type=int, default=1, help="jobs run at once [1]")
    p.add_argument("--max-request-bytes", type=int, default=DEFAULT_MAX_REQUEST_BYTES,
                   metavar="N", help="larger request bodies get HTTP 413 [64 MiB]")
    p.add_argument("--rate-limit", type=float, default=50.0, metavar="R",
                   help="requests per second per token, 0 for none [50]")
    p.add_argument("--burst", type=float, default=None, metavar="B",
                   help="requests a token may make at once [2 x rate]")
    p.add_argument("--max-attempts", type=int, default=3, metavar="K",
                   help="a job the server died during K times is failed, not re-run [3]")
    p.add_argument("--paused", action="store_true",
                   help="start with the workers paused (resume: POST /v1/admin/workers/resume)")
    p.add_argument("--shutdown-grace", type=float, default=10.0, metavar="S",
                   help="on SIGTERM, seconds running jobs get before they are cancelled and "
                        "re-queued [10]")
    p.add_argument("--max-job-seconds", default="600", metavar="S",
                   help="refuse jobs whose estimated compute exceeds S seconds of one core; "
                        "'none' for no limit [600]")
    p.add_argument("--max-job-memory", default="128MiB", metavar="BYTES",
                   help="refuse jobs whose estimated memory (decoded problem, working arrays, "
                        "encoded result) exceeds BYTES, e.g. 2GiB; 'none' for no limit [128MiB]")
    p.add_argument("--retention", default="7d", metavar="AGE",
                   help="delete the request and result of a finished job this long after it "
                        "finished (its result then answers 410), e.g. 12h, 30d; 'none' to keep "
                        "them [7d]")
    p.add_argument("--max-store-bytes", default="1GiB", metavar="BYTES",
                   help="keep the stored requests and results under BYTES, deleting the oldest "
                        "finished jobs first; 'none' for no limit [1GiB]")
    p.add_argument("--header-timeout", type=float, default=10.0, metavar="S",
                   help="close connections that have not sent a request head within S seconds "
                        "[10]")
    p.add_argument("--body-timeout", type=float, default=30.0, metavar="S",
                   help="answer 408 when a request body stalls for S seconds [30]")
    p.add_argument("--max-large-bodies", type=int, default=2, metavar="K",
                   help="request bodies over 1 MiB read at once; others wait [2]")
    p.add_argument("--max-connections", type=int, default=1000, metavar="C",
                   help="open connections at most; more get 503 [1000]")
    p.add_argument("--no-warm-up", dest="warm_up", action="store_false",
                   help="skip the tiny job per device at start-up that loads compiled kernels "
                        "before the first request")
    p.add_argument("--compact", action="store_true",
                   help="apply the retention policy to --store, shrink the file and exit (stop "
                        "the server of that store first)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                   help="least severe server log events printed [info]")
    p.add_argument("--ssl-certfile", default=None, help="serve HTTPS with this certificate")
    p.add_argument("--ssl-keyfile", default=None, help="the certificate's key")
    p.add_argument("--openapi", metavar="FILE",
                   help="write the OpenAPI document of the wire format to FILE ('-': stdout) "
                        "and exit")
    p.set_defaults(func=cmd_serve)


def _need_server_extra() -> None:
    for mod in ("fastapi", "uvicorn"):
        try:
            __import__(mod)
        except ImportError:
            raise MissingDependencyError(mod, extra="server", feature="kpp serve") from None


def cmd_serve(args: argparse.Namespace) -> int:
    from ..cli import _parse_option

    _need_server_extra()
    from .server import ServerConfig, openapi_document, serve

    if args.openapi:
        text = json.dumps(openapi_document(), indent=2, sort_keys=True) + "\n"
        if args.openapi == "-":
            sys.stdout.write(text)
        else:
            from ..io import atomic_write

            atomic_write(args.openapi, lambda f: f.write(text))
        return 0
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must be in 0..65535, got {args.port}")
    if args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    if args.rate_limit < 0:
        raise ConfigError(f"--rate-limit must be >= 0, got {args.rate_limit}")
    if args.max_attempts < 1:
        raise ConfigError(f"--max-attempts must be >= 1, got {args.max_attempts}")
    if bool(args.ssl_certfile) != bool(args.ssl_keyfile):
        raise ConfigError("--ssl-certfile and --ssl-keyfile go together")
    for flag, value in (("--header-timeout", args.header_timeout),
                        ("--body-timeout", args.body_timeout)):
        if not value > 0:
            raise ConfigError(f"{flag} must be > 0 seconds, got {value}")
    if args.max_large_bodies < 1:
        raise ConfigError(f"--max-large-bodies must be >= 1, got {args.max_large_bodies}")
    if args.max_connections < 1:
        raise ConfigError(f"--max-connections must be >= 1, got {args.max_connections}")
    config = ServerConfig(
        devices=args.devices or ["sa.cpu"],
        device_options=dict(_parse_option(o) for o in args.option),
        host=args.host, port=args.port, tokens_file=args.tokens_file, no_auth=args.no_auth,
        store=args.store, workers=args.workers, max_request_bytes=args.max_request_bytes,
        rate_limit=args.rate_limit, burst=args.burst, max_attempts=args.max_attempts,
        paused=args.paused, shutdown_grace_s=args.shutdown_grace, log_level=args.log_level,
        ssl_certfile=args.ssl_certfile, ssl_keyfile=args.ssl_keyfile,
        max_job_seconds=_optional(args.max_job_seconds, "--max-job-seconds", _seconds),
        max_job_memory=_optional(args.max_job_memory, "--max-job-memory", _bytes),
        retention_s=_optional(args.retention, "--retention", _duration),
        max_store_bytes=_optional(args.max_store_bytes, "--max-store-bytes", _bytes),
        header_timeout_s=args.header_timeout, body_timeout_s=args.body_timeout,
        max_large_bodies=args.max_large_bodies, max_connections=args.max_connections,
        warm_up=args.warm_up,
    )
    if args.compact:
        from ..limits import format_bytes
        from .server import compact_store

        report, before, after = compact_store(config)
        print(f"{args.store}: {report.expired_by_age} job(s) expired by age, "
              f"{report.expired_by_size} by size, {report.tombstones_deleted} tombstone(s) "
              f"deleted; file {format_bytes(before)} -> {format_bytes(after)}")
        return 0
    serve(config)
    return 0


def _optional(text: str, flag: str, parse):
    if str(text).strip().lower() in ("none", "off"):
        return None
    try:
        return parse(text)
    except (ValueError, ConfigError) as exc:
        raise ConfigError(f"{flag}: {exc}") from None


def _seconds(text: str) -> float:
    value = float(text)
    if not (value > 0 and value < float("inf")):
        raise ValueError(f"expected a positive number of seconds, got {text!r}")
    return value


def _bytes(text: str) -> int:
    from ..limits import parse_bytes

    return parse_bytes(text, "the value")


_DURATION_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0}


def _duration(text: str) -> float:
    t = str(text).strip().lower()
    unit = _DURATION_UNITS.get(t[-1:]) if t else None
    value = float(t[:-1]) if unit else float(t)
    value *= unit or 1.0
    if not (value > 0 and value < float("inf")):
        raise ValueError(f"expected a positive duration such as 3600, 12h or 7d, got {text!r}")
    return value
