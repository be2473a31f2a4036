"""A real ``kpp serve`` process on 127.0.0.1: for tests, benchmarks and runnable examples.

>>> with LocalServer("sa.cpu") as server:                          # doctest: +SKIP
...     device = server.client()                                   # a cim.cloud device
...     device.sample(problem, num_reads=10, seed=1)

It writes a tokens file (mode 600) with one token per client name, starts the server as a
subprocess (``python -m kpp_sdk.cli serve ...``) on a free port, waits until ``/v1/health``
answers, and logs to ``<workdir>/server.log`` (appended to across restarts). :meth:`kill`
(SIGKILL) and :meth:`start` again on the same port and store simulate a crash and a restart.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import requests

from ..config import Secret

__all__ = ["LocalServer", "free_port"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalServer:
    """``kpp serve`` as a child process.

    Parameters
    ----------
    devices : str or sequence of str
        Devices to serve (the first is the default).
    clients : mapping name -> options
        One token is generated per client; options as in the tokens file (``"role=admin"``,
        ``"rate=2 burst=2"``). Default: ``{"user": "", "admin": "role=admin"}``.
    workers, rate_limit, max_request_bytes, paused
        The ``kpp serve`` flags of the same names (``rate_limit`` default 0: unlimited).
    args : sequence of str
        More ``kpp serve`` arguments.
    env : mapping, optional
        Environment variables for the server process (over this process's; e.g. a
        ``PYTHONPATH`` holding a plugin device).
    workdir : path, optional
        Folder for the store, tokens and log (default: a new temporary folder, removed by
        :meth:`close` unless ``keep``).
    """

    def __init__(self, devices: str | Sequence[str] = "sa.cpu", *,
                 clients: Mapping[str, str] | None = None, port: int | None = None,
                 workers: int = 1, rate_limit: float = 0.0, max_request_bytes: int | None = None,
                 paused: bool = False, args: Sequence[str] = (),
                 env: Mapping[str, str] | None = None,
                 workdir: str | os.PathLike | None = None,
                 keep: bool = False, startup_timeout: float = 60.0):
        self.devices = [devices] if isinstance(devices, str) else list(devices)
        self.clients = dict(clients if clients is not None else {"user": "", "admin": "role=admin"})
        self.port = port or free_port()
        self.workers, self.rate_limit = workers, rate_limit
        self.max_request_bytes, self.paused = max_request_bytes, paused
        self.extra_args = list(args)
        self.env = dict(env or {})
        self._own_dir = workdir is None
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="kpp-serve-"))
        self.keep = keep
        self.startup_timeout = startup_timeout
        self.store = self.workdir / "jobs.sqlite3"
        self.log_path = self.workdir / "server.log"
        self.tokens: dict[str, Secret] = {n: Secret(secrets.token_urlsafe(24))
                                          for n in self.clients}
        self._proc: subprocess.Popen | None = None
        self._write_tokens()

    def _write_tokens(self) -> None:
        path = self.workdir / "tokens"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            for name, opts in self.clients.items():
                f.write(f"{name} {self.tokens[name].reveal()} {opts}\n")
        self.tokens_file = path

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def token(self) -> Secret:
        """The first client's token."""
        return next(iter(self.tokens.values()))

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "kpp_sdk.cli", "serve"]
        for d in self.devices:
            cmd += ["--device", d]
        cmd += ["--host", "127.0.0.1", "--port", str(self.port), "--tokens-file",
                str(self.tokens_file), "--store", str(self.store), "--workers", str(self.workers),
                "--rate-limit", str(self.rate_limit), "--shutdown-grace", "2"]
        if self.max_request_bytes:
            cmd += ["--max-request-bytes", str(self.max_request_bytes)]
        if self.paused:
            cmd.append("--paused")
        return cmd + self.extra_args

    def start(self) -> LocalServer:
        """Start (or restart) the server and wait until it answers."""
        if self.running:
            raise RuntimeError(f"the server (pid {self.pid}) is already running")
        env = {k: v for k, v in os.environ.items() if k != "KPP_SERVER_TOKENS"}
        env.setdefault("PYTHONUNBUFFERED", "1")
        env.update(self.env)
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, env=env)
        self.wait_ready()
        return self

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(f"kpp serve exited with status {self._proc.returncode}:\n"
                                   + self.log_text()[-3000:])
            try:
                if requests.get(self.endpoint + "/v1/health", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"kpp serve did not answer within {self.startup_timeout} s:\n"
                           + self.log_text()[-3000:])

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to clean up (a crash)."""
        if self.running:
            assert self._proc is not None
            self._proc.send_signal(signal.SIGKILL)
            self._proc.wait()

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM (a graceful shutdown); SIGKILL if it takes longer than ``timeout``."""
        if self._proc is None:
            return None
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self._proc.returncode

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def client(self, name: str | None = None, **kwargs: Any):
        """A ``cim.cloud`` device talking to this server as client ``name`` (default: the first)."""
        from ..registry import get_device

        token = self.tokens[name] if name else self.token
        return get_device("cim.cloud", endpoint=self.endpoint, token=token, **kwargs)

    def close(self) -> None:
        self.stop()
        if self._own_dir and not self.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running else "stopped"
        return f"LocalServer({self.devices}, {self.endpoint}, {state})"
