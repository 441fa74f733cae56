"""Section 8, stopping and leases: terminate() and its tree, and the leases between real pytest
sessions that keep a server from being pulled from under a session using it."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Iterator

import psutil
import pytest
from conftest import (
    SLEEPER,
    alive,
    ours_still_running,
    py,
    run_until_waiting,
    starter,
    wait_for,
)

import xprocess
from xprocess import XProcess


def test_terminate_ends_grandchildren_and_daemons(xp, tmp_path):
    pids = tmp_path / "pids"
    code = f"""
        import os, sys, time
        if os.fork() == 0:          # a daemon: double fork, new session, parent exits
            os.setsid()
            if os.fork() == 0:
                open({str(pids)!r}, 'a').write(f'{{os.getpid()}}\\n'); time.sleep(600)
            os._exit(0)
        if os.fork() == 0:          # a plain grandchild
            open({str(pids)!r}, 'a').write(f'{{os.getpid()}}\\n'); time.sleep(600)
        while len(open({str(pids)!r}).read().split()) < 2 if os.path.exists({str(pids)!r}) else True:
            time.sleep(0.01)
        print('ready', flush=True); time.sleep(600)
    """
    pid = xp.ensure("tree", starter(code))[0]
    others = [int(p) for p in pids.read_text().split()]
    assert all(alive(p) for p in [pid, *others])
    assert xp.getinfo("tree").terminate() == 1
    assert not any(alive(p) for p in [pid, *others])
    assert xp.getinfo("tree").terminate() == 0


def test_sigterm_ignored_gets_sigkill_and_counts_as_terminated(xp):
    code = "import signal as s, time; s.signal(s.SIGTERM, s.SIG_IGN); print('ready', flush=True); time.sleep(60)"
    pid = xp.ensure("stubborn", starter(code))[0]
    assert xp.getinfo("stubborn").terminate(timeout=0.2) == 1
    assert not alive(pid)


@pytest.mark.parametrize("timeout", [float("nan"), "10", None, True])
def test_a_bad_terminate_timeout_is_a_clear_error_and_signals_nothing(xp, timeout):
    """Issue 32, case 3: a NaN timeout once made the wait for SIGTERM endless (SIGKILL never came)."""
    code = "import signal as s, time; s.signal(s.SIGTERM, s.SIG_IGN); print('ready', flush=True); time.sleep(60)"
    pid = xp.ensure("stubborn", starter(code))[0]
    with pytest.raises(ValueError, match=r"terminate\(\): timeout must be a number of seconds, got "):
        xp.getinfo("stubborn").terminate(timeout=timeout)
    assert alive(pid)
    assert xp.getinfo("stubborn").terminate(timeout=0.1) == 1


def test_a_nan_deadline_is_refused_wherever_it_comes_from(xp, monkeypatch):
    """The stops that take TERMINATE_TIMEOUT (at session end, for --xkill) wait on the same deadline."""
    pid = xp.ensure("srv", starter(SLEEPER))[0]
    monkeypatch.setattr(xprocess, "TERMINATE_TIMEOUT", float("nan"))
    with pytest.raises(ValueError, match="NaN"):
        xprocess._stop({"srv": xprocess._Recorded.read(xp.getinfo("srv"))}, xprocess._FOR_XKILL)
    assert alive(pid)


def test_kill_is_terminate(xp):
    pid = xp.ensure("k", starter(SLEEPER))[0]
    assert xp.getinfo("k").kill() == 1 and not alive(pid)


def test_terminate_reaps_its_own_children(xp):
    pid = xp.ensure("reap", starter(SLEEPER))[0]
    xp.getinfo("reap").terminate()
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def test_terminate_without_the_tree_leaves_the_children(xp):
    code = """
        import subprocess, sys, time
        kid = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        print("ready", kid.pid, flush=True)
        time.sleep(600)
    """
    started = xp.ensure("lonely", starter(code))
    kid = int(started.match.string.split()[1])
    try:
        assert xp.getinfo("lonely").terminate(kill_proc_tree=False) == 1
        assert not alive(started[0]) and alive(kid)
    finally:
        os.kill(kid, signal.SIGKILL)


def test_a_stopped_process_is_never_reused_and_is_stopped_for_good(xp):
    """Issue 21, item 9: a server frozen with SIGSTOP still has its port accepted by the kernel,
    so a connect check passes, yet it answers nothing: it is restarted, and the old one, which
    cannot handle its SIGTERM while stopped, is continued so that it does."""
    handled = xp.rootdir / "handled"
    code = (
        f"import signal, sys, time; signal.signal(signal.SIGTERM, lambda *a: (open({str(handled)!r}, 'w'), "
        "sys.exit(0))); " + SLEEPER
    )
    first = xp.ensure("frozen", starter(code))[0]
    os.kill(first, signal.SIGSTOP)
    assert wait_for(lambda: psutil.Process(first).status() == psutil.STATUS_STOPPED)
    second = xp.ensure("frozen", starter(code))[0]
    assert second != first
    assert not alive(first)
    assert handled.exists()  # its SIGTERM handler ran: it was continued, not SIGKILLed after the grace


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
        told = [line for line in a.stdout.splitlines() if line.startswith("xprocess: 'srv' is to be restarted")]
        assert len(told) == 1 and f"in use by pid {b.pid}: " in told[0], a.stdout  # at once, not at the timeout
        assert told[0].endswith(": waiting for it to end, at most the starter's timeout of 1 s"), a.stdout
        assert "srv: FAILED to start: was not restarted: it is in use by another session (pid " in a.stdout
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


@names_holders
def test_xshow_xjson_lists_the_holder_and_xkill_xjson_overrides_it(sessions):
    b, pid = start_b(sessions.path)
    try:
        show = run_a(sessions.path, "--xshow", "--xjson")
        assert show.returncode == 0, show.stderr
        [row] = json.loads(show.stdout)["processes"]
        assert (row["name"], row["status"], row["pid"], row["holders"]) == ("srv", "LIVE", pid, [b.pid])
        kill = run_a(sessions.path, "--xkill", "--xjson", "srv")
        assert json.loads(kill.stdout) == {
            "version": 1,
            "results": [{"name": "srv", "pid": pid, "result": "TERMINATED"}],
        }
        assert not alive(pid)
    finally:
        finish_b(sessions.path, b)


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


def test_xstop_stops_what_the_session_used_even_on_a_full_disk(tiny_disk):
    (tiny_disk / "pytest.ini").write_text("[pytest]\n")
    (tiny_disk / "conftest.py").write_text(
        textwrap.dedent(f"""
        import os, contextlib
        from xprocess import ProcessStarter
        class S(ProcessStarter):
            args = {py(SLEEPER)!r}
            pattern = "ready"
        def test_fill_the_disk(xprocess):
            xprocess.ensure("srv", S)
            fd = os.open("filler", os.O_WRONLY | os.O_CREAT)
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"x" * 4096)
            os.close(fd)
    """)
    )
    (tiny_disk / "conftest.py").rename(tiny_disk / "test_full.py")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--xstop"],
        cwd=tiny_disk,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "srv: started in" in done.stdout and "terminated at end" in done.stdout
    assert ours_still_running(tiny_disk) == []


def test_a_server_this_pytest_may_not_signal_is_reported_as_failed_to_terminate(pytester_xp):
    """The -1 of terminate(): a server that runs as another user (here nobody, through
    popen_kwargs) and a pytest without the right to signal other users (CAP_KILL dropped)."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("starting a server as another user needs root (and setpriv to drop CAP_KILL)")
    pytester_xp.makeconftest(
        """
        import pytest
        from xprocess import ProcessStarter

        class Starter(ProcessStarter):
            args = ["sleep", "600"]
            pattern = None
            popen_kwargs = {"user": 65534, "group": 65534}
            def startup_check(self):
                return True

        @pytest.fixture
        def srv(xprocess):
            return xprocess.ensure("srv", Starter)
        """
    )
    pytester_xp.makepyfile(
        """
        def test_terminate_fails(srv, xprocess):
            info = xprocess.getinfo("srv")
            assert info.terminate(timeout=0.1) == -1
            assert info.isrunning()
        """
    )
    # this pytest loads the very module the suite imported (tests/mutate.py's copy, say)
    load = (
        "import importlib.util, sys, pytest\n"
        f"spec = importlib.util.spec_from_file_location('xprocess', {xprocess.__file__!r})\n"
        "module = sys.modules['xprocess'] = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        f"module._PROC_FS = {xprocess._PROC_FS!r}\n"  # and takes the same path (tox -e psutil)
        "module._OS = module._ProcFS() if module._PROC_FS else module._Portable()\n"
        "sys.exit(pytest.main())\n"
    )
    no_kill = ["setpriv", "--bounding-set=-kill", "--inh-caps=-kill", sys.executable, "-c", load, "-p", "no:randomly"]
    run = pytester_xp.run(*no_kill, "--xstop")
    assert run.ret == 0, run.outlines
    run.stdout.fnmatch_lines(["srv: started in * s, FAILED to terminate at end"])
    info = XProcess(None, pytester_xp.path).getinfo("srv")
    assert info.isrunning()
    kill = pytester_xp.run(*no_kill, "--xkill")
    assert kill.ret == 1
    kill.stdout.fnmatch_lines([f"{info.pid} srv FAILED TO TERMINATE"])
    assert info.isrunning() and psutil.Process(info.pid).uids().real == 65534
    assert info.terminate() == 1  # this pytest may signal it


