"""The server's job store, tokens and rate limiter, without HTTP."""

import threading

import pytest

from kpp_sdk import ConfigError
from kpp_sdk.cloud.auth import Principal, RateLimiter, TokenRegistry, parse_token_entries
from kpp_sdk.cloud.errors import IdempotencyConflict
from kpp_sdk.cloud.store import JobStore


@pytest.fixture()
def store(tmp_path):
    s = JobStore(tmp_path / "jobs.sqlite3", max_attempts=2)
    yield s
    s.close()


def _insert(store, key, owner="alice", request=b"{}", digest="h1"):
    return store.insert(owner=owner, idempotency_key=key, request_hash=digest, device="sa.cpu",
                        num_spins=4, num_reads=2, seed=1, request=request)


def test_the_same_idempotency_key_returns_the_same_job_and_a_different_request_conflicts(store):
    a, created_a = _insert(store, "key-00001")
    b, created_b = _insert(store, "key-00001")
    assert created_a and not created_b and a.id == b.id
    other, created = _insert(store, "key-00001", owner="bob")  # keys are per client
    assert created and other.id != a.id
    with pytest.raises(IdempotencyConflict, match=a.id):
        _insert(store, "key-00001", digest="h2")
    assert len(store.list("alice")) == 1


def test_concurrent_duplicate_submits_create_one_job(store):
    ids, barrier = [], threading.Barrier(8)

    def submit():
        barrier.wait()
        ids.append(_insert(store, "key-racing")[0].id)

    threads = [threading.Thread(target=submit) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(ids)) == 1 and len(store.list("alice")) == 1


def test_jobs_are_claimed_in_submission_order_with_their_request(store):
    rows = [_insert(store, f"key-{i:05d}", request=f'{{"i": {i}}}'.encode())[0] for i in range(3)]
    claimed = [store.claim_next() for _ in range(3)]
    assert [c.id for c in claimed] == [r.id for r in rows]
    assert [c.request for c in claimed] == [b'{"i": 0}', b'{"i": 1}', b'{"i": 2}']
    assert all(c.status == "RUNNING" and c.attempts == 1 for c in claimed)
    assert store.claim_next() is None


def test_a_job_is_finished_at_most_once_and_only_by_its_current_attempt(store):
    row, _ = _insert(store, "key-fence")
    first = store.claim_next()
    assert store.finish(row.id, first.attempts, "QUEUED")  # graceful shutdown: back in the queue
    second = store.claim_next()
    assert second.attempts == 1, "a graceful re-queue does not count as an attempt"
    store.recover()  # as after a crash: RUNNING -> QUEUED
    third = store.claim_next()
    assert third.attempts == 2
    assert not store.finish(row.id, second.attempts, "DONE", result=b"stale")
    assert store.finish(row.id, third.attempts, "DONE", result=b"fresh")
    assert not store.finish(row.id, third.attempts, "FAILED", error=("X", "late"))
    assert store.result_of(row.id, "alice") == b"fresh" and store.get(row.id).status == "DONE"


def test_recovery_requeues_running_jobs_cancels_requested_ones_and_fails_repeat_crashers(store):
    rerun, _ = _insert(store, "key-rerun")
    cancel, _ = _insert(store, "key-cancel")
    crasher, _ = _insert(store, "key-crash")
    for _ in range(3):
        store.claim_next()
    store.cancel(cancel.id, "alice")
    assert store.get(cancel.id).cancel_requested
    store.recover()
    assert store.get(rerun.id).status == "QUEUED" and store.get(cancel.id).status == "CANCELLED"
    store.claim_next()  # rerun
    store.claim_next()  # crasher, second start
    rows = {r.id: r for r in store.recover()}  # max_attempts = 2 reached for both
    assert rows[crasher.id].status == "FAILED" and "2 times" in rows[crasher.id].error_message


def test_cancel_of_a_queued_job_is_immediate_and_other_clients_cannot_cancel(store):
    row, _ = _insert(store, "key-00002")
    assert store.cancel(row.id, "mallory") is None
    assert store.get(row.id).status == "QUEUED"
    assert store.cancel(row.id, "alice").status == "CANCELLED"
    assert store.claim_next() is None
    assert store.cancel(row.id, "alice").status == "CANCELLED"  # idempotent


def test_one_server_per_store(tmp_path):
    a = JobStore(tmp_path / "s.sqlite3")
    b = JobStore(tmp_path / "s.sqlite3")
    a.lock()
    with pytest.raises(ConfigError, match="in use"):
        b.lock()
    a.close()
    b.lock()  # released with its holder
    b.close()


TOKEN = "A" * 20 + "-secret-value"


