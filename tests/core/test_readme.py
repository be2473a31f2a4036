"""The README is a contract with new users: its commands and code must work."""

import re
import shlex
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"
CI = README.parent / ".ci" / "run"


def _bash_blocks(text):
    return re.findall(r"```bash\n(.*?)```", text, flags=re.S)


def test_readme_opens_with_exactly_two_setup_commands():
    first = _bash_blocks(README.read_text())[0]
    commands = [ln for ln in first.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    assert len(commands) == 2, commands
    assert "pip install torch==2.13.0" in commands[0] and "pip install torch==2.13.0" in commands[1]


def test_ci_runs_the_readme_test_command():
    first = _bash_blocks(README.read_text())[0]
    test_cmd = [ln for ln in first.splitlines() if "pytest" in ln][0].split("&&")[-1].strip()
    ci_lines = [ln.strip() for ln in CI.read_text().splitlines() if "pytest" in ln and not ln.startswith("#")]
    assert shlex.split(test_cmd) in [shlex.split(c) for c in ci_lines]


def test_readme_main_job_file_exists():
    first = _bash_blocks(README.read_text())[0]
    main_cmd = [ln for ln in first.splitlines() if ln.strip() and not ln.startswith("#")][0]
    last = main_cmd.split("&&")[-1]
    for token in shlex.split(last):
        if "/" in token and "." in token.rsplit("/", 1)[-1]:
            assert (README.parent / token).exists(), token


def test_readme_python_quick_start_runs(capsys):
    code = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)[0]
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out.splitlines()
    best, ground = (float(x) for x in out[0].split())
    assert best >= ground - 1e-9
