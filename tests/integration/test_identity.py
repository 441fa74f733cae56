"""Identity that survives what real servers and real users do (issue 18), with the examples'
real PostgreSQL, Redis and http.server plus nginx, which all rewrite their title (and so hide
their environment) except http.server."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import psutil
import pytest
from conftest import alive, kill_writing_under, terminate_all
from test_servers import EXAMPLES, run

import xprocess
from xprocess import XProcessInfo

NGINX = """

@pytest.fixture(scope="session")
def nginx(xprocess):
    class Nginx(ProcessStarter):
        @property
        def args(self):
            d = self.control_dir
            conf = d / "nginx.conf"
            conf.write_text(
                f"daemon off; pid {d}/nginx.pid; error_log stderr notice; events {{}}\\n"
                f"http {{ access_log off; client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;\\n"
                f"fastcgi_temp_path {d}/fastcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\\n"
                f"server {{ listen 127.0.0.1:{self.port}; location / {{ return 200 'ok'; }} }} }}\\n"
            )
            return [need("nginx", "apt-get install nginx"), "-e", "stderr", "-p", str(d), "-c", str(conf)]

        def startup_check(self):
            return self.http_ok("/")

    return xprocess.ensure("nginx", Nginx).port
"""

TEST_NGINX = """
import urllib.request

def test_nginx(nginx):
    assert urllib.request.urlopen(f"http://127.0.0.1:{nginx}/").read() == b"ok"