def test_tokens_are_parsed_and_identified_and_errors_never_show_them(tmp_path):
    entries = parse_token_entries(f"# comment\nalice {TOKEN}\nops {TOKEN}x role=admin rate=5; "
                                  f"ci {TOKEN}y burst=3", "test")
    reg = TokenRegistry(entries)
    assert reg.identify(TOKEN).name == "alice"
    assert reg.identify(TOKEN + "x") == Principal("ops", "admin", 5.0, None)
    assert reg.identify(TOKEN + "y").burst == 3.0
    for wrong in (None, "", TOKEN[:-1], TOKEN + "z", "Bearer " + TOKEN):
        assert reg.identify(wrong) is None
    assert TOKEN not in repr(reg)
    for bad, match in [(f"alice {TOKEN} role=root", "unknown option"), ("alice short", "at least"),
                       (f"alice {TOKEN}\nbob {TOKEN}", "reuses"),
                       (f"a {TOKEN}\na {TOKEN}x", "twice"),
                       (TOKEN, "expected")]:
        with pytest.raises(ConfigError, match=match) as info:
            parse_token_entries(bad, "test")
        assert TOKEN not in str(info.value)
    f = tmp_path / "tokens"
    f.write_text(f"alice {TOKEN}\n")
    f.chmod(0o644)
    reg = TokenRegistry.load(f, environ={"KPP_SERVER_TOKENS": f"env {TOKEN}e"})
    assert reg.identify(TOKEN + "e").name == "env" and len(reg) == 2
    assert not TokenRegistry.file_is_private(f)


def test_the_rate_limiter_allows_bursts_then_the_rate_and_says_how_long_to_wait():
    rl = RateLimiter(rate=2.0, burst=3)
    who = Principal("alice")
    assert [rl.check(who, now=0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert rl.check(who, now=0.0) == pytest.approx(0.5)
    assert rl.check(who, now=0.5) == 0.0  # one request refilled after 1/rate seconds
    assert rl.check(Principal("bob"), now=0.5) == 0.0  # buckets are per client
    assert RateLimiter(0).check(who) == 0.0  # 0: unlimited
    assert rl.check(Principal("vip", rate=0.0), now=0.5) == 0.0  # per-token override


# --- retention (issue 17, item 5) -------------------------------------------------------------


def _finished(store, key, size, finished_at, owner="alice"):
    from kpp_sdk.cloud.store import JobStore  # noqa: F401 - the fixture's class

    row, _ = store.insert(owner=owner, idempotency_key=key, request_hash="h", device="sa.cpu",
                          num_spins=4, num_reads=2, seed=1, request=b"q" * size)
    claimed = store.claim_next()
    assert claimed.id == row.id
    store.finish(row.id, claimed.attempts, "DONE", result=b"r" * size)
    con = store._con()
    with con:
        con.execute("UPDATE jobs SET finished_at = ? WHERE id = ?", (finished_at, row.id))
    return row.id


def test_retention_expires_old_jobs_and_keeps_tombstones(store):
    from kpp_sdk.cloud.store import TOMBSTONE_S, RetentionPolicy

    now = 1_000_000_000.0
    old = _finished(store, "key-old-01", 1000, now - 8 * 86_400)
    new = _finished(store, "key-new-01", 1000, now - 3600)
    queued, _ = _insert(store, "key-queued", request=b"z" * 1000)
    rep = store.purge(RetentionPolicy(max_age_s=7 * 86_400, max_bytes=None), now=now)
    assert rep.expired_by_age == 1 and rep.bytes_after == rep.bytes_before - 2000
    row = store.get(old)
    assert row.expired_at == now and row.status == "DONE"  # the tombstone keeps the state
    assert store.result_of(old, "alice") is None and store.request_of(old, "alice") == b""
    assert store.get(new).expired_at is None and store.result_of(new, "alice") == b"r" * 1000
    assert store.request_of(queued.id, "alice") == b"z" * 1000
    rep = store.purge(RetentionPolicy(max_age_s=7 * 86_400, max_bytes=None),
                      now=now + TOMBSTONE_S + 1)
    assert rep.tombstones_deleted == 1 and store.get(old) is None


def test_retention_by_size_drops_the_oldest_finished_jobs_first(store):
    from kpp_sdk.cloud.store import RetentionPolicy

    now = 1_000_000_000.0
    ids = [_finished(store, f"key-size-{k}", 10_000, now - 1000 + k) for k in range(5)]
    queued, _ = _insert(store, "key-queued", request=b"z" * 50_000)
    rep = store.purge(RetentionPolicy(max_age_s=None, max_bytes=100_000), now=now)
    assert rep.expired_by_size == 3 and rep.bytes_after <= 100_000
    assert [store.get(i).expired_at is not None for i in ids] == [True, True, True, False, False]
    assert store.get(queued.id).expired_at is None  # unfinished jobs are never dropped


def test_a_version_1_store_is_migrated_in_place(tmp_path):
    import sqlite3

    from kpp_sdk.cloud.store import JobStore

    path = tmp_path / "v1.sqlite3"
    s = JobStore(path)
    row, _ = _insert(s, "key-v1-0001")
    s.close()
    con = sqlite3.connect(path)
    with con:  # what a version-1 store looks like
        con.execute("ALTER TABLE jobs DROP COLUMN expired_at")
        con.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    con.close()
    s = JobStore(path)
    assert s.get(row.id).expired_at is None and s.get(row.id).status == "QUEUED"
    s.close()
