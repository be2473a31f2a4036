"""``cim.cloud``: a Device on a remote server that speaks the kpp wire format (``kpp serve``,
or the cloud CIM service). See ``docs/cloud.md``."""

from __future__ import annotations

import functools
import json
import logging
import re
import threading
import time
import uuid
from typing import Any, ClassVar

from kpp_sdk.cloud import wire
from kpp_sdk.cloud.client import HttpClient, is_retryable
from kpp_sdk.cloud.poller import JobPoller
from kpp_sdk.config import load_config, mask
from kpp_sdk.device import Device, DeviceProperties, JobSpec, RunContext, RunResult, resolve_seed
from kpp_sdk.errors import (
    CloudError,
    ConfigError,
    InvalidOptionError,
    InvalidResponseError,
    RequestTooLargeError,
)
from kpp_sdk.job import Job
from kpp_sdk.options import as_spec
from kpp_sdk.problem import IsingProblem
from kpp_sdk.sampleset import SampleSet

__all__ = ["CIMCloud"]

log = logging.getLogger("kpp_sdk.devices.cim_cloud")

P = wire.API_PREFIX
_KEY = re.compile(r"^[A-Za-z0-9._:-]{8,128}$")
#: After a failed implicit fetch of the properties, the next one waits this long (seconds).
PROPERTIES_RETRY_S = 30.0


