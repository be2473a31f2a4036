"""Machine timing: round-trip time, device time of a task, FIFO queue (simpy)."""

import pytest
from kpp_sdk.emulator import SpinLimitError, Task, device_time, get_profile, simulate_queue
from kpp_sdk.emulator.timing import check_slots


def test_round_trip_and_device_time():
    q = get_profile("qboson-550")
    t_rt = 1.468 * 1000.0 / 299_792_458.0
    assert q.round_trip_time_s == pytest.approx(t_rt)
    assert q.round_trip_time_s == pytest.approx(4.90e-6, abs=0.01e-6)
    assert q.pulse_slots == 4896
    expected = q.task_overhead_s + 2000 * (1000 + q.reset_round_trips) * t_rt
    assert device_time(q, 550, 2000, 1000) == pytest.approx(expected)
    assert device_time(q, 550, 2000, 1000, include_overhead=False) == pytest.approx(
        expected - q.task_overhead_s
    )
    assert check_slots(q, 550, has_field=True) == 4896 - 551 - q.reserved_slots


def test_device_time_rejects_too_large():
    with pytest.raises(SpinLimitError):
        device_time(get_profile("qboson-550"), 551, 10, 100)


def test_fifo_queue():
    q = get_profile("qboson-550")
    tasks = [
        Task("a", n_spins=100, runs=1000, round_trips=1000, submit_time=0.0),
        Task("b", n_spins=550, runs=2000, round_trips=1000, submit_time=0.1),
        Task("c", n_spins=10, runs=10, round_trips=100, submit_time=0.2),
        Task("late", n_spins=10, runs=10, round_trips=100, submit_time=100.0),
    ]
    out = simulate_queue(tasks, q)
    d = [device_time(q, t.n_spins, t.runs, t.round_trips) for t in tasks]
    a, b, c, late = out
    assert a.start == 0.0 and a.end == pytest.approx(d[0])
    assert b.start == pytest.approx(a.end) and b.queue_wait == pytest.approx(a.end - 0.1)
    assert c.start == pytest.approx(b.end) and c.end == pytest.approx(b.end + d[2])
    assert late.queue_wait == 0.0 and late.start == 100.0
    for rec, dt in zip(out, d):
        assert rec.device_time == pytest.approx(dt)
    # per-run events give the same schedule
    out2 = simulate_queue(tasks[:2], q, per_run_events=True)
    assert out2[1].end == pytest.approx(b.end)


def test_queue_rejects_task_too_large():
    with pytest.raises(SpinLimitError):
        simulate_queue([Task("x", n_spins=600)], get_profile("qboson-550"))


def test_ntt2000_runs_floor_2000_over_n_copies_per_shot():
    from kpp_sdk.emulator.timing import copies_per_shot

    ntt = get_profile("ntt-2000")
    assert copies_per_shot(ntt, 100) == 20 and copies_per_shot(ntt, 150) == 13
    assert copies_per_shot(ntt, 100, has_field=True) == 19
    shot = (ntt.cim.round_trips + ntt.reset_round_trips) * ntt.round_trip_time_s
    # 2000 runs of N = 100: 100 shots of the ring
    assert device_time(ntt, 100, 2000, include_overhead=False) == pytest.approx(100 * shot)
    assert device_time(ntt, 100, 21, include_overhead=False) == pytest.approx(2 * shot)
    q = get_profile("qboson-550")
    assert copies_per_shot(q, 100) == 1
    assert device_time(q, 100, 2000, include_overhead=False) == pytest.approx(
        2000 * (q.cim.round_trips + q.reset_round_trips) * q.round_trip_time_s)


def test_the_queue_model_counts_shots_like_device_time():
    ntt = get_profile("ntt-2000")
    for per_run in (False, True):
        (t,) = simulate_queue([Task("a", 100, runs=2000)], ntt, per_run_events=per_run)
        assert t.device_time == pytest.approx(device_time(ntt, 100, 2000))
