"""Every ```python block in docs/ runs (blocks of one page share a namespace, in order).

A block fenced as ```py is shown but not run: use it only for code that needs something the SDK
cannot have here (e.g. another vendor's package in a before/after example).
"""

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"
PAGES = sorted(p for p in DOCS.rglob("*.md") if "```python" in p.read_text())


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(DOCS)))
def test_doc_page_code_runs(page, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # pages may write files
    namespace = {"__name__": f"docs_{page.stem}"}
    for k, block in enumerate(re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)):
        exec(compile(block, f"{page.name}[block {k}]", "exec"), namespace)
