"""Run kaiwu-torch-plugin 0.3.0's own tests against kpp_sdk with only their import lines changed.

    python tools/check_kaiwu_plugin_compat.py                 # downloads the 0.3.0 sdist with pip
    python tools/check_kaiwu_plugin_compat.py --sdist PATH    # a kaiwu_torch_plugin-0.3.0.tar.gz
    python tools/check_kaiwu_plugin_compat.py --examples DIR  # also write the rewritten examples

The release is unpacked in a temporary folder outside the repository; every ``.py`` file (and
every notebook's code cells) gets its import lines rewritten (printed, for audit):
``kaiwu.torch_plugin[.<module>]`` -> ``kpp_sdk.models.kaiwu_compat`` and ``kaiwu[.<module>]`` ->
``kpp_sdk.kaiwu[.<module>]``, in ``import``/``from`` lines and ``importlib.import_module("...")``
calls. Nothing else changes. Then pytest runs the eight test files of the compatibility goal (the
usage-statistics tests are left out: the SDK collects none). Needs the ``test`` extra and network
access to the package index only when no ``--sdist`` is given.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

TEST_FILES = ["test_rbm.py", "test_bm.py", "test_gbrbm.py", "test_qvae.py",
              "test_energy_model.py", "test_qdiffusion_dummy.py", "test_qdiffusion_import.py",
              "test_feature_selection_wrapper.py"]

RULES = [
    (re.compile(r"^(\s*)from kaiwu\.torch_plugin(\.[\w.]+)? import "),
     r"\1from kpp_sdk.models.kaiwu_compat import "),
    (re.compile(r"^(\s*)import kaiwu\.torch_plugin(\.[\w.]+)?\s*$"),
     r"\1import kpp_sdk.models.kaiwu_compat"),
    (re.compile(r"^(\s*)from kaiwu(\.[\w.]+)? import "), r"\1from kpp_sdk.kaiwu\2 import "),
    (re.compile(r"^(\s*)import kaiwu as (\w+)"), r"\1import kpp_sdk.kaiwu as \2"),
    (re.compile(r"^(\s*)import kaiwu\.(?!torch_plugin)([\w.]+) as (\w+)"),
     r"\1import kpp_sdk.kaiwu.\2 as \3"),
    (re.compile(r"^(\s*)import kaiwu\s*$"), r"\1import kpp_sdk.kaiwu as kaiwu"),
    (re.compile(r"""import_module\((["'])kaiwu\.torch_plugin(\.[\w.]+)?\1\)"""),
     r'import_module("kpp_sdk.models.kaiwu_compat")'),
    (re.compile(r"""import_module\((["'])kaiwu(\.[\w.]+)?\1\)"""),
     r'import_module("kpp_sdk.kaiwu\2")'),
]


def rewrite(text: str, name: str) -> str:
    out = []
    for i, line in enumerate(text.splitlines(keepends=True), 1):
        new = line
        for pattern, replacement in RULES:
            new = pattern.sub(replacement, new)
        if new != line:
            print(f"{name}:{i}: {line.strip()}  ->  {new.strip()}")
        out.append(new)
    return "".join(out)


def rewrite_tree(root: Path) -> None:
    for path in sorted(root.rglob("*.py")):
        path.write_text(rewrite(path.read_text(), str(path.relative_to(root))))
    for path in sorted(root.rglob("*.ipynb")):
        nb = json.loads(path.read_text())
        for cell in nb["cells"]:
            if cell["cell_type"] == "code":
                cell["source"] = [rewrite(line, str(path.relative_to(root)))
                                  for line in cell["source"]]
        path.write_text(json.dumps(nb))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sdist", type=Path, help="kaiwu_torch_plugin-0.3.0.tar.gz")
    parser.add_argument("--examples", type=Path, help="write the rewritten examples here")
    args, pytest_args = parser.parse_known_args()
    with tempfile.TemporaryDirectory(prefix="kpp-compat-") as tmp:
        tmp = Path(tmp)
        sdist = args.sdist
        if sdist is None:
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps",
                            "--no-binary", ":all:", "kaiwu-torch-plugin==0.3.0", "-d", str(tmp)],
                           check=True)
            sdist = next(tmp.glob("kaiwu_torch_plugin-0.3.0.tar.gz"))
        with tarfile.open(sdist) as tar:
            tar.extractall(tmp, filter="data")
        release = tmp / "kaiwu_torch_plugin-0.3.0"
        tests = tmp / "tests"
        tests.mkdir()
        for name in TEST_FILES:
            (tests / name).write_text(rewrite((release / "tests" / name).read_text(), name))
        if args.examples is not None:
            import shutil

            shutil.copytree(release / "example", args.examples, dirs_exist_ok=True)
            rewrite_tree(args.examples)
        return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                               "-o", "addopts=", "--rootdir", str(tmp), *pytest_args,
                               *[str(tests / n) for n in TEST_FILES]], cwd=tmp).returncode


if __name__ == "__main__":
    sys.exit(main())
