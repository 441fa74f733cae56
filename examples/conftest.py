"""Real servers started through xprocess: PostgreSQL, Redis and Python's http.server.

bash examples/run runs it, and tests/integration; README.rst's recipes are complete files of their own
(tests/test_readme.py runs them).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from xprocess import ProcessStarter

POSTGRES_WORK_MEM = "4MB"  # settings: change one and the next run restarts that server
REDIS_DATABASES = 16
HTTP_DIRECTORY = "."  # served by http_server, relative to its control directory


def need(program: str, how: str) -> str:
    found = shutil.which(program)
    if found is None:
        pytest.fail(f"{program} is not installed: {how}", pytrace=False)
    return found


# --- PostgreSQL ---


def postgres_bin(name: str) -> str:
    for directory in (os.environ.get("PG_BIN"), *sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)):
        if directory and (Path(directory) / name).exists():
            return str(Path(directory) / name)
    return need(name, "install PostgreSQL (apt-get install postgresql) or set PG_BIN to its bin directory")


def as_postgres_user(args: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run it as the postgres user (runuser) when we are root."""
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


@pytest.fixture(scope="session")
def postgres(xprocess):
    """A PostgreSQL server of its own: returns the connection keywords for psycopg."""

    class Postgres(ProcessStarter):
        pattern = "database system is ready to accept connections"
        timeout = 60
        terminate_on_interrupt = True

        @property
        def args(self):
            home = self.control_dir / "pg"  # the cluster: the postgres user's when we are root
            data = home / "data"
            if not (data / "PG_VERSION").exists():  # first run: create the cluster
                home.mkdir(mode=0o700, exist_ok=True)
                if os.geteuid() == 0:
                    # It runs as postgres, which must reach its directory through ours (0700).
                    for directory in (self.control_dir.parent, self.control_dir):
                        os.chmod(directory, 0o711)
                    shutil.chown(home, "postgres")
                initdb = [postgres_bin("initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"]
                subprocess.run(as_postgres_user(initdb), check=True, capture_output=True)
            return as_postgres_user(
                [postgres_bin("postgres"), "-D", str(data), "-h", "127.0.0.1", "-p", str(self.port),
                 "-k", "", "-c", f"work_mem={POSTGRES_WORK_MEM}"]  # TCP only: no socket file to go stale
            )  # fmt: skip

        def startup_check(self):  # also run before a reuse: a server that answers no query is restarted
            import psycopg

            try:
                with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", connect_timeout=2) as conn:
                    return conn.execute("select 1").fetchone() == (1,)
            except psycopg.Error:
                return False

    port = xprocess.ensure("postgres", Postgres).port
    return {"host": "127.0.0.1", "port": port, "user": "postgres", "dbname": "postgres"}


# --- Redis ---


@pytest.fixture(scope="session")
def redis_server(xprocess):
    """A Redis server of its own, without persistence: returns its port."""

    class Redis(ProcessStarter):
        pattern = "Ready to accept connections"
        timeout = 30

        @property
        def args(self):
            redis = need("redis-server", "apt-get install redis-server")
            return [redis, "--port", self.port, "--bind", "127.0.0.1", "--save", "", "--databases", REDIS_DATABASES]

        def startup_check(self):  # also run before a reuse: a server that stopped answering is restarted
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(7) == b"+PONG\r\n"

    return xprocess.ensure("redis", Redis).port


# --- Python's http.server ---


@pytest.fixture(scope="session")
def http_server(xprocess):
    """http.server, ready when it answers a GET: returns its port."""

    class Http(ProcessStarter):
        @property
        def args(self):
            return [sys.executable, "-m", "http.server", "-b", "127.0.0.1", "-d", HTTP_DIRECTORY, self.port]

        def startup_check(self):
            return self.http_ok("/")

    return xprocess.ensure("http", Http).port
