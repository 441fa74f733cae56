"""The examples' real servers (PostgreSQL, Redis, http.server) through their whole cycle."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import alive, terminate_all

from xprocess import XProcessInfo

EXAMPLES = Path(__file__).parents[2] / "examples"


@pytest.fixture
def project():
    """The examples copied to a directory the postgres user can enter (tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix=f"xprocess-it-{os.getpid()}-"))
    path.chmod(0o755)
    for name in ("conftest.py", "test_servers.py", "pytest.ini"):
        shutil.copy(EXAMPLES / name, path)
    yield path
    terminate_all(path / ".xprocess")
    shutil.rmtree(path, ignore_errors=True)


def run(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=240,
    )


def ports(project: Path) -> dict[str, int]:
    """The port each server was started on (``ProcessStarter.port``, reported by ``XProcessInfo.port``)."""
    return {name: XProcessInfo(project / ".xprocess", name).port for name in ("http", "postgres", "redis")}


def port_is_free(port: int) -> bool:
    """Whether a server could listen on ``port`` (connections in TIME_WAIT do not stop it)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_full_cycle(project):
    first = run(project)
    assert first.returncode == 0, first.stdout + first.stderr
    for name in ("http", "postgres", "redis"):
        started = rf"^{name}: started in [\d.]+ s( after [\d.]+ s in its starter)?$"  # (initdb's seconds)
        assert re.search(started, first.stdout, re.M), first.stdout

    second = run(project)
    assert second.returncode == 0, second.stdout
    assert "xprocess: reused http, postgres, redis" in second.stdout, second.stdout

    conftest = project / "conftest.py"
    source = conftest.read_text()
    source = source.replace('POSTGRES_WORK_MEM = "4MB"', 'POSTGRES_WORK_MEM = "8MB"')
    source = source.replace("REDIS_DATABASES = 16", "REDIS_DATABASES = 8")
    source = source.replace('HTTP_DIRECTORY = "."', 'HTTP_DIRECTORY = ".."')
    conftest.write_text(source)
    third = run(project)
    assert third.returncode == 0, third.stdout
    for name in ("http", "postgres", "redis"):
        assert re.search(rf"^{name}: restarted in .* \(its configuration changed \(args\)\)$", third.stdout, re.M)

    show = run(project, "--xshow")
    assert show.returncode == 0
    assert len(re.findall(r"^(http|postgres|redis) +LIVE +\d+ ", show.stdout, re.M)) == 3, show.stdout

    in_use = ports(project)
    assert not any(port_is_free(p) for p in in_use.values())
    kill = run(project, "--xkill")
    assert kill.returncode == 0, kill.stdout
    assert len(re.findall(r"^\d+ \w+ TERMINATED$", kill.stdout, re.M)) == 3, kill.stdout
    assert all(port_is_free(p) for p in in_use.values()), in_use


def test_examples_under_xdist_from_a_cold_start(project):
    """Two workers ask for each server at once: one builds it (initdb for PostgreSQL), the other
    waits under the lock and reuses it."""
    first = run(project, "-n", "2")
    assert first.returncode == 0, first.stdout + first.stderr
    for name in ("http", "postgres", "redis"):
        started = rf"^{name}: started in [\d.]+ s( after [\d.]+ s in its starter)?$"  # (initdb's seconds)
        assert re.search(started, first.stdout, re.M), first.stdout


def test_server_killed_between_runs_is_restarted_and_its_log_kept(project):
    assert run(project, "-k", "redis").returncode == 0
    pid = XProcessInfo(project / ".xprocess", "redis").pid
    os.kill(pid, signal.SIGKILL)
    again = run(project, "-k", "redis")
    assert again.returncode == 0, again.stdout
    assert "redis: restarted in" in again.stdout and "(it had stopped)" in again.stdout
    old_log = (project / ".xprocess" / "redis" / "xprocess.log.1").read_text()
    assert "Ready to accept connections" in old_log
    assert not alive(pid)


def test_postgres_tree_ends_through_its_runuser_wrapper(project):
    assert run(project, "-k", "postgres").returncode == 0
    import psutil

    pid = XProcessInfo(project / ".xprocess", "postgres").pid
    tree = [pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))]
    assert len(tree) > 2  # wrapper, postmaster, its workers
    kill = run(project, "--xkill", "postgres")
    assert kill.returncode == 0
    assert not any(alive(p) for p in tree)
