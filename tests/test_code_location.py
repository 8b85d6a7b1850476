"""The code location loads: `dagster definitions validate`, `dg check defs`, a live GraphQL."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request

import pytest

from tests.conftest import REPO_ROOT, VENV_BIN, free_port, subprocess_env


@pytest.fixture
def dagster_home(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((REPO_ROOT / "dagster.yaml").read_text())
    return home


def _load(dagster_home, *command: str) -> str:
    """Run a Dagster CLI command in the repo root; its output, after asserting it succeeded."""
    result = subprocess.run(
        [str(VENV_BIN / command[0]), *command[1:]],
        cwd=REPO_ROOT,
        env=subprocess_env(DAGSTER_HOME=str(dagster_home)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def test_definitions_validate(dagster_home):
    _load(dagster_home, "dagster", "definitions", "validate", "-w", "workspace.yaml")


def test_dg_check_defs_loads_the_same_code_location(dagster_home):
    # Dagster 1.13 points users to `dg`; pyproject.toml's [tool.dg] aims it at our root.
    output = _load(dagster_home, "dg", "check", "defs", "--verbose")
    assert "All definitions loaded successfully" in output


def _graphql(port: int, query: str) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


LOCATIONS_QUERY = """
{
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        locationOrLoadError {
          __typename
          ... on PythonError { message }
          ... on RepositoryLocation { repositories { name jobs { name } } }
        }
      }
    }
  }
}
"""


def test_webserver_serves_the_code_location_without_errors(dagster_home):
    port = free_port()
    command = [str(VENV_BIN / "dagster-webserver"), "-w", "workspace.yaml"]
    server = subprocess.Popen(
        [*command, "-h", "127.0.0.1", "-p", str(port)],
        cwd=REPO_ROOT,
        env=subprocess_env(DAGSTER_HOME=str(dagster_home)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=5):
                    break
            except OSError:
                assert server.poll() is None, f"webserver exited: {server.stderr.read()}"
                assert time.monotonic() < deadline, "webserver did not come up in 180 s"
                time.sleep(1)
        payload = _graphql(port, LOCATIONS_QUERY)
        assert "errors" not in payload, payload
        workspace = payload["data"]["workspaceOrError"]
        assert workspace["__typename"] == "Workspace"
        entries = {e["name"]: e["locationOrLoadError"] for e in workspace["locationEntries"]}
        assert entries["gpu_analysis"]["__typename"] == "RepositoryLocation", entries
    finally:
        server.terminate()
        server.wait(timeout=30)