class CIMCloud(Device):
    """A device on a kpp server, over HTTP.

    Credentials follow :func:`kpp_sdk.config.load_config`: keyword arguments > ``KPP_API_TOKEN``
    / ``KPP_API_ENDPOINT`` / ``KPP_PROFILE`` > the profile file > defaults. The token is held in a
    :class:`~kpp_sdk.config.Secret` and never appears in a repr, a log line or an exception.

    Parameters
    ----------
    endpoint, token, profile, config_file, timeout
        Passed to :func:`~kpp_sdk.config.load_config`; ``timeout`` is the read timeout of each
        request in seconds (default 30).
    device : str, optional
        Which of the server's devices to use; default: the server's default device.
    connect_timeout : float
        Seconds to open a connection [5].
    max_retries : int
        Retries of one request after a connection error, timeout, truncated answer, 429 or 5xx,
        with exponential backoff and jitter from ``backoff_base`` [0.1 s] to ``backoff_cap``
        [10 s], honouring ``Retry-After`` [5].
    long_poll : float
        Seconds the server may hold a status poll open [10]; 0 switches to plain polling with
        backoff from 0.05 s up to ``poll_interval_max`` [2 s].
    max_outage : float
        Seconds of failed polls (server down or restarting) before the outstanding jobs fail [300].

        Each of ``connect_timeout``, ``max_retries``, ``backoff_base``, ``backoff_cap``,
        ``long_poll``, ``poll_interval_max`` and ``max_outage`` (and ``timeout``) not given here
        comes from the environment (``KPP_MAX_OUTAGE``, ...) or the profile file
        (:data:`kpp_sdk.config.CLIENT_SETTINGS`).
    **defaults
        Default options for the remote device (checked against the server's device once it has
        been contacted).

    Properties and options are the server's device's, fetched once (at construction when a token
    is configured, with a single attempt). Without a token, or while the server cannot be
    reached, :attr:`properties` are the nominal limits of QBoson's cloud CIM (550 spins, 8-bit
    couplings), marked ``extra["source"] == "nominal"``; :meth:`submit` always fetches the real
    ones first (with retries) and raises if the server stays unreachable.

    Jobs are the server's: :meth:`submit` returns at once with a :class:`~kpp_sdk.Job` whose id is
    the server's job id; ``job.cancel()`` cancels on the server; :meth:`job` re-attaches to a job
    by id from any process holding the same token. ``executor`` is accepted and ignored (the work
    runs on the server).
    """

    name = "cim.cloud"
    OPTIONS: ClassVar[dict] = {}
    DEFAULT_NUM_READS = 100
    #: QBoson's cloud CIM: 550 spins, 8-bit signed couplings.
    NOMINAL_PROPERTIES = DeviceProperties(max_spins=550, coefficient_bits=8, supports_fields=True,
                                          is_remote=True, max_reads=10_000,
                                          extra={"source": "nominal"})

    def __init__(self, endpoint: str | None = None, token: Any = None, *, device: str | None = None,
                 profile: str | None = None, config_file: Any = None, timeout: float | None = None,
                 connect_timeout: float | None = None, max_retries: int | None = None,
                 backoff_base: float | None = None, backoff_cap: float | None = None,
                 long_poll: float | None = None, poll_interval_max: float | None = None,
                 max_outage: float | None = None, executor: Any = None, **defaults: Any):
        cfg = self._cfg = load_config(
            endpoint=endpoint, token=token, profile=profile, timeout=timeout,
            config_file=config_file, connect_timeout=connect_timeout, max_retries=max_retries,
            backoff_base=backoff_base, backoff_cap=backoff_cap, long_poll=long_poll,
            poll_interval_max=poll_interval_max, max_outage=max_outage)
        self._remote_name = device
        self._http_settings = dict(connect_timeout=min(cfg.connect_timeout, cfg.timeout),
                                   read_timeout=cfg.timeout, max_retries=cfg.max_retries,
                                   backoff_base=cfg.backoff_base, backoff_cap=cfg.backoff_cap)
        self._poll_settings = dict(long_poll=cfg.long_poll, interval_max=cfg.poll_interval_max,
                                   max_outage=cfg.max_outage)
        self._cloud_lock = threading.RLock()
        self._desc: wire.DeviceDescription | None = None
        self._props: DeviceProperties | None = None
        self._props_retry_at = 0.0
        self._http: HttpClient | None = None
        self._poller: JobPoller | None = None
        self._num_reads_given = "num_reads" in defaults
        # option names and values belong to the server's device: checked when it has answered
        self._user_defaults = {k: v for k, v in defaults.items() if k != "num_reads"}
        super().__init__(executor=executor,
                         **({"num_reads": defaults["num_reads"]} if self._num_reads_given else {}))

    # --- plumbing ----------------------------------------------------------------------------

    def __repr__(self) -> str:
        tok = mask(self._cfg.token.reveal()) if self._cfg.token else "<none>"
        return (f"CIMCloud(endpoint={self._cfg.endpoint!r}, device={self._remote_name!r}, "
                f"token={tok})")

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state.update(_http=None, _poller=None, _cloud_lock=None)
        return state

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self._cloud_lock = threading.RLock()

    @property
    def endpoint(self) -> str:
        return self._cfg.endpoint

    @property
    def http(self) -> HttpClient:
        """The HTTP client (one per device; sessions per thread)."""
        with self._cloud_lock:
            if self._http is None:
                self._http = HttpClient(self._cfg.endpoint, self._cfg.token, **self._http_settings)
            return self._http

    @property
    def _jobs(self) -> JobPoller:
        with self._cloud_lock:
            if self._poller is None:
                self._poller = JobPoller(self.http, self._finish, **self._poll_settings)
            return self._poller

    def _require_token(self) -> None:
        if not self._cfg.token:
            raise ConfigError(
                f"cim.cloud needs an API token for {self._cfg.endpoint}: pass token=..., set "
                "KPP_API_TOKEN, or add token = \"...\" to your profile in the kpp config file")

    # --- the server's device -------------------------------------------------------------------

    def description(self, *, retries: int | None = None) -> wire.DeviceDescription:
        """The served device's description (fetched once; :meth:`refresh` fetches it again)."""
        if self._desc is not None:
            return self._desc
        with self._cloud_lock:
            if self._desc is None:
                self._require_token()
                if self._remote_name:
                    d = self.http.request("GET", f"{P}/devices/{self._remote_name}",
                                          model=wire.DeviceDescription, what="describe device",
                                          retries=retries)
                else:
                    lst = self.http.request("GET", f"{P}/devices", model=wire.DeviceList,
                                            what="list devices", retries=retries)
                    d = next(x for x in lst.devices if x.name == lst.default)
                self.OPTIONS = as_spec(wire.decode_options(d.options))
                props = d.properties.model_dump()
                props["is_remote"] = True
                props["extra"] = {**props["extra"], "source": self._cfg.endpoint,
                                  "remote_device": d.name}
                self._props = DeviceProperties(**props)
                self._desc = d
        return self._desc

    def refresh(self) -> wire.DeviceDescription:
        with self._cloud_lock:
            self._desc = None
            return self.description()

    @property
    def properties(self) -> DeviceProperties:
        """The served device's properties with ``is_remote=True``. Before the server has
        answered (no token, or the server cannot be reached: one attempt, then again at most
        every :data:`PROPERTIES_RETRY_S` seconds) the nominal cloud CIM properties, with
        ``extra["source"] == "nominal"``; :meth:`submit` always waits for the real ones. A
        rejected token or an unknown device raises at once."""
        if self._desc is None and self._cfg.token and time.monotonic() >= self._props_retry_at:
            try:
                self.description(retries=0)
            except CloudError as exc:
                if not is_retryable(exc):  # a bad token or device: say so now
                    raise
                self._props_retry_at = time.monotonic() + PROPERTIES_RETRY_S
                log.warning("%s; cim.cloud reports the nominal cloud CIM properties until the "
                            "server answers", exc)
        return self._props if self._props is not None else self.NOMINAL_PROPERTIES

    @property
    def options(self) -> dict:
        """The server's device's options with this instance's defaults."""
        self.description()
        return {**self.OPTIONS.defaults(), **self._user_defaults}

    def check_options(self, **options: Any) -> dict:
        """Option names against the server's device (values are checked by the server, with
        the same error classes); returns this instance's defaults with ``options`` over them."""
        self.description()
        merged = {**self._user_defaults, **options}
        self.OPTIONS.check_names(merged, self.name)
        return merged

    def validate(self, problem: IsingProblem, num_reads: int | None = None,
                 **options: Any) -> JobSpec:
        """What can be checked before sending: the problem against the server's device
        properties, ``num_reads`` and option names; the server checks the rest at submit."""
        desc = self.description()
        problem = self.check_problem(problem)
        if num_reads is None:
            num_reads = self._default_num_reads if self._num_reads_given else desc.default_num_reads
        return JobSpec(problem, self.check_num_reads(num_reads), self.check_options(**options))

    # --- jobs ----------------------------------------------------------------------------------

    def _run(self, problem: IsingProblem, *, num_reads: int, seed: int, options: dict,
             ctx: RunContext) -> RunResult:
        """Blocking run through :meth:`submit` (for executors that call ``_run`` directly)."""
        job = self.submit(problem, num_reads=num_reads, seed=seed, **options)
        ss = job.result()
        return RunResult(ss.spins, ss.num_occurrences, ss.timing.get("device_s"), dict(ss.info))

    def submit(self, problem: IsingProblem, *, num_reads: int | None = None, seed: Any = None,
               executor: Any = None, idempotency_key: str | None = None, **options: Any) -> Job:
        """Send a job to the server and return at once (after the server has stored it).

        Validated here before anything is sent: the problem against the server's device
        properties, num_reads, option names, and the request size against the server's limit.
        Option values are validated by the server (same error classes). ``idempotency_key``
        (8-128 of ``A-Za-z0-9._:-``; default: a fresh UUID) makes the submit safe to repeat: a
        second submit with the same key returns the first job.
        """
        desc = self.description()
        spec = self.validate(problem, num_reads, **options)
        seed = resolve_seed(seed)
        key = idempotency_key or uuid.uuid4().hex
        if not isinstance(key, str) or not _KEY.match(key):
            raise InvalidOptionError(
                f"idempotency_key must be 8-128 characters of A-Z a-z 0-9 . _ : -, got {key!r}")
        jobs = self._jobs
        body = json.dumps({
            "wire_version": wire.WIRE_VERSION, "device": desc.name,
            "problem": wire.encode_problem(spec.problem), "num_reads": spec.num_reads,
            "seed": seed, "options": wire.encode_options(spec.options),
            "idempotency_key": key, "watcher": jobs.watcher,
        }, separators=(",", ":")).encode()
        if len(body) > desc.max_request_bytes:
            raise RequestTooLargeError(
                f"the request is {len(body):,} bytes but {self._cfg.endpoint} accepts at most "
                f"{desc.max_request_bytes:,}; send a smaller (or sparse) problem, or ask the "
                "operator to raise kpp serve --max-request-bytes", 413)
        submitted_at = time.time()
        jobs.begin_submit()
        try:
            info = self.http.request("POST", f"{P}/jobs", body=body, model=wire.JobInfo,
                                     what="submit")
            fut = jobs.track(info, spec.problem, spec.num_reads)
        finally:
            jobs.end_submit()
        return Job(fut, info.id, self.name, submitted_at=submitted_at,
                   cancel_hook=functools.partial(self._cancel_remote, info.id))

    sample_async = submit

    def job(self, job_id: str) -> Job:
        """Re-attach to a job of this token by its id (e.g. after the submitting process died)."""
        self._require_token()
        path = wire.job_path(job_id)  # checked and escaped: an id never reaches another route
        jobs = self._jobs
        jobs.begin_submit()
        try:
            info = self.http.request("GET", path, params={"watcher": jobs.watcher},
                                     model=wire.JobInfo, what=f"job {job_id}")
            if info.id != job_id:
                raise InvalidResponseError(f"asked for job {job_id}, the server answered with "
                                           f"job {info.id}")
            fut = jobs.future_of(job_id)
            if fut is None:
                req = self.http.request("GET", wire.job_path(job_id, "/problem"),
                                        model=wire.SubmitRequest, what=f"problem of job {job_id}")
                fut = jobs.track(info, wire.decode_problem(req.problem), req.num_reads)
        finally:
            jobs.end_submit()
        return Job(fut, job_id, self.name, submitted_at=info.created_at,
                   cancel_hook=functools.partial(self._cancel_remote, job_id))

    def list_jobs(self, status: str | None = None, limit: int = 100,
                  offset: int = 0) -> list[wire.JobInfo]:
        """This token's jobs on the server, oldest first."""
        self._require_token()
        params: dict = {"limit": limit, "offset": offset}
        if status:
            params["status"] = status
        return self.http.request("GET", f"{P}/jobs", params=params, model=wire.JobList,
                                 what="list jobs").jobs

    def _cancel_remote(self, job_id: str) -> bool:
        info = self.http.request("DELETE", wire.job_path(job_id), model=wire.JobInfo,
                                 what=f"cancel job {job_id}")
        if info.status == "CANCELLED":
            return True
        # running (stops at its next check point) or already finished: the local future must
        # now follow the server, so it can no longer be cancelled locally
        self._jobs.mark_running(job_id)
        return info.status == "RUNNING"

    def _finish(self, res: wire.JobResult, problem: IsingProblem) -> SampleSet:
        assert res.sampleset is not None
        ss = wire.decode_sampleset(res.sampleset, problem)
        j = res.job
        ss.info["remote_device"] = ss.info.get("device", j.device)
        ss.info["device"] = self.name
        ss.info["endpoint"] = self._cfg.endpoint
        ss.info["attempts"] = j.attempts
        if j.started_at is not None:
            ss.timing["queue_s"] = max(j.started_at - j.created_at, 0.0)
        ss.job_id = j.id
        return ss

    def close(self) -> None:
        """Wait for this device's outstanding jobs, then close its connections."""
        import concurrent.futures as cf

        if self._poller is not None:
            cf.wait(self._poller.outstanding())
            self._poller.close()
            self._poller = None
        if self._http is not None:
            self._http.close()
            self._http = None
        super().close()
