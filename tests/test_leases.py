"""Never pull a server from under a running session: leases between real pytest sessions (issue 14)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Iterator

import pytest
from conftest import SLEEPER, alive, py, wait_for

import xprocess
from xprocess import XProcess

# who holds a lease is read from Linux's /proc/locks; elsewhere (or through psutil) it is unknown
names_holders = pytest.mark.skipif(not xprocess._PROC_FS, reason="a lease's holders are read from Linux's /proc/locks")

CONFTEST = f"""
    import os, pytest
    from xprocess import ProcessStarter

    class Server(ProcessStarter):
        pattern = "ready"
        args = {py(SLEEPER)!r}
        timeout = float(os.environ.get("STARTER_TIMEOUT", "60"))

    @pytest.fixture
    def srv(xprocess):
        return xprocess.ensure("srv", Server, restart=bool(os.environ.get("RESTART")))
"""

# Session B: uses srv until the file "release" appears, checking all along that it still runs.
LONG_TEST = """
    import pathlib, time
    import psutil

    def running(pid):
        if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:  # NoSuchProcess when reaped
            raise ProcessLookupError(pid)

    def test_long(srv):
        pathlib.Path("b-started").write_text(str(srv[0]))
        deadline = time.monotonic() + 120
        while not pathlib.Path("release").exists() and time.monotonic() < deadline:
            running(srv[0])  # fails if another session stopped it
            time.sleep(0.02)
        running(srv[0])
"""


@pytest.fixture
def sessions(pytester_xp: pytest.Pytester) -> Iterator[pytest.Pytester]:
    pytester_xp.makeconftest(textwrap.dedent(CONFTEST))
    pytester_xp.makepyfile(test_long=textwrap.dedent(LONG_TEST), test_quick="def test_quick(srv):\n    pass\n")
    yield pytester_xp


def pytest_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args]


def start_b(project: Path) -> tuple[subprocess.Popen[str], int]:
    """Session B, in its test, holding srv; returns it and srv's pid."""
    b = subprocess.Popen(
        pytest_cmd("test_long.py"), cwd=project, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    started = project / "b-started"
    assert wait_for(lambda: started.exists() and started.read_text(), 60), "session B did not get srv"
    return b, int(started.read_text())


def run_a(project: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        pytest_cmd(*args), cwd=project, capture_output=True, text=True, env={**os.environ, **env}, timeout=120
    )


def finish_b(project: Path, b: subprocess.Popen[str]) -> tuple[int, str]:
    (project / "release").touch()
    out = b.communicate(timeout=60)[0]
    return b.returncode, out


def test_xstop_leaves_running_what_another_session_uses(sessions):
    b, pid = start_b(sessions.path)
    a = run_a(sessions.path, "--xstop", "test_quick.py")
    assert a.returncode == 0, a.stdout + a.stderr
    assert "srv: reused, left running (in use by another session)" in a.stdout
    assert alive(pid)
    code, out = finish_b(sessions.path, b)
    assert code == 0, out
    # with nobody else using it, the next --xstop stops it
    last = run_a(sessions.path, "--xstop", "test_quick.py")
    assert "srv: reused, terminated at end" in last.stdout
    assert not alive(pid)


def test_a_restart_waits_for_the_other_session_then_succeeds(sessions):
    b, pid = start_b(sessions.path)
    a = subprocess.Popen(
        pytest_cmd("test_quick.py"),
        cwd=sessions.path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "RESTART": "1"},
    )
    try:
        assert wait_for(lambda: a.poll() is not None, 1.0) is False  # still waiting for B
        assert alive(pid)
    finally:
        code, out = finish_b(sessions.path, b)
    assert code == 0, out  # its server ran until it was done with it
    a_out = a.communicate(timeout=60)[0]
    assert a.returncode == 0, a_out
    assert "srv: restarted in" in a_out and "(restart=True)" in a_out
    assert not alive(pid)


@names_holders
def test_a_restart_that_times_out_names_the_holder_and_stops_nothing(sessions):
    b, pid = start_b(sessions.path)
    try:
        a = run_a(sessions.path, "test_quick.py", RESTART="1", STARTER_TIMEOUT="1")
        assert a.returncode == pytest.ExitCode.TESTS_FAILED
        assert "xprocess 'srv' was not restarted: it is in use by another session (pid " in a.stdout
        assert f"pid {b.pid}: " in a.stdout and "test_long.py" in a.stdout
        assert "pytest --xkill srv" in a.stdout
        assert alive(pid)
    finally:
        code, out = finish_b(sessions.path, b)
    assert code == 0, out


