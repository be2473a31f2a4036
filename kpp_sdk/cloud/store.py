"""The server's persistent job store: one SQLite file, so queued and finished jobs survive a
restart (including a SIGKILL).

Every state change is one transaction. The database runs in WAL mode with ``synchronous=NORMAL``:
a committed change survives the *process* dying at any point (what a crash or SIGKILL does); only
an operating-system crash may lose the last few commits. One server owns a store at a time
(:meth:`JobStore.lock`); the lock is an ``flock`` that the kernel releases when the process dies.

Lifecycle of a row::

    QUEUED --claim--> RUNNING --finish--> DONE | FAILED | CANCELLED
    QUEUED --cancel--> CANCELLED
    RUNNING --(server died; recover() at the next start)--> QUEUED  (or FAILED after max_attempts)

Completion is fenced by the attempt number, so a stale worker can never overwrite the result of
a later run, and a job is finished at most once.

Retention (:class:`RetentionPolicy`, :meth:`JobStore.purge`): a finished job's request and result
are deleted once it is older than ``max_age_s``, and oldest first while the stored bodies exceed
``max_bytes``; the row stays as a tombstone with ``expired_at`` set (the server answers 410 for
its result) for :data:`TOMBSTONE_S`, then goes. The WAL is kept below :data:`WAL_LIMIT_BYTES`
and :meth:`JobStore.compact` (``kpp serve --compact``) gives the freed pages back to the file
system.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from .errors import IdempotencyConflict

__all__ = ["JobStore", "JobRow", "RetentionPolicy", "PurgeReport", "TOMBSTONE_S"]

_SCHEMA_VERSION = 2
#: Tombstones of expired jobs are kept this long (seconds), then deleted (404 from then on).
TOMBSTONE_S = 30 * 86_400.0
#: SQLite truncates its write-ahead log to this size after a checkpoint.
WAL_LIMIT_BYTES = 16 * 2**20

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    id               TEXT NOT NULL UNIQUE,
    owner            TEXT NOT NULL,
    idempotency_key  TEXT NOT NULL,
    request_hash     TEXT NOT NULL,
    device           TEXT NOT NULL,
    status           TEXT NOT NULL,
    num_spins        INTEGER NOT NULL,
    num_reads        INTEGER NOT NULL,
    seed             INTEGER NOT NULL,
    request          BLOB NOT NULL,
    result           BLOB,
    error_type       TEXT,
    error_message    TEXT,
    created_at       REAL NOT NULL,
    started_at       REAL,
    finished_at      REAL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    expired_at       REAL,
    UNIQUE (owner, idempotency_key)
);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, seq);
CREATE INDEX IF NOT EXISTS jobs_by_owner ON jobs (owner, seq);
"""

_INFO_COLUMNS = ("id, owner, idempotency_key, device, status, num_spins, num_reads, seed, "
                 "created_at, started_at, finished_at, attempts, cancel_requested, error_type, "
                 "error_message, expired_at")
_FINISHED = "('DONE', 'FAILED', 'CANCELLED')"


@dataclass(frozen=True)
class RetentionPolicy:
    """How long the store keeps finished jobs. ``max_age_s``: seconds after a job finished
    (None: forever); ``max_bytes``: the stored requests and results together (None: no limit;
    the oldest finished jobs go first; unfinished jobs are never dropped)."""

    max_age_s: float | None = 7 * 86_400.0
    max_bytes: int | None = 1 << 30

    def __post_init__(self) -> None:
        if self.max_age_s is not None and not self.max_age_s > 0:
            raise ConfigError(f"the retention age must be > 0 seconds, got {self.max_age_s}")
        if self.max_bytes is not None and not self.max_bytes > 0:
            raise ConfigError(f"the store size limit must be > 0 bytes, got {self.max_bytes}")


@dataclass(frozen=True)
class PurgeReport:
    """What :meth:`JobStore.purge` did: jobs expired by age and by size, tombstones deleted,
    and the bytes of the stored bodies before and after."""

    expired_by_age: int
    expired_by_size: int
    tombstones_deleted: int
    bytes_before: int
    bytes_after: int


