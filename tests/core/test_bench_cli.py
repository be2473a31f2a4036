"""``kpp bench`` and the benchmark suite: metrics, instances, peer conversions, the report."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest

import kpp_sdk
from kpp_sdk import IsingProblem
from kpp_sdk.bench import suite as bm
from kpp_sdk.cli import main
from kpp_sdk.errors import InvalidOptionError
from kpp_sdk.exact import ground_state

PEERS = ("dwave-samplers SA", "openjij SA", "simulated-bifurcation bSB", "cim-optimizer CAC")


def _run(capsys, *argv):
    code = main(["bench", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


# --- metrics ------------------------------------------------------------------------------------

def test_tts99_is_t_ln001_over_ln1mp_with_the_edge_cases():
    assert bm.tts99(0.2, 1.0) == 0.2
    assert bm.tts99(0.2, 0.0) == math.inf
    assert bm.tts99(1.0, 0.5) == pytest.approx(math.log(0.01) / math.log(0.5))  # 6.64 reads
    assert bm.tts99(1.0, 0.99) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="p must be in"):
        bm.tts99(1.0, 1.5)


def test_success_probability_counts_reads_at_or_below_the_target():
    e = np.array([-10.0, -10.0, -9.0, -11.0])
    assert bm.success_probability(e, -10.0) == 0.75
    assert bm.success_probability(e, -10.0 - 1e-12) == 0.75  # within the tolerance
    assert bm.success_probability(e, -12.0) == 0.0


def test_energy_at_time_is_the_best_rung_that_finished_within_the_budget():
    rungs = [bm.Rung(10, 4, 0, 0.1, np.array([-3.0, -1.0])),
             bm.Rung(100, 4, 1, 0.9, np.array([-5.0, -4.0])),
             bm.Rung(1000, 4, 2, 3.0, np.array([-7.0, -7.0]))]
    assert bm.energy_at_time(rungs, 1.0) == -5.0
    assert bm.energy_at_time(rungs, 10.0) == -7.0
    assert bm.energy_at_time(rungs, 0.05) is None
    m = bm.Outcome("x", "y", "ok", rungs=rungs).metrics(-7.0, 1.0)
    assert m["p_success"] == 1.0 and m["tts99_s"] == pytest.approx(3.0 / 4)
    assert m["throughput"] == pytest.approx(4 / 3.0) and m["best"] == -7.0


# --- instances ----------------------------------------------------------------------------------

def test_random_3_regular_maxcut_is_a_simple_3_regular_graph_with_J_equal_minus_W():
    p = bm.random_regular_maxcut(200, 3, seed=5)
    W = -p.sparse_J()
    assert p.is_sparse and set(np.unique(W.data)) == {1.0}
    assert (abs(W - W.T)).nnz == 0 and W.diagonal().sum() == 0
    assert np.all(np.asarray(W.sum(axis=1)).ravel() == 3)
    with pytest.raises(InvalidOptionError, match="3-regular"):
        bm.random_regular_maxcut(7, 3)


def test_gset_target_energy_is_the_best_known_cut_through_cut_equals_total_minus_e_over_2():
    inst = bm._gset("G1")
    W = -inst.problem.sparse_J()
    total = W.sum() / 2
    assert inst.target == total - 2 * 11624
    s = np.random.default_rng(0).choice(np.array([-1, 1], dtype=np.int8), size=inst.problem.n)
    rows, cols = W.nonzero()
    cut = np.sum((s[rows] != s[cols]) * np.asarray(W[rows, cols]).ravel()) / 2
    assert cut == (total - inst.problem.energy(s)) / 2


def test_shipped_targets_are_ground_energies_checked_by_enumeration():
    inst, = bm.suite_instances("smoke")
    assert inst.target == ground_state(inst.problem)[0]


def test_unknown_suite_is_an_error_naming_the_suites():
    with pytest.raises(InvalidOptionError, match="quick"):
        bm.suite_instances("huge")


# --- peers: conventions are exact ---------------------------------------------------------------

def _random_spins(n, k=16, seed=0):
    return np.random.default_rng(seed).choice(np.array([-1, 1], dtype=np.int8), size=(k, n))


@pytest.mark.parametrize("sparse", [False, True])
def test_dimod_bqm_of_a_problem_has_the_kpp_energy(sparse):
    pytest.importorskip("dimod")
    p = IsingProblem.random_sk(12, seed=1, fields=True)
    if sparse:
        p = p.to_sparse()
    s = _random_spins(12)
    np.testing.assert_allclose(bm._to_bqm(p).energies((s, range(12))), p.energy(s), atol=1e-9)


def test_spins_from_dimod_put_columns_back_in_variable_order_and_expand_counts():
    dimod = pytest.importorskip("dimod")
    s = _random_spins(5, k=3)
    ss = dimod.SampleSet.from_samples((s[:, ::-1], [4, 3, 2, 1, 0]), dimod.SPIN,
                                      energy=np.zeros(3), num_occurrences=[1, 2, 1])
    out = bm._spins_from_dimod(ss, 5)
    np.testing.assert_array_equal(out, s[[0, 1, 1, 2]])


def test_simulated_bifurcation_polynomial_has_the_kpp_energy_without_offset():
    torch = pytest.importorskip("torch")

    solver = bm._peer_sb(1)
    if not solver.available:
        pytest.skip(solver.reason)
    p = IsingProblem.random_sk(10, seed=2, fields=True)
    Q, l = solver.prepare(p)
    s = torch.as_tensor(_random_spins(10), dtype=torch.float32)
    ours = p.energy(s.numpy().astype(np.int8)) - p.offset
    theirs = torch.einsum("ki,ij,kj->k", s, Q, s) + s @ l
    np.testing.assert_allclose(theirs.numpy(), ours, rtol=1e-5)


def test_every_registered_device_and_every_peer_is_a_solver_with_a_reason_when_unavailable():
    solvers = bm.available_solvers(threads=1)
    names = [s.name for s in solvers]
    assert set(names) >= {d.name for d in kpp_sdk.list_devices()} | set(PEERS)
    for s in solvers:
        assert s.available or ("install" in s.reason or "needs" in s.reason), s


# --- the command --------------------------------------------------------------------------------

def test_kpp_bench_writes_table_json_and_plot_with_rows_for_unavailable_devices(
        tmp_path, capsys):
    unavailable = [d.name for d in kpp_sdk.list_devices() if not d.available]
    chosen = ["sa.cpu", *unavailable]
    code, out, err = _run(capsys, "--suite", "smoke", "--out", str(tmp_path / "b"),
                          "--solvers", ",".join(chosen), "--threads", "1", "--quiet")
    assert code == 0, err
    md = (tmp_path / "b" / "results.md").read_text()
    assert md in out
    for name in chosen:
        assert sum(line.startswith(f"| {name} |") for line in md.splitlines()) == 2  # 2 tables
    for name in unavailable:
        row = next(line for line in md.splitlines() if line.startswith(f"| {name} | -"))
        assert "skipped:" in row and "install" in row
    png = (tmp_path / "b" / "energy_vs_time.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    data = json.loads((tmp_path / "b" / "results.json").read_text())
    inst, = bm.suite_instances("smoke")
    sa, = [o for o in data["outcomes"] if o["solver"] == "sa.cpu"]
    rung, = sa["rungs"]
    assert len(rung["energies"]) == rung["num_reads"] == 20
    # the recorded energies are the problem's energies of what sa.cpu returns for that seed
    again = kpp_sdk.get_device("sa.cpu").sample(inst.problem, num_reads=20, seed=rung["seed"],
                                                num_sweeps=rung["effort"], num_threads=1)
    assert sorted(rung["energies"]) == sorted(again.energies.tolist())
    assert data["targets"][inst.name] == ground_state(inst.problem)[0]
    assert f"| sa.cpu | 20 sweeps | {min(rung['energies']):.6g} |" in md
    # CPU time and threads are recorded; sa.cpu's ratios to itself are 1 (it reaches the ground)
    assert 0 < rung["cpu_seconds"] and 0 < rung["seconds"]
    assert next(s for s in data["solvers"] if s["name"] == "sa.cpu")["threads"] == 1
    assert f"| sa.cpu | device | {kpp_sdk.__version__} | 1 | available |" in md
    row = next(line for line in md.splitlines() if line.startswith("| sa.cpu | 20 sweeps"))
    assert [c.strip() for c in row.split("|")].count("1.00x") == 2, row


def test_ratio_format_says_when_there_is_no_ratio():
    assert bm._fmt_ratio(2.0, 0.5) == "4.00x"
    assert bm._fmt_ratio(math.inf, 0.5) == "inf"
    assert bm._fmt_ratio(1.0, math.inf) == bm._fmt_ratio(None, 1.0) == "-"


def _report_with_times(times_by_instance: dict) -> dict:
    """A report whose rungs take the given wall times (and reach far from the target)."""
    insts, outcomes, solvers = [], [], [bm.Solver("a", "peer", True), bm.Solver("b", "peer", True)]
    for k, (name, times) in enumerate(times_by_instance.items()):
        insts.append(bm.Instance(name, IsingProblem.random_sk(6, seed=k), -100.0, "ground"))
        for j, solver in enumerate(solvers):
            o = bm.Outcome(solver.name, name, "ok")
            for r, t in enumerate(times):
                gap = 3 * 10.0 ** -(r + j)  # from 300 % of the target down to 0.03 %
                energies = np.array([-100.0 * (1 - gap), -100.0 * (1 - gap / 10), -100.0])
                o.rungs.append(bm.Rung(10 ** r, 3, 0, t, energies, None, t))
            outcomes.append(o)
    return {"instances": insts, "solvers": solvers, "outcomes": outcomes,
            "targets": {i.name: i.target for i in insts}}


def test_plot_keeps_every_point_on_its_panel_and_tick_labels_apart():
    pytest.importorskip("matplotlib")
    # one instance whose rungs span less than a decade (the n=1000 panel before: minor-tick
    # labels "2x10^0 3x10^0 ..." ran into each other), one spanning five decades
    fig = bm.plot_figure(_report_with_times({"narrow": [2.0, 3.1, 8.5],
                                             "wide": [1e-3, 0.4, 95.0]}))
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    panels = [ax for ax in fig.axes if ax.lines]
    assert len(panels) == 2
    for ax in panels:
        (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
        for line in (ln for ln in ax.lines if ln.get_transform() is ax.transData):  # not axhline
            x, y = (np.asarray(v, dtype=float) for v in line.get_data())
            assert np.all((x0 <= x) & (x <= x1) & (y0 <= y) & (y <= y1)), ax.get_title()
        labels = [t for t in ax.get_xticklabels() if t.get_text() and x0 <= t.get_position()[0] <= x1]
        assert len(labels) >= 2
        boxes = sorted((t.get_window_extent(renderer) for t in labels), key=lambda b: b.x0)
        assert all(a.x1 < b.x0 for a, b in itertools.pairwise(boxes)), ax.get_title()
    legend = {t.get_text() for t in fig.legends[0].get_texts()}
    assert {"a", "b", "mean of the reads", "best read", "target"} <= legend


def test_unknown_solver_fails_before_any_work_naming_the_known_ones(tmp_path, capsys):
    code, _, err = _run(capsys, "--solvers", "sa.cpu,annealer9000", "--out",
                          str(tmp_path / "never"))
    assert code == 2
    assert "annealer9000" in err and "sa.cpu" in err and "dwave-samplers SA" in err
    assert not (tmp_path / "never").exists()


def test_out_that_is_a_file_is_rejected(tmp_path, capsys):
    f = tmp_path / "file.txt"
    f.write_text("x")
    code, _, err = _run(capsys, "--out", str(f))
    assert code == 2 and "is a file" in err


@pytest.mark.slow
def test_smoke_suite_every_available_solver_reaches_the_ground_of_mc50_n10(tmp_path, capsys):
    code, _, err = _run(capsys, "--suite", "smoke", "--out", str(tmp_path), "--quiet")
    assert code == 0, err
    data = json.loads((tmp_path / "results.json").read_text())
    target = data["targets"]["MC50 n=10 #1"]
    available = {s["name"] for s in data["solvers"] if s["available"]}
    ran = {o["solver"]: o for o in data["outcomes"]}
    assert set(ran) == {s["name"] for s in data["solvers"]}
    for name in available:
        o = ran[name]
        assert o["status"] == "ok", o
        assert min(min(r["energies"]) for r in o["rungs"]) == target, name


def test_peer_reads_are_independent_draws_not_copies_of_one_read():
    """A seeded run must still give every read its own stream (openjij 0.12 with a seed does
    not, which is why the suite runs it unseeded)."""
    p = kpp_sdk.IsingProblem.random_sk(60, seed=4)
    checked = 0
    for solver in bm.available_solvers(threads=1):
        # cim-optimizer takes ~10 s to import (matplotlib, bohb, statsmodels): slow smoke test only
        if solver.kind != "peer" or not solver.available or "cim-optimizer" in solver.name:
            continue
        effort = solver.efforts["smoke"][0]
        spins = solver.run(solver.prepare(p), effort, 8, 11)
        assert spins.shape == (8, 60) and set(np.unique(spins)) <= {-1, 1}
        assert len(np.unique(spins, axis=0)) > 1, solver.name
        checked += 1
    if not checked:
        pytest.skip("no peer installed")
