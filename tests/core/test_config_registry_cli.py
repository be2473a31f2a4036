import json
import logging
import subprocess
import sys

import numpy as np
import pytest

import kpp_sdk
from kpp_sdk import ConfigError, DeviceNotFoundError, IsingProblem, SampleSet
from kpp_sdk.cli import main
from kpp_sdk.config import Secret, load_config

TOKEN = "tok-SUPERSECRET-1234567890"


def test_config_precedence_arguments_over_env_over_file_over_defaults(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[default]\nendpoint = "http://file:1"\ntimeout = 5\n'
                   '[profile.team]\nendpoint = "http://team:2"\ntoken = "filetoken-abcdefgh"\n')
    env = {"KPP_CONFIG_FILE": str(cfg)}
    c = load_config(environ=env)
    assert c.endpoint == "http://file:1" and c.timeout == 5 and c.token is None
    c = load_config(environ={**env, "KPP_API_ENDPOINT": "http://env:3"})
    assert c.endpoint == "http://env:3" and c.sources["endpoint"] == "environment"
    c = load_config(endpoint="http://arg:4", environ={**env, "KPP_API_ENDPOINT": "http://env:3"})
    assert c.endpoint == "http://arg:4" and c.sources["endpoint"] == "argument"
    c = load_config(environ={**env, "KPP_PROFILE": "team"})
    assert c.endpoint == "http://team:2" and c.token.reveal() == "filetoken-abcdefgh"
    c = load_config(environ={})
    assert c.endpoint == "http://127.0.0.1:8000" and c.sources["endpoint"] == "default"


def test_config_errors_are_clear(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[default]\nendpont = 'x'\n")
    with pytest.raises(ConfigError, match="endpont"):
        load_config(environ={"KPP_CONFIG_FILE": str(cfg)})
    with pytest.raises(ConfigError, match="no profile 'nope'"):
        load_config(profile="nope", config_file=cfg.with_name("missing.toml")) if False else \
            load_config(profile="nope", environ={"KPP_CONFIG_FILE": str(cfg.with_name("ok.toml"))}) \
            if cfg.with_name("ok.toml").write_text("[default]\n") else None
    with pytest.raises(ConfigError, match="http"):
        load_config(endpoint="ftp://x", environ={})


def test_token_never_printed(caplog):
    c = load_config(token=TOKEN, environ={})
    s = c.token
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("kpp").info("config %s %r", c, s)
    for text in (repr(c), str(c), repr(s), str(s), caplog.text):
        assert TOKEN not in text and "SUPERSECRET" not in text
    assert s.reveal() == TOKEN and isinstance(s, Secret)


def test_registry_lists_sa_cpu_and_rejects_unknown_names():
    names = [d.name for d in kpp_sdk.list_devices()]
    assert "sa.cpu" in names
    assert kpp_sdk.get_device("sa.cpu").name == "sa.cpu"
    with pytest.raises(DeviceNotFoundError, match="sa.cpu"):
        kpp_sdk.get_device("sa.nope")


def test_cli_version_and_devices(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and kpp_sdk.__version__ in capsys.readouterr().out
    assert main(["devices"]) == 0
    out = capsys.readouterr().out
    assert "sa.cpu" in out and "max spins" in out


def test_cli_sample_writes_a_result_that_round_trips(tmp_path, capsys):
    p = IsingProblem.random_sk(10, seed=0, fields=True)
    p.save(tmp_path / "p.json")
    out = tmp_path / "r.json"
    rc = main(["sample", str(tmp_path / "p.json"), "--device", "sa.cpu", "--num-reads", "20",
               "--seed", "3", "--out", str(out), "-o", "num_sweeps=200"])
    assert rc == 0
    printed = capsys.readouterr().out
    ss = SampleSet.from_dict(json.loads(out.read_text()), p)
    assert ss.num_reads == 20 and ss.info["num_sweeps"] == 200
    assert f"{ss.best_energy:.6f}" in printed


@pytest.mark.parametrize("content,suffix,msg", [("3 2\n1 2 1\n", ".txt", "header says 2 edges"),
                                                 ("{", ".json", "not valid JSON")])
def test_cli_malformed_file_exits_nonzero_with_one_line_and_no_traceback(tmp_path, content, suffix, msg):
    bad = tmp_path / f"bad{suffix}"
    bad.write_text(content)
    r = subprocess.run([sys.executable, "-m", "kpp_sdk.cli", "sample", str(bad)],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and msg in r.stderr and "Traceback" not in r.stderr
    assert r.stdout == ""


def test_cli_unknown_option_and_device_are_one_line_errors(tmp_path, capsys):
    p = IsingProblem(np.zeros((3, 3)))
    p.save(tmp_path / "p.npz")
    assert main(["sample", str(tmp_path / "p.npz"), "-o", "nope=1"]) == 2
    assert "nope" in capsys.readouterr().err
    assert main(["sample", str(tmp_path / "p.npz"), "--device", "x.y"]) == 2
    assert "no device named" in capsys.readouterr().err


def test_client_settings_follow_the_precedence_and_are_checked(tmp_path):
    from kpp_sdk.config import CLIENT_SETTINGS, load_config

    f = tmp_path / "c.toml"
    f.write_text('[default]\nmax_outage = 42\nlong_poll = 0\n')
    cfg = load_config(config_file=f, environ={})
    assert cfg.max_outage == 42.0 and cfg.long_poll == 0.0 and cfg.max_retries == 5
    assert cfg.sources["max_outage"].startswith("file")
    cfg = load_config(config_file=f, environ={"KPP_MAX_OUTAGE": "7", "KPP_TIMEOUT": "3"})
    assert cfg.max_outage == 7.0 and cfg.timeout == 3.0 and cfg.sources["max_outage"] == "environment"
    cfg = load_config(config_file=f, environ={"KPP_MAX_OUTAGE": "7"}, max_outage=1.5)
    assert cfg.max_outage == 1.5 and cfg.sources["max_outage"] == "argument"
    for name, bad in (("max_retries", "2.5"), ("max_outage", "-1"), ("backoff_cap", "0"),
                      ("connect_timeout", "soon")):
        with pytest.raises(ConfigError, match=f"{name} must be .*KPP_{name.upper()}"):
            load_config(environ={f"KPP_{name.upper()}": bad})
    assert set(CLIENT_SETTINGS) <= {f.name for f in __import__("dataclasses").fields(cfg)}