@dataclass(frozen=True)
class JobRow:
    """One job without its blobs (``request`` is filled in by :meth:`JobStore.claim_next`)."""

    id: str
    owner: str
    idempotency_key: str
    device: str
    status: str
    num_spins: int
    num_reads: int
    seed: int
    created_at: float
    started_at: float | None
    finished_at: float | None
    attempts: int
    cancel_requested: bool
    error_type: str | None
    error_message: str | None
    expired_at: float | None = None
    request: bytes | None = None

    def to_info(self) -> dict:
        """The :class:`~kpp_sdk.cloud.wire.JobInfo` fields."""
        err = ({"type": self.error_type, "message": self.error_message or ""}
               if self.error_type else None)
        return {"id": self.id, "device": self.device, "status": self.status,
                "num_spins": self.num_spins, "num_reads": self.num_reads, "seed": self.seed,
                "idempotency_key": self.idempotency_key, "created_at": self.created_at,
                "started_at": self.started_at, "finished_at": self.finished_at,
                "attempts": self.attempts, "cancel_requested": self.cancel_requested, "error": err}


def _row(r: sqlite3.Row | tuple, request: bytes | None = None) -> JobRow:
    return JobRow(r[0], r[1], r[2], r[3], r[4], int(r[5]), int(r[6]), int(r[7]), float(r[8]),
                  r[9], r[10], int(r[11]), bool(r[12]), r[13], r[14], r[15], request)