def test_xkill_while_another_session_waits(pytester_xp):
    run, pid = run_until_waiting(pytester_xp)
    kill = pytester_xp.runpytest_subprocess("--xkill")
    kill.stdout.fnmatch_lines([f"{pid} srv TERMINATED"])
    out = run.communicate(timeout=60)[0]
    assert run.returncode == pytest.ExitCode.TESTS_FAILED
    assert "exited with code -15 before it was ready" in out
    assert not alive(pid)


def test_a_waiting_restart_does_not_block_plain_reuse(pytester_xp):
    """Item 10: B holds srv; A asks for a restart and waits for B; meanwhile C, whose
    configuration matches the running server, reuses it at once instead of waiting for A."""
    project = pytester_xp.path
    pytester_xp.makeconftest(textwrap.dedent(CONFTEST))
    pytester_xp.makepyfile(test_long=textwrap.dedent(LONG_TEST), test_quick="def test_quick(srv):\n    pass\n")
    b, pid = start_b(project)
    a = subprocess.Popen(
        pytest_cmd("test_quick.py"),
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "RESTART": "1", "STARTER_TIMEOUT": "60"},
    )
    try:
        c = subprocess.run(pytest_cmd("test_quick.py"), cwd=project, capture_output=True, text=True, timeout=50)
        assert a.poll() is None  # A still waits for B: C did not wait for A
        assert c.returncode == 0, c.stdout
        assert "xprocess: reused srv" in c.stdout
        assert alive(pid)
    finally:
        code, out = finish_b(project, b)
        a.communicate(timeout=60)
    assert code == 0, out
    assert a.returncode == 0


