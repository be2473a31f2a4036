"""Bearer tokens and per-token rate limits of ``kpp serve``.

Tokens file (``--tokens-file``) or environment variable ``KPP_SERVER_TOKENS`` (entries separated
by ``;`` or newlines), one entry per line::

    # name    token                              options
    alice     hJ2k...at-least-16-characters...
    ci        Zq9x...                            rate=5 burst=10
    ops       p0Lm...                            role=admin

``name`` identifies the client in logs and owns its jobs (a token sees only its own jobs);
``role=admin`` may pause and resume the workers; ``rate`` (requests per second) and ``burst``
override the server's default rate limit for that token. Tokens are kept only as SHA-256 digests
and compared with :func:`hmac.compare_digest` against every entry, so the time taken does not
depend on which entry (if any) matched. Generate one with
``python -c "import secrets; print(secrets.token_urlsafe(32))"``.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
import re
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError

__all__ = ["Principal", "TokenRegistry", "RateLimiter", "parse_token_entries"]

MIN_TOKEN_LENGTH = 16
_NAME = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")
_TOKEN = re.compile(r"^[A-Za-z0-9._~+/=-]+$")


@dataclass(frozen=True)
class Principal:
    """Who a token belongs to; never holds the token."""

    name: str
    role: str = "user"
    rate: float | None = None
    burst: float | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def parse_token_entries(text: str, source: str) -> list[tuple[Principal, bytes]]:
    """Parse the format of the module docstring. Error messages name the line, never the token."""
    out: list[tuple[Principal, bytes]] = []
    names: set[str] = set()
    digests: set[bytes] = set()
    for lineno, line in enumerate(re.split(r"[;\n]", text), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        where = f"{source}, entry {lineno}"
        if len(parts) < 2:
            raise ConfigError(f"{where}: expected 'name token [role=admin] [rate=R] [burst=B]'")
        name, token, opts = parts[0], parts[1], parts[2:]
        if not _NAME.match(name):
            raise ConfigError(f"{where}: the name must be 1-64 of A-Z a-z 0-9 . _ @ -")
        if len(token) < MIN_TOKEN_LENGTH or not _TOKEN.match(token):
            raise ConfigError(
                f"{where}: the token for {name!r} must be at least {MIN_TOKEN_LENGTH} URL-safe "
                "characters (generate one with secrets.token_urlsafe(32))")
        kw: dict = {}
        for opt in opts:
            key, _, value = opt.partition("=")
            try:
                if key == "role" and value in ("user", "admin"):
                    kw["role"] = value
                elif key in ("rate", "burst") and float(value) >= 0 and math.isfinite(float(value)):
                    kw[key] = float(value)
                else:
                    raise ValueError
            except ValueError:
                raise ConfigError(
                    f"{where}: unknown option {key!r} for {name!r}; known: role=user|admin, "
                    "rate=<requests/s>, burst=<requests>") from None
        if name in names:
            raise ConfigError(f"{where}: the name {name!r} appears twice")
        d = _digest(token)
        if d in digests:
            raise ConfigError(f"{where}: {name!r} reuses another entry's token")
        names.add(name)
        digests.add(d)
        out.append((Principal(name, **kw), d))
    return out


class TokenRegistry:
    """The accepted tokens (as digests) and who they belong to."""

    def __init__(self, entries: list[tuple[Principal, bytes]]):
        self._entries = list(entries)

    @classmethod
    def load(cls, tokens_file: str | os.PathLike | None = None,
             environ: dict | None = None) -> TokenRegistry:
        """From ``tokens_file`` and/or ``KPP_SERVER_TOKENS``; both may be given (entries add up)."""
        env = os.environ if environ is None else environ
        entries: list[tuple[Principal, bytes]] = []
        if tokens_file:
            path = Path(tokens_file)
            if not path.is_file():
                raise ConfigError(f"tokens file {path} does not exist")
            entries += parse_token_entries(path.read_text(encoding="utf-8"), str(path))
        if env.get("KPP_SERVER_TOKENS"):
            entries += parse_token_entries(env["KPP_SERVER_TOKENS"], "KPP_SERVER_TOKENS")
        names = [p.name for p, _ in entries]
        if len(set(names)) != len(names):
            raise ConfigError("a client name appears both in the tokens file and KPP_SERVER_TOKENS")
        return cls(entries)

    @staticmethod
    def file_is_private(path: str | os.PathLike) -> bool:
        """False when group or others may read the tokens file (the server warns)."""
        return not (os.stat(path).st_mode & (stat.S_IRWXG | stat.S_IRWXO))

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"TokenRegistry({len(self._entries)} tokens: {[p.name for p, _ in self._entries]})"

    def identify(self, presented: str | None) -> Principal | None:
        """The principal whose token is ``presented``, or None. Constant time in the position of
        the match: every entry is compared."""
        if not presented:
            return None
        d = _digest(presented)
        found = None
        for principal, digest in self._entries:
            if hmac.compare_digest(d, digest):
                found = principal
        return found


class RateLimiter:
    """A token bucket per principal: ``rate`` requests per second on average, bursts of up to
    ``burst``. ``rate`` 0 (or None) means unlimited."""

    def __init__(self, rate: float | None, burst: float | None = None):
        self.rate = float(rate or 0.0)
        self.burst = float(burst if burst is not None else max(2.0 * self.rate, 1.0))
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def check(self, who: Principal, now: float | None = None) -> float:
        """Take one request from ``who``'s bucket: 0.0 if allowed, else the seconds to wait."""
        rate = self.rate if who.rate is None else who.rate
        burst = self.burst if who.burst is None else who.burst
        if rate <= 0:
            return 0.0
        burst = max(burst, 1.0)
        now = time.monotonic() if now is None else now
        with self._lock:
            level, last = self._buckets.get(who.name, (burst, now))
            level = min(burst, level + (now - last) * rate)
            if level >= 1.0:
                self._buckets[who.name] = (level - 1.0, now)
                return 0.0
            self._buckets[who.name] = (level, now)
            return (1.0 - level) / rate