class JobStore:
    """Jobs in one SQLite file; safe to use from many threads (a connection per thread).

    ``max_attempts``: how many times a job may be *started* before a crash of the server during
    it marks it FAILED instead of queueing it again (protects against a job that kills the server).
    """

    def __init__(self, path: str | os.PathLike, *, max_attempts: int = 3):
        self.path = Path(path)
        if max_attempts < 1:
            raise ConfigError(f"max_attempts must be >= 1, got {max_attempts}")
        self.max_attempts = int(max_attempts)
        self._local = threading.local()
        self._lock_fd: int | None = None
        if self.path.parent and not self.path.parent.exists():
            raise ConfigError(f"the job store's folder {self.path.parent} does not exist")
        con = self._con()
        with con:
            con.executescript(_SCHEMA)
            row = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if row is None:
                con.execute("INSERT INTO meta VALUES ('schema_version', ?)",
                            (str(_SCHEMA_VERSION),))
            elif int(row[0]) == 1:  # version 1 had no retention: add the tombstone column
                con.execute("ALTER TABLE jobs ADD COLUMN expired_at REAL")
                con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'",
                            (str(_SCHEMA_VERSION),))
            elif int(row[0]) != _SCHEMA_VERSION:
                raise ConfigError(
                    f"{self.path} has job-store schema {row[0]}; this kpp-sdk uses "
                    f"{_SCHEMA_VERSION}")

    def _con(self) -> sqlite3.Connection:
        con = getattr(self._local, "con", None)
        if con is None:
            # IMMEDIATE: a write transaction takes the write lock at BEGIN, so two threads
            # never both read-then-write the same row; `with con:` commits or rolls back
            con = sqlite3.connect(self.path, timeout=30.0, isolation_level="IMMEDIATE",
                                  check_same_thread=False)
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=NORMAL")
            con.execute(f"PRAGMA journal_size_limit={WAL_LIMIT_BYTES}")
            self._local.con = con
        return con

    # --- ownership of the file ------------------------------------------------------------------

    def lock(self) -> None:
        """Take the exclusive lock of this store or raise :class:`ConfigError` if another live
        process holds it. The kernel drops it when this process exits, however it exits."""
        import fcntl

        fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(
                f"the job store {self.path} is in use by another kpp serve process; stop it or "
                "give this server its own --store") from None
        self._lock_fd = fd

    def close(self) -> None:
        con = getattr(self._local, "con", None)
        if con is not None:
            con.close()
            self._local.con = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # --- writes ---------------------------------------------------------------------------------

    def insert(self, *, owner: str, idempotency_key: str, request_hash: str, device: str,
               num_spins: int, num_reads: int, seed: int, request: bytes) -> tuple[JobRow, bool]:
        """Queue a job; returns ``(row, created)``. The same ``(owner, idempotency_key)`` returns
        the existing job (``created`` False) or raises :class:`IdempotencyConflict` when the
        request differs."""
        con = self._con()
        job_id = uuid.uuid4().hex
        try:
            with con:
                con.execute(
                    "INSERT INTO jobs (id, owner, idempotency_key, request_hash, device, status, "
                    "num_spins, num_reads, seed, request, created_at) "
                    "VALUES (?, ?, ?, ?, ?, 'QUEUED', ?, ?, ?, ?, ?)",
                    (job_id, owner, idempotency_key, request_hash, device, num_spins, num_reads,
                     seed, request, time.time()))
        except sqlite3.IntegrityError:
            r = con.execute(
                f"SELECT {_INFO_COLUMNS}, request_hash FROM jobs WHERE owner = ? AND "
                "idempotency_key = ?", (owner, idempotency_key)).fetchone()
            if r is None:  # pragma: no cover - a uuid4 collision
                raise
            if r[-1] != request_hash:
                raise IdempotencyConflict(
                    f"idempotency key {idempotency_key!r} was already used for a different "
                    f"request (job {r[0]}); use a new key for a new request", 409) from None
            return _row(r), False
        return self.get(job_id), True  # type: ignore[return-value]

    def claim_next(self) -> JobRow | None:
        """Move the oldest QUEUED job to RUNNING (``attempts`` + 1); returns it with its request."""
        con = self._con()
        with con:
            r = con.execute(
                "UPDATE jobs SET status = 'RUNNING', started_at = ?, attempts = attempts + 1 "
                "WHERE seq = (SELECT seq FROM jobs WHERE status = 'QUEUED' ORDER BY seq LIMIT 1) "
                f"RETURNING {_INFO_COLUMNS}, request", (time.time(),)).fetchall()
        return _row(r[0], bytes(r[0][-1])) if r else None

    def finish(self, job_id: str, attempt: int, status: str, *, result: bytes | None = None,
               error: tuple[str, str] | None = None) -> bool:
        """Record the end of attempt ``attempt`` of a RUNNING job. ``status`` QUEUED puts it back
        (a graceful shutdown; the attempt is not counted). False if the job was not RUNNING at
        that attempt (it was already finished or re-run): nothing is written."""
        if status not in ("DONE", "FAILED", "CANCELLED", "QUEUED"):
            raise ValueError(f"cannot finish a job as {status}")
        con = self._con()
        with con:
            if status == "QUEUED":
                cur = con.execute(
                    "UPDATE jobs SET status = 'QUEUED', started_at = NULL, attempts = attempts - 1 "
                    "WHERE id = ? AND status = 'RUNNING' AND attempts = ?", (job_id, attempt))
            else:
                etype, emsg = error if error else (None, None)
                cur = con.execute(
                    "UPDATE jobs SET status = ?, result = ?, error_type = ?, error_message = ?, "
                    "finished_at = ? WHERE id = ? AND status = 'RUNNING' AND attempts = ?",
                    (status, result, etype, emsg, time.time(), job_id, attempt))
        return cur.rowcount == 1

    def cancel(self, job_id: str, owner: str) -> JobRow | None:
        """Cancel: a QUEUED job becomes CANCELLED at once, a RUNNING one gets ``cancel_requested``
        (the worker stops it), a finished one is unchanged. None if the owner has no such job."""
        con = self._con()
        with con:
            con.execute("UPDATE jobs SET status = 'CANCELLED', finished_at = ? "
                        "WHERE id = ? AND owner = ? AND status = 'QUEUED'",
                        (time.time(), job_id, owner))
            con.execute("UPDATE jobs SET cancel_requested = 1 "
                        "WHERE id = ? AND owner = ? AND status = 'RUNNING'", (job_id, owner))
        return self.get(job_id, owner)

    def recover(self) -> list[JobRow]:
        """At start-up: jobs left RUNNING by a server that died go back to QUEUED (to be re-run),
        or to CANCELLED when a cancel was requested, or to FAILED after ``max_attempts`` starts.
        Returns the rows as they are now."""
        con = self._con()
        now = time.time()
        with con:
            ids = [r[0] for r in con.execute("SELECT id FROM jobs WHERE status = 'RUNNING'")]
            con.execute("UPDATE jobs SET status = 'CANCELLED', finished_at = ? "
                        "WHERE status = 'RUNNING' AND cancel_requested = 1", (now,))
            con.execute(
                "UPDATE jobs SET status = 'FAILED', finished_at = ?, error_type = 'ServerError', "
                "error_message = 'the server stopped while running this job ' || attempts || "
                "' times; it is not tried again' WHERE status = 'RUNNING' AND attempts >= ?",
                (now, self.max_attempts))
            con.execute("UPDATE jobs SET status = 'QUEUED', started_at = NULL "
                        "WHERE status = 'RUNNING'")
        return [r for r in (self.get(i) for i in ids) if r is not None]

    # --- reads ----------------------------------------------------------------------------------

    def get(self, job_id: str, owner: str | None = None) -> JobRow | None:
        q = f"SELECT {_INFO_COLUMNS} FROM jobs WHERE id = ?"
        args: tuple = (job_id,)
        if owner is not None:
            q += " AND owner = ?"
            args += (owner,)
        r = self._con().execute(q, args).fetchone()
        return None if r is None else _row(r)

    def get_many(self, ids: Iterable[str], owner: str) -> dict[str, JobRow]:
        ids = list(ids)
        out: dict[str, JobRow] = {}
        for k in range(0, len(ids), 500):  # SQLite's limit on bound parameters
            chunk = ids[k:k + 500]
            marks = ",".join("?" * len(chunk))
            for r in self._con().execute(
                    f"SELECT {_INFO_COLUMNS} FROM jobs WHERE owner = ? AND id IN ({marks})",
                    (owner, *chunk)):
                out[r[0]] = _row(r)
        return out

    # --- retention ------------------------------------------------------------------------------

    def stored_bytes(self, status: str | None = None) -> int:
        """Bytes of the stored requests and results (of jobs in ``status`` only, if given)."""
        q = "SELECT COALESCE(SUM(length(request) + COALESCE(length(result), 0)), 0) FROM jobs"
        args: tuple = ()
        if status:
            q += " WHERE status = ?"
            args = (status,)
        return int(self._con().execute(q, args).fetchone()[0])

    def purge(self, policy: RetentionPolicy, now: float | None = None) -> PurgeReport:
        """Apply ``policy`` (see the module docstring); returns what was done."""
        now = time.time() if now is None else now
        con = self._con()
        before = self.stored_bytes()
        by_age = by_size = 0
        with con:
            if policy.max_age_s is not None:
                by_age = con.execute(
                    "UPDATE jobs SET request = x'', result = NULL, expired_at = ? "
                    f"WHERE expired_at IS NULL AND status IN {_FINISHED} AND finished_at < ?",
                    (now, now - policy.max_age_s)).rowcount
            tomb = con.execute("DELETE FROM jobs WHERE expired_at < ?",
                               (now - TOMBSTONE_S,)).rowcount
        total = self.stored_bytes()
        if policy.max_bytes is not None and total > policy.max_bytes:
            rows = con.execute(
                "SELECT id, length(request) + COALESCE(length(result), 0) FROM jobs "
                f"WHERE expired_at IS NULL AND status IN {_FINISHED} ORDER BY finished_at, seq"
            ).fetchall()
            victims = []
            for job_id, size in rows:
                if total <= policy.max_bytes:
                    break
                victims.append(job_id)
                total -= int(size)
            with con:
                for k in range(0, len(victims), 500):
                    chunk = victims[k:k + 500]
                    by_size += con.execute(
                        "UPDATE jobs SET request = x'', result = NULL, expired_at = ? WHERE id IN "
                        f"({','.join('?' * len(chunk))})", (now, *chunk)).rowcount
        if by_age or by_size or tomb:
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return PurgeReport(by_age, by_size, tomb, before, self.stored_bytes())

    def compact(self, policy: RetentionPolicy | None = None) -> PurgeReport | None:
        """Purge (when ``policy`` is given), then ``VACUUM``: the file shrinks to what it holds.
        Needs the store to itself (:meth:`lock` first)."""
        report = self.purge(policy) if policy is not None else None
        con = self._con()
        con.execute("VACUUM")
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return report

    def request_of(self, job_id: str, owner: str) -> bytes | None:
        r = self._con().execute("SELECT request FROM jobs WHERE id = ? AND owner = ?",
                                (job_id, owner)).fetchone()
        return None if r is None else bytes(r[0])

    def result_of(self, job_id: str, owner: str) -> bytes | None:
        r = self._con().execute("SELECT result FROM jobs WHERE id = ? AND owner = ?",
                                (job_id, owner)).fetchone()
        return None if r is None or r[0] is None else bytes(r[0])

    def list(self, owner: str, *, status: str | None = None, limit: int = 100,
             offset: int = 0) -> list[JobRow]:
        """The owner's jobs, oldest first."""
        q = f"SELECT {_INFO_COLUMNS} FROM jobs WHERE owner = ?"
        args: tuple = (owner,)
        if status:
            q += " AND status = ?"
            args += (status,)
        q += " ORDER BY seq LIMIT ? OFFSET ?"
        return [_row(r) for r in self._con().execute(q, (*args, limit, offset))]

    def list_by_key(self, owner: str, idempotency_key: str) -> JobRow | None:
        r = self._con().execute(f"SELECT {_INFO_COLUMNS} FROM jobs WHERE owner = ? AND "
                                "idempotency_key = ?", (owner, idempotency_key)).fetchone()
        return None if r is None else _row(r)

    def counts(self) -> dict[str, int]:
        return {s: int(c) for s, c in
                self._con().execute("SELECT status, COUNT(*) FROM jobs GROUP BY status")}
