"""kpp validate: the emulator against measurements, written as a table, a summary and a figure."""

from __future__ import annotations

import json

import pytest

from kpp_sdk.cli import main


def test_validate_writes_table_summary_and_figure(tmp_path, capsys):
    out = tmp_path / "v"
    rc = main(["validate", "--profile", "ntt-2000", "--against", "hamerly2019", "--classes", "sk",
               "--max-n", "20", "--per-n", "2", "--runs", "40", "--out", str(out)])
    assert rc == 0
    base = out / "ntt-2000_vs_hamerly2019"
    rows = base.with_suffix(".tsv").read_text().splitlines()
    assert rows[0].split("\t") == ["instance", "class", "n", "hardware_runs", "hardware_p",
                                   "emulator_p"]
    assert len(rows) == 1 + 4  # N = 10, 20; 2 instances each
    summary = json.loads(base.with_suffix(".json").read_text())
    per_n = summary["classes"]["sk"]["per_n"]
    assert [r["n"] for r in per_n] == [10, 20]
    for r in per_n:  # the ratio lies in its own bootstrap interval
        lo, hi = r["ratio_interval"]
        assert lo <= r["ratio"] <= hi
    assert summary["classes"]["sk"]["exponential_floor"] >= 1.0
    assert "90% interval over instances" in base.with_suffix(".md").read_text()
    assert base.with_suffix(".png").stat().st_size > 10_000
    assert "median P hardware" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--against", "nowhere.tsv"], "no such measurement file"),
        (["--classes", "maxcut"], "not in the measurements"),
        (["--runs", "0"], "--runs must be >= 1"),
        (["--profile", "ntt2000"], "did you mean --profile ntt-2000"),
    ],
)
def test_bad_options_are_named(tmp_path, capsys, argv, words):
    rc = main(["validate", "--out", str(tmp_path / "v"), *argv])
    assert rc != 0
    assert words in capsys.readouterr().err


def test_validate_families_suite_writes_table_and_success_figure(tmp_path, capsys):
    out = tmp_path / "f"
    rc = main(["validate", "--profile", "qboson-550", "--suite", "families", "--families",
               "torus_pm1", "--feedback", "none", "--max-n", "100", "--runs", "20",
               "--out", str(out)])
    assert rc == 0
    rows = json.loads((out / "qboson-550_families.json").read_text())["rows"]
    assert [(r["family"], r["n"], r["feedback"]) for r in rows] == [("torus_pm1", 100, "none")]
    assert "| torus_pm1 | 100 | none |" in (out / "qboson-550_families.md").read_text()
    assert (out / "qboson-550_families_success.png").stat().st_size > 10_000


def test_validate_families_names_an_unknown_family(tmp_path, capsys):
    rc = main(["validate", "--suite", "families", "--families", "torus", "--out", str(tmp_path)])
    assert rc != 0
    assert "--families ['torus'] unknown" in capsys.readouterr().err


def test_validate_takes_profile_overrides(tmp_path, capsys):
    def median(out, *extra):
        rc = main(["validate", "--classes", "sk", "--max-n", "10", "--per-n", "4", "--runs", "100",
                   "--out", str(out), *extra])
        assert rc == 0
        summary = json.loads((out / "ntt-2000_vs_hamerly2019.json").read_text())
        return summary["overrides"], summary["classes"]["sk"]["per_n"][0]["emulator"]

    none, base = median(tmp_path / "a")
    assert none == {} and base > 0.2
    overrides, hot = median(tmp_path / "b", "-p", "sigma_add=0.4")
    assert overrides == {"sigma_add": 0.4}
    assert hot < base / 2  # much more excess noise: the ground state is found far less often


def test_a_bad_profile_override_is_named_before_any_work(tmp_path, capsys):
    rc = main(["validate", "-p", "sigma_ad=0.1", "--out", str(tmp_path / "v")])
    assert rc != 0
    err = capsys.readouterr().err
    assert "-p" in err and "sigma_ad" in err and "known parameter" in err
    assert not (tmp_path / "v").exists()
