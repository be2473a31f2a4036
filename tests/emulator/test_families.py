"""kpp_sdk.validation.families: fresh seeded instance families and the validation suite
(issue 15 item 3). The suite's instances come from seeds no default was tuned on."""

import numpy as np
import pytest
import scipy.sparse as sp

from kpp_sdk.validation.families import (
    FAMILIES,
    format_table,
    make_instance,
    plot_success,
    run_suite,
    success_curves,
    suite_for,
)


def test_families_are_what_they_say():
    for name, fam in FAMILIES.items():
        n = fam.sizes[0]
        p = make_instance(name, n, seed=1)
        assert p.n == n
        J = p.J.toarray() if sp.issparse(p.J) else p.J
        off = J[~np.eye(n, dtype=bool)]
        density = np.count_nonzero(off) / off.size
        if name.startswith("sk"):
            assert density == 1.0
        elif name == "maxcut_dense":
            assert 0.45 < density < 0.55 and np.all(off <= 0)
        elif name.startswith("gset_6"):
            assert density == pytest.approx(0.06, rel=0.01)
        elif name.startswith("gset_05"):
            assert density == pytest.approx(0.005, rel=0.01)
        elif name == "torus_pm1":
            assert np.all(np.count_nonzero(J, axis=1) == 4)
        signed = name.endswith("pm1") or name in ("sk_pm1", "sk_field")
        if signed:
            assert set(np.unique(off[off != 0])) == {-1.0, 1.0}
        assert bool(np.any(p.h)) == (name == "sk_field")
    # seeded: the same instance everywhere, another seed another instance
    a, b = make_instance("sk_pm1", 100, 3), make_instance("sk_pm1", 100, 3)
    assert np.array_equal(a.J, b.J)
    assert not np.array_equal(a.J, make_instance("sk_pm1", 100, 4).J)
    with pytest.raises(ValueError, match="known: sk_pm1"):
        make_instance("nope", 10)


def test_suite_respects_the_profile_limits():
    q = suite_for("qboson-550")
    assert ("sk_pm1", 550) in q and all(n <= 550 for _, n in q)
    assert ("gset_6", 800) in suite_for("ntt-2000") and ("gset_6", 800) not in q


def test_suite_on_fresh_instances(tmp_path):
    """Cloud mode on fresh dense MAX-CUT and SK-with-fields instances (n = 100): within 1% of
    sa.cpu's best, with and without amplitude control."""
    rows = run_suite(
        "qboson-550", feedback=("none", "cac"), runs=300, families=["maxcut_dense", "sk_field"],
        seed=2027, sa_reads=16, sa_sweeps=2000, n_max=100,
    )
    assert len(rows) == 4
    for r in rows:
        assert r["within_1pct"], r
        assert r["cim_mean"] > r["cim_best"] and 0 <= r["p_best"] <= 1
    table = format_table(rows)
    assert table.count("\n") == len(rows) + 2 and "maxcut_dense" in table
    c = success_curves("qboson-550", round_trips=(50, 400), runs=100, families=["sk_field"],
                       best_known={("sk_field", 100): rows[-1]["best_known"]}, n_max=100)
    ps = c["curves"]["sk_field 100"]
    assert ps[0] <= ps[1] and ps[1] > 0  # longer runs succeed more often
    plot_success([c], tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 1000