"""

NAMES = ("http", "nginx", "postgres", "redis")


@pytest.fixture
def project():
    """The examples plus nginx, in a directory the postgres user can enter."""
    if shutil.which("nginx") is None and not os.environ.get("CI"):
        pytest.skip("nginx is not installed (apt-get install nginx)")
    base = Path(tempfile.mkdtemp(prefix=f"xprocess-it-{os.getpid()}-"))
    base.chmod(0o755)
    path = base / "project"
    path.mkdir()
    path.chmod(0o755)
    for name in ("conftest.py", "test_servers.py", "pytest.ini"):
        shutil.copy(EXAMPLES / name, path)
    with open(path / "conftest.py", "a") as f:
        f.write(NGINX)
    (path / "test_nginx.py").write_text(TEST_NGINX)
    yield path
    for project in base.iterdir():  # the project, under whatever name a test gave it
        terminate_all(project / ".xprocess", NAMES)  # what a wiped state left too
        kill_writing_under(project)  # and, should the plugin be broken on purpose, anything left
    shutil.rmtree(base, ignore_errors=True)


def trees(project: Path) -> dict[str, list[int]]:
    """The pids of each server and its descendants."""
    found = {}
    for name in NAMES:
        pid = XProcessInfo(project / ".xprocess", name).pid
        assert pid is not None and alive(pid), name
        found[name] = [pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))]
    return found


def writing_to_logs_of(project: Path, name: str) -> list[int]:
    """The processes whose stdout or stderr is a log of ``name`` in ``project`` (removed or not)."""
    prefix = f"{project.resolve()}/.xprocess/{name}/xprocess.log"
    pids = []
    for proc in psutil.process_iter():
        for fd in (1, 2):
            try:
                if os.readlink(f"/proc/{proc.pid}/fd/{fd}").startswith(prefix) and alive(proc.pid):
                    pids.append(proc.pid)
                    break
            except OSError:
                continue
    return pids


@pytest.mark.skipif(
    not xprocess._PROC_FS,
    reason="a removed log is found through /proc/<pid>/fd (Linux); elsewhere only the marker finds what a lost "
    "state left, which title-rewriting servers hide",
)
@pytest.mark.parametrize("wipe", ["rm -rf .xprocess", "git clean -xdf"])
def test_servers_survive_a_wiped_state_directory_one_each_afterwards(project, wipe):
    """Case 1: the state directory deleted while the servers run; the next run stops every old
    process of each name (found by the log it still writes to) before starting, so there is one
    server each, and PostgreSQL (whose data directory went too) starts cleanly."""
    first = run(project)
    assert first.returncode == 0, first.stdout + first.stderr
    old = trees(project)
    if wipe.startswith("git"):  # the project is a repository whose files are committed
        for cmd in (["init", "-q"], ["add", "."], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"]):
            subprocess.run(["git", *cmd], cwd=project, check=True, capture_output=True)
    subprocess.run(wipe.split(), cwd=project, check=True, capture_output=True)
    assert not (project / ".xprocess").exists()
    assert all(alive(pid) for pids in old.values() for pid in pids)  # orphans, for now

    second = run(project)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "4 passed" in second.stdout
    for name in NAMES:
        assert f"{name}: restarted in" in second.stdout and "(its record was gone: " in second.stdout, second.stdout
        assert not any(alive(pid) for pid in old[name]), (name, old[name])
        new = XProcessInfo(project / ".xprocess", name).pid
        assert writing_to_logs_of(project, name)[:1] and new in writing_to_logs_of(project, name)
        assert set(writing_to_logs_of(project, name)) <= {new, *trees(project)[name]}
    kill = run(project, "--xkill")
    assert kill.returncode == 0 and kill.stdout.count("TERMINATED") == 4, kill.stdout


def test_a_renamed_project_keeps_no_orphan(project):
    """Case 4: a project directory renamed while its servers run: each is recognised as this
    project's (not "recorded by another project"), and as its paths changed (cwd, arguments) it is
    restarted: the old one stopped first, one server each afterwards."""
    first = run(project)
    assert first.returncode == 0, first.stdout + first.stderr
    old = trees(project)
    renamed = project.with_name("renamed")
    project.rename(renamed)
    second = run(renamed)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "another project directory" not in second.stdout + second.stderr
    for name in NAMES:
        assert f"{name}: restarted in" in second.stdout and "its configuration changed" in second.stdout
        assert not any(alive(pid) for pid in old[name]), (name, old[name])
    before = {name: XProcessInfo(renamed / ".xprocess", name).pid for name in NAMES}
    show = run(renamed, "--xshow")
    assert len(re.findall(r"^\w+ +LIVE ", show.stdout, re.M)) == 4, show.stdout
    kill = run(renamed, "--xkill")
    assert kill.stdout.count("TERMINATED") == 4, kill.stdout
    assert not any(alive(pid) for pid in before.values())


def test_renamed_logs_keep_their_servers(project):
    """Issue 26, case 4, with the real servers: each log renamed in its control directory while its
    server runs (as logrotate's dateext does): the next run reuses each, and --xkill stops each."""
    first = run(project)
    assert first.returncode == 0, first.stdout + first.stderr
    before = {name: XProcessInfo(project / ".xprocess", name).pid for name in NAMES}
    for name in NAMES:
        log = project / ".xprocess" / name / "xprocess.log"
        log.rename(log.with_name("xprocess.log-20261206"))
    second = run(project)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "xprocess: reused http, nginx, postgres, redis" in second.stdout, second.stdout
    assert {name: XProcessInfo(project / ".xprocess", name).pid for name in NAMES} == before
    kill = run(project, "--xkill")
    assert kill.stdout.count("TERMINATED") == 4, kill.stdout
    assert not any(alive(pid) for pid in before.values() if pid)


def redis_with(project: Path, line: str) -> None:
    """Add ``line`` (an attribute) to the examples' Redis starter."""
    conftest = project / "conftest.py"
    pattern = '        pattern = "Ready to accept connections"\n'
    conftest.write_text(conftest.read_text().replace(pattern, f"{pattern}        {line}\n"))


def test_a_title_rewriting_server_run_as_another_user_is_ours(project):
    """Case 5: redis-server run as nobody rewrites its title (no marker to read) and is owned
    by another user: it is still recognised by the log it writes to: reused, shown, stopped."""
    if os.geteuid() != 0:
        pytest.skip("running a server as another user needs root")
    redis_with(project, 'popen_kwargs = {"user": "nobody", "group": "nogroup", "cwd": "/"}')
    first = run(project, "-k", "redis")
    assert first.returncode == 0, first.stdout + first.stderr
    pid = XProcessInfo(project / ".xprocess", "redis").pid
    assert psutil.Process(pid).uids().real == psutil.Process(pid).uids().effective != 0
    second = run(project, "-k", "redis")
    assert "xprocess: reused redis" in second.stdout, second.stdout
    assert XProcessInfo(project / ".xprocess", "redis").pid == pid
    assert re.search(r"^redis +LIVE ", run(project, "--xshow", "redis").stdout, re.M)
    kill = run(project, "--xkill", "redis")
    assert f"{pid} redis TERMINATED" in kill.stdout, kill.stdout
    assert not alive(pid)


def test_a_server_run_as_another_user_that_cannot_enter_its_directory_gets_a_hint(project):
    """Issue 26's held-out check: redis-server run as nobody with the default working directory
    (the control directory, 0700 for the user running pytest) exits at once on "Permission
    denied": the failure says who it runs as and what to set (the test above sets it)."""
    if os.geteuid() != 0:
        pytest.skip("running a server as another user needs root")
    redis_with(project, 'popen_kwargs = {"user": "nobody"}')
    result = run(project, "-k", "redis")
    assert result.returncode != 0
    assert "Permission denied" in result.stdout, result.stdout
    assert re.search(
        r"hint: it runs as uid \d+ \(nobody\), who may not enter its working directory .*/\.xprocess/redis "
        r"\(xprocess keeps \.xprocess for uid 0 \(root\) alone\): set popen_kwargs\['cwd'\]",
        result.stdout,
    ), result.stdout


def test_a_symlinked_state_directory_is_refused(project, tmp_path):
    """Case 7: two projects whose .xprocess link to one directory would mix their processes:
    it is refused, saying what to do."""
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o700)
    (project / ".xprocess").symlink_to(shared)
    result = run(project, "-k", "redis")
    assert result.returncode != 0
    assert ".xprocess is a symbolic link" in result.stdout, result.stdout
    assert not any(shared.iterdir())
