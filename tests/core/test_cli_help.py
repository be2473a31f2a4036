"""``kpp --help`` and ``kpp COMMAND --help`` read cleanly: no reST markup, every option has help,
each default is shown once, and the top-level help names every model ``kpp train`` trains."""

import argparse
import re

import pytest

from kpp_sdk.cli import build_parser, main

COMMANDS = ("devices", "sample", "serve", "train", "emulate", "validate", "bench")


def _subparsers(parser):
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))


def _help(argv, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--help"])
    assert exit_.value.code == 0
    return capsys.readouterr().out


def test_every_command_is_registered():
    assert set(_subparsers(build_parser()).choices) == set(COMMANDS)


def test_the_top_level_help_lists_every_command_and_every_model_kpp_train_trains(capsys,
                                                                              monkeypatch):
    text = _help([], capsys, monkeypatch)
    for command in COMMANDS:
        assert re.search(rf"^\s+{command}\s+\S", text, flags=re.MULTILINE), command
    train_line = " ".join(text.split("train", 1)[1].split("emulate")[0].split())
    for model in ("rbm", "bm", "dbn", "qgan", "qdiffusion"):
        assert re.search(rf"\b{model}\b", train_line), (model, train_line)


@pytest.mark.parametrize("command", COMMANDS)
def test_command_help_reads_cleanly(command, capsys, monkeypatch):
    text = _help([command], capsys, monkeypatch)
    for markup in ("``", ":func:", ":class:", ":mod:", ":meth:", ":data:", "%(", "(default: None)"):
        assert markup not in text, (command, markup)
    assert max(len(line) for line in text.splitlines()) <= 100
    parser = _subparsers(build_parser()).choices[command]
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        name = "/".join(action.option_strings) or action.dest
        assert action.help and action.help.strip(), f"{command}: {name} has no help"
        shown = parser._get_formatter()._expand_help(action) if action.help else ""
        assert shown.count("default") + shown.count("[") <= 1 + action.help.count("["), (
            f"{command}: {name} states its default twice: {shown!r}")


def test_train_help_spells_out_what_it_writes_and_how_to_resume(capsys, monkeypatch):
    text = _help(["train"], capsys, monkeypatch)
    for words in ("samples.npy", "checkpoint.pt is rewritten after every epoch", "Ctrl-C",
                  "status 130", "--resume continues"):
        assert words in text, words


def test_an_unknown_emulate_profile_is_answered_in_the_command_lines_spelling(capsys):
    from kpp_sdk.emulator import list_profiles

    assert main(["emulate", "kpp_sdk/data/cim_instances/MC50/MC50_N=10_1.npz",
                 "--profile", "qboson550"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "did you mean --profile qboson-550?" in err
    assert all(name in err for name in list_profiles())
    assert "profile=" not in err  # Python's spelling, not the command line's
