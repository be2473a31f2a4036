"""Every command line of README.md and docs/ (```bash blocks) runs as written, at small sizes.

A ``kpp`` command runs in this process with a few options appended that make it quick (argparse
keeps the last value given, so ``--epochs 10 ... --epochs 1`` trains one epoch); ``kpp serve``
starts as a real server process on a free port and must answer ``/v1/health``; ``python -c``
lines run in a shell; a ``python benchmarks/...`` line (minutes of work, bench extras) is checked
for its script and flags through the script's ``--help``. Installing and running the test suite (``pip``, ``python -m venv``,
``pytest``) is the set-up that CI runs (tests/core/test_readme.py keeps the README's in step with
it). The commands of one page run in order in one folder, so a later line may use an earlier
one's output (``--resume runs/sa/checkpoint.pt``); the shipped data files are found as in a
source checkout.
"""

import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from kpp_sdk.cli import main

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
SETUP = ("pip install", "python -m venv", ". .venv/bin/activate", "python -m pytest", "pytest ")

#: What each command gets appended to run in seconds: the same options for every line of a
#: page, so that a ``--resume`` line matches the run that wrote its checkpoint.
SMALL = {
    "train": ["--epochs", "1", "--batch-size", "120", "--num-reads", "12", "--ais-chains", "8",
              "--ais-betas", "30", "--sample-sweeps", "10", "--finetune-epochs", "1",
              "--steps", "3", "--energy-steps", "2", "--eval-sequences", "8",
              "--eval-samples", "2", "--no-progress"],
    "emulate": ["--runs", "16", "--round-trips", "100"],
    "bench": ["--suite", "smoke", "--quiet"],
    "validate": ["--max-n", "100", "--per-n", "1", "--runs", "20", "--families", "torus_pm1",
                 "--feedback", "none"],
}


def _commands_in(text: str) -> list[str]:
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL):
        for line in block.splitlines():
            line = line.split(" # ")[0].strip()
            if line and not line.startswith("#"):
                lines += [part.strip() for part in line.split("&&")]
    return lines


def _commands(page: Path) -> list[str]:
    return _commands_in(page.read_text())


PAGES_WITH_COMMANDS = [p for p in PAGES if _commands(p)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(words: list[str], cwd: Path) -> None:
    port = _free_port()
    cmd = [sys.executable, "-c", "import sys; from kpp_sdk.cli import main; sys.exit(main())",
           *words[1:], "--port", str(port)]
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, proc.communicate()[0].decode()[-2000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/health", timeout=2) as r:
                    assert r.status == 200
                    return
            except OSError:
                assert time.monotonic() < deadline, "kpp serve did not answer within 90 s"
                time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:  # pragma: no cover - reported by the assertion
            proc.kill()
            raise


def _run(line: str, cwd: Path, capsys) -> None:
    words = shlex.split(line)
    if words[0] == "kpp" and words[1:2] == ["serve"]:
        _serve(words, cwd)
        return
    if words[0] == "kpp":
        argv = words[1:] + SMALL.get(words[1] if len(words) > 1 else "", [])
        try:
            code = main(argv)
        except SystemExit as exc:  # --version, --help
            code = exc.code
        out = capsys.readouterr()
        assert code == 0, f"{line}\n{out.err[-2000:]}"
        return
    if words[0] == "python" and words[1].startswith("benchmarks/"):
        # a benchmark runs for minutes and may need the bench extras: check that the script
        # exists and knows every flag the line uses (its --help is quick and imports nothing
        # heavy), not the benchmark itself
        out = subprocess.run([sys.executable, words[1], "--help"], cwd=ROOT, check=True,
                             capture_output=True, text=True).stdout
        for flag in (w.split("=")[0] for w in words[2:] if w.startswith("--")):
            assert flag in out, f"{line}: {words[1]} has no flag {flag}"
        return
    if words[0] == "python" and words[1] == "-c" or words[0] == "chmod":
        subprocess.run(line.replace("python", shlex.quote(sys.executable), 1), shell=True,
                       cwd=cwd, check=True)
        return
    raise AssertionError(f"a command the docs check does not know how to run: {line!r}")


@pytest.mark.parametrize("page", PAGES_WITH_COMMANDS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_command_of_the_page_runs_as_written(page, tmp_path, monkeypatch, capsys):
    (tmp_path / "kpp_sdk").symlink_to(ROOT / "kpp_sdk")  # the shipped data, as in a checkout
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "100")
    ran = 0
    for line in _commands(page):
        if line.startswith(SETUP):
            continue
        _run(line, tmp_path, capsys)
        ran += 1
    assert ran, f"{page.name}: only set-up commands"


def test_the_readme_command_line_section_shows_every_command():
    text = ROOT.joinpath("README.md").read_text()
    section = text.split("## Command line", 1)[1].split("\n## ", 1)[0]
    shown = {shlex.split(c)[1] for c in _commands_in(section) if c.startswith("kpp ")}
    assert shown >= {"devices", "sample", "emulate", "train", "bench", "serve"}