def test_a_server_that_moves_its_output_to_a_log_of_its_own_is_still_leased(tmp_path):
    """Issue 26, case 10: a server that, once running, sends its stdout and stderr to a file of
    its own (its environment kept: its marker proves it) no longer writes to the recorded log, and
    the leases on that log were ignored: another session's restart stopped it under the first.
    The recorded log is leased, and looked at, by its path too."""
    own = tmp_path / "own.log"
    code = f"""
        import os, time
        print("ready", flush=True)
        fd = os.open({str(own)!r}, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        print("moved", flush=True)
        time.sleep(600)
    """
    with XProcess(None, tmp_path) as a:
        pid = a.ensure("srv", starter(code))[0]
        assert wait_for(lambda: own.exists() and own.read_text() == "moved\n")
        assert os.readlink(f"/proc/{pid}/fd/1") == str(own)
        with XProcess(None, tmp_path) as b, pytest.raises(xprocess.XProcessError, match="in use by another session"):
            b.ensure("srv", starter(code, timeout=1), restart=True)
        assert alive(pid)
    with XProcess(None, tmp_path) as c:  # once no session holds it, a restart stops it
        assert c.ensure("srv", starter(code), restart=True)[0] != pid
        assert wait_for(lambda: not alive(pid))
        c.getinfo("srv").terminate()
