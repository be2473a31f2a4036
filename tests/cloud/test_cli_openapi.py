"""``kpp serve`` command-line errors, and docs/openapi.json kept in step with the models."""

import json
from pathlib import Path

import pytest

from kpp_sdk.cli import main

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_openapi_document_in_docs_is_up_to_date(server_extra):
    from kpp_sdk.cloud.server import openapi_document

    current = json.loads(json.dumps(openapi_document()))
    stored = json.loads((DOCS / "openapi.json").read_text())
    assert stored == current, ("docs/openapi.json is stale: regenerate it with "
                               "`kpp serve --openapi docs/openapi.json`")
    paths = current["paths"]
    assert {"/v1/jobs", "/v1/jobs/poll", "/v1/jobs/{job_id}/result", "/v1/devices"} <= set(paths)
    assert "HTTPBearer" in current["components"]["securitySchemes"]


def test_openapi_to_stdout(server_extra, capsys):
    assert main(["serve", "--openapi", "-"]) == 0
    assert json.loads(capsys.readouterr().out)["info"]["title"] == "kpp-sdk cloud API"


@pytest.mark.parametrize("args,message", [
    ([], "no API tokens"),
    (["--no-auth", "--host", "0.0.0.0"], "loopback"),
    (["--workers", "0"], "--workers"),
    (["--port", "70000"], "--port"),
    (["--tokens-file", "/nonexistent/tokens"], "does not exist"),
])
def test_kpp_serve_setup_errors_are_one_line(server_extra, monkeypatch, capsys, tmp_path, args,
                                             message):
    monkeypatch.delenv("KPP_SERVER_TOKENS", raising=False)
    assert main(["serve", "--store", str(tmp_path / "jobs.sqlite3"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err