def test_a_holder_killed_mid_test_releases_its_lease(sessions):
    b, pid = start_b(sessions.path)
    b.send_signal(signal.SIGKILL)
    b.communicate(timeout=60)
    a = run_a(sessions.path, "--xstop", "test_quick.py")
    assert "srv: reused, terminated at end" in a.stdout, a.stdout
    assert not alive(pid)


@names_holders
def test_xshow_and_xkill_name_the_holder(sessions):
    b, pid = start_b(sessions.path)
    try:
        show = run_a(sessions.path, "--xshow")
        assert re.search(rf"^srv +LIVE +{pid} +\S+ +\S+ +{b.pid}$", show.stdout, re.M), show.stdout
        kill = run_a(sessions.path, "--xkill")
        assert f"{pid} srv TERMINATED (it was in use by pid {b.pid}: " in kill.stdout, kill.stdout
        assert not alive(pid)  # an explicit order: stopped all the same
    finally:
        code, out = finish_b(sessions.path, b)
    assert code != 0 and ("ProcessLookupError" in out or "NoSuchProcess" in out)  # B saw its server go


def test_user_terminate_is_immediate(sessions):
    b, pid = start_b(sessions.path)
    try:
        assert XProcess(None, sessions.path).getinfo("srv").terminate() == 1
        assert not alive(pid)
    finally:
        finish_b(sessions.path, b)


def test_xdist_xstop_still_stops_everything_at_the_end(sessions):
    sessions.makepyfile(test_many="".join(f"def test_{i}(srv):\n    pass\n\n" for i in range(8)))
    result = run_a(sessions.path, "-n", "4", "--xstop", "test_many.py")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "srv: started in" in result.stdout and "terminated at end" in result.stdout
    assert not XProcess(None, sessions.path).getinfo("srv").isrunning()


def test_xstop_still_stops_a_server_whose_directory_was_deleted_during_the_session(sessions):
    """No lease can be held on a file that is gone: the stop at the end finds it by its marker."""
    sessions.makepyfile(
        test_gone=(
            "import shutil\n"
            "def test_gone(srv):\n"
            "    open('pid', 'w').write(str(srv[0]))\n"
            "    shutil.rmtree('.xprocess/srv')\n"
        )
    )
    result = run_a(sessions.path, "--xstop", "test_gone.py")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "srv: started in" in result.stdout and "terminated at end" in result.stdout, result.stdout
    assert not alive(int((sessions.path / "pid").read_text()))


@pytest.mark.skipif(not xprocess._PROC_FS, reason="a removed log is reached through /proc/<pid>/fd (Linux)")
@pytest.mark.parametrize("wipe", ["control directory", "state directory"])
def test_a_server_in_use_survives_its_control_directory_being_deleted(sessions, wipe):
    """Issue 18, case 6: the lease lives on the log file the server holds, not in the control
    directory: deleting that directory (or all of .xprocess) does not let another session's start
    stop the server under B. The other start waits, then fails naming B; B's run is unharmed."""
    import shutil

    b, pid = start_b(sessions.path)
    try:
        shutil.rmtree(sessions.path / ".xprocess" / ("srv" if wipe == "control directory" else ""))
        a = run_a(sessions.path, "test_quick.py", STARTER_TIMEOUT="1")
        assert a.returncode == pytest.ExitCode.TESTS_FAILED, a.stdout
        assert "xprocess 'srv' was not restarted: it is in use by another session (pid " in a.stdout
        assert f"pid {b.pid}: " in a.stdout
        assert alive(pid)
    finally:
        code, out = finish_b(sessions.path, b)
    assert code == 0, out
    # B is done: the next start stops the orphan it finds by its log, and starts one server
    again = run_a(sessions.path, "test_quick.py")
    assert again.returncode == 0, again.stdout
    assert not alive(pid)
    assert XProcess(None, sessions.path).getinfo("srv").isrunning()


def test_a_restart_that_gives_up_keeps_this_sessions_lease(sessions):
    """Issue 19, item 8: session A reuses srv, then (in a later test) asks for a restart that
    times out because B holds it: A keeps its own lease, so B's --xstop leaves the server that A
    still uses running."""
    b, pid = start_b(sessions.path)
    (sessions.path / "test_a.py").write_text(
        textwrap.dedent("""
            import os, subprocess, sys, pytest
            from xprocess import XProcessError

            def test_1_reuse(srv):
                pass

            def test_2_restart_gives_up(xprocess, monkeypatch):
                from conftest import Server
                monkeypatch.setattr(Server, "timeout", 0.5)
                with pytest.raises(XProcessError, match="in use by another session"):
                    xprocess.ensure("srv", Server, restart=True)

            def test_3_another_sessions_xstop_leaves_it_to_us():  # no ensure(): the lease of test_1
                import psutil, time
                open("release", "w").close()  # B ends: now only this session holds srv
                b = psutil.Process(int(os.environ["B_PID"]))
                deadline = time.monotonic() + 60
                while b.is_running() and b.status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
                    time.sleep(0.02)
                c = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--xstop",
                                    "test_quick.py"], capture_output=True, text=True)
                assert "srv: reused, left running (in use by another session)" in c.stdout, c.stdout
        """)
    )
    try:
        a = run_a(sessions.path, "test_a.py", B_PID=str(b.pid))
        assert a.returncode == 0, a.stdout
    finally:
        code, out = finish_b(sessions.path, b)
    assert code == 0, out
    assert alive(pid)


