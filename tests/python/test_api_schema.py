"""Schemathesis against the server's own OpenAPI document (`/api-doc/openapi.json`): requests
generated from it — examples, every documented boundary, random ones, and sequences that use
what one answer returns — each get an answer that is not a server error and that matches the
document. A server of its own, so that nothing it creates or deletes touches other tests; the
Hub offline, so that no request reaches the network."""
import os
import subprocess
import sys
from pathlib import Path

from conftest import MODEL, serving


def test_every_generated_request_is_answered_as_documented_and_never_with_a_server_error(tmp_path):
    env = dict(os.environ, TABAGENT_DATA_DIR=str(tmp_path), TABAGENT_HUB__OFFLINE="true",
               TABAGENT_ONNX__RUNTIME_LIBRARY=os.environ["TABAGENT_TEST_ORT_LIB"])
    subprocess.run([os.environ["TABAGENT_BIN"], "import", os.environ["TABAGENT_TEST_SMOLLM2_GGUF"],
                    "--name", MODEL], check=True, env=env, stdout=subprocess.DEVNULL)
    with serving(["--model", MODEL], env) as url:
        run = subprocess.run(
            [str(Path(sys.executable).parent / "schemathesis"), "run", f"{url}/api-doc/openapi.json",
             "--checks", "not_a_server_error,response_schema_conformance",
             "--max-examples", "20", "--seed", "1", "--request-timeout", "120", "--no-color",
             # An event stream that stays open for as long as the client listens: its own test
             # (documents.rs) reads it.
             "--exclude-path", "/v1/documents/events"],
            # Schemathesis keeps a cache in its working directory: the test's own, not the clone.
            capture_output=True, text=True, cwd=tmp_path)
    report = run.stdout + run.stderr
    # Schemathesis exits non-zero on any failure or error; the count says it ran at all.
    assert run.returncode == 0, report
    assert "generated" in report, report