def test_xstop_leaves_running_what_another_session_only_reuses(sessions):
    """A lease is held by every session that uses the server, not only by the one that started it."""
    first = run_a(sessions.path, "test_quick.py")  # starts srv and leaves it running
    assert first.returncode == 0 and "srv: started in" in first.stdout, first.stdout + first.stderr
    b, pid = start_b(sessions.path)  # B finds it running: it only reuses it
    try:
        a = run_a(sessions.path, "--xstop", "test_quick.py")
        assert a.returncode == 0, a.stdout + a.stderr
        assert "srv: reused, left running (in use by another session)" in a.stdout, a.stdout
        assert alive(pid)
    finally:
        code, out = finish_b(sessions.path, b)
    assert code == 0, out
    assert "xprocess: reused srv" in out


def test_a_restart_waits_for_the_lease_within_the_starters_timeout(sessions):
    """The starter's 1.5 s bound the wait for another session's lease, not the 10 s that
    terminate() grants between SIGTERM and SIGKILL: the restarting session's own test runs under
    a 6 s guard (pytest-timeout), which a 10 s wait would trip before the in-use message."""
    b, pid = start_b(sessions.path)
    try:
        a = run_a(sessions.path, "--timeout=6", "test_quick.py", RESTART="1", STARTER_TIMEOUT="1.5")
        assert a.returncode == pytest.ExitCode.TESTS_FAILED, a.stdout + a.stderr
        assert "xprocess 'srv' was not restarted: it is in use by another session (" in a.stdout, a.stdout
        assert "the starter's timeout of 1.5 s" in a.stdout
        assert alive(pid)
    finally:
        code, out = finish_b(sessions.path, b)
    assert code == 0, out


@names_holders
def test_a_holders_command_line_reaches_the_terminal_escaped(sessions):
    """Issue 19, item 1: the command line of the session holding a lease is another process's
    text; escape sequences in it (here a terminal title and a screen clear) are printed escaped."""
    hostile = "\x1b]0;OWNED\x07\x1b[2J"
    b = subprocess.Popen(
        [sys.executable, "-c", f"#{hostile}\nimport sys, pytest; sys.exit(pytest.main(['test_long.py']))"],
        cwd=sessions.path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    started = sessions.path / "b-started"
    assert wait_for(lambda: started.exists() and started.read_text(), 60), "session B did not get srv"
    try:
        a = run_a(sessions.path, "test_quick.py", RESTART="1", STARTER_TIMEOUT="1")
        assert a.returncode == pytest.ExitCode.TESTS_FAILED, a.stdout
        assert "in use by another session (pid" in a.stdout
        assert "\\x1b]0;OWNED\\x07\\x1b[2J" in a.stdout
        assert "\x1b" not in a.stdout + a.stderr
    finally:
        code, out = finish_b(sessions.path, b)
    assert code == 0, out


def test_xstop_leaves_running_what_another_session_is_starting(sessions):
    """A session holding the start lock (in the middle of a restart, before its lease) is not
    pulled from under: the session-end stop takes the lock first, and spares the name if it cannot.
    The lock is taken here by the test itself, on its own open of the lock file, after the ensure."""
    sessions.makepyfile(
        test_starting="""
            import fcntl, os
            held = []

            def test_another_start_begins(srv):
                held.append(os.open(os.path.join(".xprocess", "srv", "lock"), os.O_RDONLY))
                fcntl.flock(held[0], fcntl.LOCK_EX)  # what a starting session holds, until the end
        """
    )
    first = run_a(sessions.path, "test_quick.py")  # starts srv and leaves it running
    assert first.returncode == 0 and "srv: started in" in first.stdout, first.stdout + first.stderr
    pid = XProcess(None, sessions.path).getinfo("srv").pid
    a = run_a(sessions.path, "--xstop", "test_starting.py")
    assert a.returncode == 0, a.stdout + a.stderr
    assert "srv: reused, left running (in use by another session)" in a.stdout, a.stdout
    assert alive(pid)
    a = run_a(sessions.path, "--xstop", "test_quick.py")  # nobody starting it: now it is stopped
    assert a.returncode == 0, a.stdout + a.stderr
    assert not alive(pid)
