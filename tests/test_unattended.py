"""Section 10, what runs when pytest does not: the watchdog of a session in stop mode (whatever
ends the session, what it used is stopped) and the idle keeper (a process no session held for its
idle_timeout is stopped). Real signals, real pytest runs, real servers."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Iterator

import psutil
import pytest
from conftest import SLEEPER, alive, starter, wait_for
from test_ownership import in_pid_namespace

import xprocess
from xprocess import XProcessInfo

# where a lease's holders cannot be read (off Linux), the keeper counts from the last noted end
sees_holders = pytest.mark.skipif(not xprocess._PROC_FS, reason="a lease's holders are read from Linux's /proc/locks")
GONE_WITHIN = xprocess.TERMINATE_TIMEOUT + 5  # after a death that runs no Python code (API.md)

CONFTEST = """
import os, sys, pathlib, pytest
from xprocess import ProcessStarter

class Starter(ProcessStarter):
    pattern = "ready"
    args = [sys.executable, "-c", "import time; print('ready', flush=True); time.sleep(600)"]
{extra}

@pytest.fixture
def srv(xprocess):
    return xprocess.ensure("srv", Starter)
"""

# the test tells its server's pid, then waits to be ended (SLEEP seconds at most, or until a file
# "release" is made), or ends pytest itself (END)
TEST = """
import os, pathlib, time
def test_a(srv):
    pathlib.Path("pid").write_text(str(srv[0]))
    if os.environ.get("END") == "exit":
        os._exit(3)
    if os.environ.get("END") == "crash":  # the interpreter itself dies: SIGSEGV
        import faulthandler
        faulthandler._sigsegv()
    deadline = time.monotonic() + float(os.environ.get("SLEEP", "600"))
    while time.monotonic() < deadline and not pathlib.Path("release").exists():
        time.sleep(0.01)
"""


def project(pytester, extra: str = "") -> Path:
    pytester.makeconftest(CONFTEST.format(extra=textwrap.indent(textwrap.dedent(extra), "    ")))
    pytester.makepyfile(test_a=TEST)
    # a conftest rewritten within the second, at the same size ("3600" for "7200"), is otherwise
    # loaded from the bytecode of the one before
    shutil.rmtree(pytester.path / "__pycache__", ignore_errors=True)
    return pytester.path


_RUNS: list[subprocess.Popen[str]] = []  # the pytest runs a test started, killed if it failed first


@pytest.fixture(autouse=True)
def _no_run_left() -> Iterator[None]:
    yield
    while _RUNS:
        run = _RUNS.pop()
        if run.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(run.pid, signal.SIGKILL)
        run.communicate()


def start(path: Path, *args: str, **env: str) -> tuple[subprocess.Popen[str], int]:
    """pytest in ``path`` (a process group of its own), once its test holds srv; and srv's pid."""
    for made in ("pid", "release"):
        (path / made).unlink(missing_ok=True)
    run = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **env},
        start_new_session=True,
    )
    _RUNS.append(run)
    pid = path / "pid"
    if not wait_for(lambda: pid.exists() and pid.read_text(), 60):
        run.kill()
        raise AssertionError(run.communicate()[0])
    return run, int(pid.read_text())


def watchdogs(path: Path) -> list[psutil.Process]:
    """The watchdogs of sessions of the project in ``path``."""
    statedir = str(path / ".xprocess")
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if "_after_death" in " ".join(cmdline) and statedir in cmdline:
            found.append(proc)
    return found


def sessions_left(path: Path) -> list[str]:
    return [p.name for p in (path / ".xprocess").glob(".session-*")]


@pytest.mark.parametrize(
    "sig, group",
    [
        (signal.SIGKILL, False),
        (signal.SIGKILL, True),
        (signal.SIGTERM, False),
        (signal.SIGTERM, True),
        (signal.SIGHUP, False),
    ],
    ids=["SIGKILL", "SIGKILL-to-its-group", "SIGTERM", "SIGTERM-to-its-group", "SIGHUP"],
)
def test_however_pytest_is_signalled_in_stop_mode_its_server_is_stopped(pytester_xp, sig, group):
    path = project(pytester_xp)
    run, pid = start(path, "--xstop")
    assert len(watchdogs(path)) == 1
    if group:  # as a CI runner does: the watchdog is in a session of its own
        os.killpg(run.pid, sig)
    else:
        run.send_signal(sig)
    out = run.communicate(timeout=60)[0]
    assert wait_for(lambda: not alive(pid), GONE_WITHIN), out
    assert wait_for(lambda: not watchdogs(path), GONE_WITHIN), "the watchdog kept running"
    assert sessions_left(path) == []
    if sig == signal.SIGKILL:
        assert run.returncode == -signal.SIGKILL
        assert XProcessInfo(path / ".xprocess", "srv").terminate() == 0  # nothing left for --xkill
    else:  # as after Ctrl-C: pytest's own end stopped it, and says so
        assert run.returncode == pytest.ExitCode.INTERRUPTED, out
        assert f"KeyboardInterrupt: {signal.Signals(sig).name} received" in out
        assert "srv: started in " in out and ", terminated at end" in out, out


@pytest.mark.parametrize("end, status", [("exit", 3), ("crash", -signal.SIGSEGV)])
def test_os_exit_or_a_crash_in_a_test_in_stop_mode_stops_its_server(pytester_xp, end, status):
    path = project(pytester_xp)
    run, pid = start(path, "--xstop", END=end)
    run.communicate(timeout=60)
    assert run.returncode == status
    assert wait_for(lambda: not alive(pid), GONE_WITHIN)
    assert wait_for(lambda: not watchdogs(path), GONE_WITHIN)
    assert sessions_left(path) == []


def test_sigkill_of_the_xdist_controller_stops_the_server_its_workers_hold(pytester_xp):
    """The workers outlive their controller by a moment, holding their leases: those are the dead
    session's own, and do not keep its server running."""
    path = project(pytester_xp)
    run, pid = start(path, "--xstop", "-n", "2")
    workers = [p.pid for p in psutil.Process(run.pid).children() if "_after_death" not in " ".join(p.cmdline())]
    run.send_signal(signal.SIGKILL)  # the controller alone
    run.communicate(timeout=60)
    assert wait_for(lambda: not alive(pid), GONE_WITHIN)
    assert wait_for(lambda: not watchdogs(path), 60)
    assert len(workers) == 2 and not any(alive(w) for w in workers)
    assert sessions_left(path) == []


def test_the_watchdog_stops_again_what_a_worker_of_the_killed_session_started_since(pytester_xp):
    """A worker outliving its killed controller may ensure() again: the watchdog stops once more
    when the workers are gone."""
    path = project(pytester_xp)
    pytester_xp.makepyfile(
        test_a="""
        import pathlib, time
        from conftest import Starter
        def test_a(xprocess):
            pids = pathlib.Path("pids")
            while True:
                pid = xprocess.ensure("srv", Starter)[0]
                pathlib.Path("pid").write_text(str(pid))
                with pids.open("a") as f:
                    f.write(f"{pid}\\n")
                time.sleep(0.05)
        """
    )
    run, _ = start(path, "--xstop", "-n", "1")
    run.send_signal(signal.SIGKILL)
    run.communicate(timeout=60)
    assert wait_for(lambda: not watchdogs(path), 60)
    pids = [int(line) for line in (path / "pids").read_text().split()]
    assert [pid for pid in set(pids) if alive(pid)] == []


def test_a_server_another_session_holds_outlives_a_killed_stop_mode_session(pytester_xp):
    """Its xdist workers' leases are overridden (they outlive it for a moment), not another's."""
    path = project(pytester_xp)
    holder, pid = start(path)  # no stop switch: it holds srv while its test sleeps
    try:
        killed, reused = start(path, "--xstop", "-n", "2")
        assert reused == pid
        assert len(watchdogs(path)) == 1
        killed.send_signal(signal.SIGKILL)
        killed.communicate(timeout=60)
        assert wait_for(lambda: not watchdogs(path), GONE_WITHIN)  # its work is done
        assert alive(pid)
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
        holder.communicate(timeout=60)
    state = XProcessInfo(path / ".xprocess", "srv")
    assert state.isrunning()  # without the stop switch, a killed session leaves it running


def test_without_the_stop_switch_a_killed_session_leaves_its_server_for_the_next_run(pytester_xp):
    path = project(pytester_xp)
    run, pid = start(path)
    assert watchdogs(path) == []  # no watchdog without the stop switch
    run.send_signal(signal.SIGKILL)
    run.communicate(timeout=60)
    assert alive(pid)
    again, reused = start(path, SLEEP="0")
    out = again.communicate(timeout=60)[0]
    assert again.returncode == 0, out
    assert reused == pid
    assert "xprocess: reused srv" in out


def test_terminate_on_interrupt_processes_are_stopped_after_sigterm_and_sighup(pytester_xp):
    path = project(pytester_xp, extra="terminate_on_interrupt = True")
    for sig in (signal.SIGTERM, signal.SIGHUP):
        run, pid = start(path)
        run.send_signal(sig)
        out = run.communicate(timeout=60)[0]
        assert run.returncode == pytest.ExitCode.INTERRUPTED, out
        assert not alive(pid), out  # stopped by pytest's own end: before it exited
        assert "srv: started in " in out and ", terminated at end" in out, out


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_under_xdist_terminate_on_interrupt_processes_are_stopped_after_a_signal_to_the_group(pytester_xp, sig):
    """The worker using it is interrupted as by Ctrl-C (its controller does not know it is used)."""
    path = project(pytester_xp, extra="terminate_on_interrupt = True")
    run, pid = start(path, "-n", "2")
    os.killpg(run.pid, sig)
    run.communicate(timeout=60)
    assert wait_for(lambda: not alive(pid), GONE_WITHIN)
    assert XProcessInfo(path / ".xprocess", "srv").terminate() == 0


def test_a_sigterm_handler_of_the_suite_is_left_alone_and_the_watchdog_still_stops(pytester_xp):
    path = project(pytester_xp)
    pytester_xp.makepyfile(
        conftest=(path / "conftest.py").read_text()
        + "\nimport signal\nsignal.signal(signal.SIGTERM, lambda *_: os._exit(7))\n"
    )
    run, pid = start(path, "--xstop")
    run.send_signal(signal.SIGTERM)
    run.communicate(timeout=60)
    assert run.returncode == 7  # the suite's handler ran, not the plugin's
    assert wait_for(lambda: not alive(pid), GONE_WITHIN)


def test_a_normal_end_in_stop_mode_leaves_no_watchdog(pytester_xp):
    path = project(pytester_xp)
    run, pid = start(path, "--xstop")
    (dog,) = watchdogs(path)
    (path / "release").touch()
    out = run.communicate(timeout=60)[0]
    assert run.returncode == 0, out
    assert "srv: started in " in out and ", terminated at end" in out
    assert not alive(pid)
    assert not psutil.pid_exists(dog.pid)  # ended and reaped before pytest exited
    assert sessions_left(path) == []


def test_a_watchdog_that_cannot_start_is_told(pytester_xp):
    path = project(pytester_xp)
    conftest = path / "conftest.py"
    conftest.write_text(
        conftest.read_text()
        + "\n@pytest.hookimpl(tryfirst=True)\ndef pytest_sessionstart(session):\n"
        + "    sys.executable = '/nonexistent/python'\n"
    )
    run, pid = start(path, "--xstop", SLEEP="0")
    out = run.communicate(timeout=60)[0]
    assert run.returncode == 0, out
    assert "xprocess cannot start the watchdog of --xstop" in out
    assert "if this pytest is killed (SIGKILL), what it started keeps running" in out
    assert not alive(pid)  # the session's own end still stops it


def test_the_watchdog_signals_no_process_a_forged_state_names(tmp_path):
    """The state is edited, while the killed session ran, to name a same-user stranger with its
    real start: the watchdog stops the server (found by its log) and spares the stranger (a
    private pid namespace: a regression kills nothing outside it)."""
    path = tmp_path / "p"
    path.mkdir()
    (path / "pytest.ini").write_text("[pytest]\n")
    (path / "conftest.py").write_text(CONFTEST.format(extra=""))
    (path / "test_a.py").write_text(TEST)
    script = textwrap.dedent("""
        import time, xprocess
        stranger = subprocess.Popen(["sleep", "600"], start_new_session=True)
        run = subprocess.Popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--xstop"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while not (os.path.exists("pid") and open("pid").read()):
            time.sleep(0.01)
        server = int(open("pid").read())
        state = ".xprocess/srv/state.jsonl"
        record = {}
        for line in open(state).read().splitlines():
            record.update(json.loads(line))
        record.update(pid=stranger.pid, start=xprocess._OS.proc(stranger.pid).start)
        with open(state, "w") as f:
            f.write(json.dumps(record) + "\\n")
        run.kill()
        run.wait()
        deadline = time.monotonic() + 60
        while [n for n in os.listdir(".xprocess") if n.startswith(".session-")] and time.monotonic() < deadline:
            time.sleep(0.05)
        print(json.dumps(dict(stranger=stranger.poll() is None, server=not gone(server))))
    """)
    assert in_pid_namespace(path, script) == {"stranger": True, "server": False}


def test_a_session_that_removed_its_state_directory_and_was_killed_still_has_its_server_stopped(pytester_xp):
    """``rm -rf .xprocess`` (``git clean -xdf``) took the session file: the watchdog was told the
    names through its pipe too, and finds the server by its removed log."""
    path = project(pytester_xp)
    pytester_xp.makepyfile(
        test_a="""
        import os, pathlib, shutil, signal
        def test_a(srv):
            pathlib.Path("pid").write_text(str(srv[0]))
            shutil.rmtree(".xprocess")
            os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    run, pid = start(path, "--xstop")
    run.communicate(timeout=60)
    assert wait_for(lambda: not alive(pid), GONE_WITHIN)
    assert wait_for(lambda: not watchdogs(path), GONE_WITHIN)


def test_a_member_record_naming_another_session_overrides_nothing(pytester_xp):
    """Only xdist workers of the killed session are its members: a record naming another pytest
    (forged, or a stale pid) does not make the watchdog stop what that pytest holds, nor keep it
    waiting."""
    path = project(pytester_xp)
    holder, pid = start(path)
    try:
        pytester_xp.makepyfile(
            test_a=f"""
            import json, os, pathlib, signal
            import xprocess as plugin
            def test_a(srv, xprocess):
                pathlib.Path("pid").write_text(str(srv[0]))
                forged = {{"kind": "member", "pid": {holder.pid}, "start": plugin._OS.proc({holder.pid}).start}}
                with open(xprocess._session.path, "a") as f:
                    f.write(json.dumps(forged) + "\\n")
                os.kill(os.getpid(), signal.SIGKILL)
            """
        )
        killed, _ = start(path, "--xstop")
        killed.communicate(timeout=60)
        assert killed.returncode == -signal.SIGKILL  # it forged the record, then died
        assert wait_for(lambda: not watchdogs(path), GONE_WITHIN)
        assert alive(pid)
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
        holder.communicate(timeout=60)


def test_a_hard_link_copy_of_a_project_gets_an_idle_keeper_of_its_own(tmp_path):
    """``cp -al`` links the copy's locks to the original's: the copy's sessions replace them, so a
    keeper of the original does not pass for the copy's."""
    original = tmp_path / "a"
    original.mkdir()
    (original / "pytest.ini").write_text("[pytest]\n")
    (original / "conftest.py").write_text(CONFTEST.format(extra="    idle_timeout = 1000"))
    (original / "test_a.py").write_text(TEST)
    run, kept = start(original, SLEEP="0")
    run.communicate(timeout=60)
    try:
        assert wait_for(lambda: len(keepers(original)) == 1, 10), ps(original)
        copy = tmp_path / "b"
        subprocess.run(["cp", "-al", str(original), str(copy)], check=True)
        (copy / "conftest.py").unlink()  # its own file, not a link to the original's
        (copy / "conftest.py").write_text(CONFTEST.format(extra="    idle_timeout = 1"))
        run, pid = start(copy, SLEEP="0")
        out = run.communicate(timeout=60)[0]
        assert pid != kept, out
        assert wait_for(lambda: not alive(pid), 1 + xprocess._IDLE_LOOK + 5)
        assert alive(kept)
    finally:
        assert XProcessInfo(original / ".xprocess", "srv").terminate() == 1
    assert wait_for(lambda: not keepers(original) and not keepers(copy), xprocess._IDLE_LOOK + 5)


# --- idle shutdown ---


def show_json(path: Path) -> dict[str, object]:
    """srv's --xshow line (its text), and the idle lines beneath it."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--xshow"],
        cwd=path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    idle = [line.strip() for line in result.stdout.splitlines() if line.strip().startswith("idle:")]
    return {"out": result.stdout, "idle": idle}


def xjson(path: Path) -> list[dict[str, object]]:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--xshow", "--xjson"],
        cwd=path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)["processes"]  # type: ignore[no-any-return]


def ps(path: Path | None = None) -> str:
    """The process table, and the idle keeper's log of the project in ``path``: a failure's message."""
    table = subprocess.run(["ps", "-eo", "pid,ppid,stat,args"], capture_output=True, text=True).stdout
    log = path / ".xprocess" / xprocess._IDLE_LOG if path is not None else None
    return table + (f"\n{log}:\n{log.read_text()}" if log is not None and log.exists() else "")


def keepers(path: Path) -> list[psutil.Process]:
    statedir = str(path / ".xprocess")
    return [
        p
        for p in psutil.process_iter(["cmdline"])
        if "_keep_idle" in " ".join(p.info["cmdline"] or []) and statedir in (p.info["cmdline"] or [])
    ]


def test_a_process_no_session_holds_stops_after_its_idle_timeout(pytester_xp):
    path = project(pytester_xp, extra="idle_timeout = 1")
    run, pid = start(path, SLEEP="2")  # held past its idle_timeout: kept meanwhile
    assert wait_for(lambda: len(keepers(path)) == 1, 10), ps(path)
    assert not wait_for(lambda: not alive(pid), 1.5)
    out = run.communicate(timeout=60)[0]
    assert run.returncode == 0, out
    assert alive(pid)
    assert wait_for(lambda: not alive(pid), 1 + xprocess._IDLE_LOOK + 5), ps(path)
    assert wait_for(lambda: not keepers(path), xprocess._IDLE_LOOK + 5), ps(path)  # nothing left to keep
    rerun = start(path, SLEEP="0")[0].communicate(timeout=60)[0]
    assert "srv: started in " in rerun, rerun  # stopped on purpose: not "restarted ... (it had stopped)"
    assert XProcessInfo(path / ".xprocess", "srv").terminate() == 1


@sees_holders
def test_a_holder_killed_starts_the_idle_time_when_the_keeper_sees_it_gone(pytester_xp):
    """Killed, the holder noted no end: the keeper, which saw it held at most idle_timeout / 4
    before, counts from when it sees it gone, not from the start (4 s before)."""
    path = project(pytester_xp, extra="idle_timeout = 3")
    run, pid = start(path)
    assert wait_for(lambda: len(keepers(path)) == 1, 10), ps(path)
    time.sleep(4)
    assert alive(pid)
    run.send_signal(signal.SIGKILL)
    run.communicate(timeout=60)
    assert not wait_for(lambda: not alive(pid), 1.5)
    assert wait_for(lambda: not alive(pid), 3 + xprocess._IDLE_LOOK + 5), ps(path)


@sees_holders
def test_a_session_ensuring_it_in_time_keeps_it_and_xshow_says_when_it_stops(pytester_xp):
    path = project(pytester_xp, extra="idle_timeout = 3600")
    first, pid = start(path, SLEEP="0")
    assert first.communicate(timeout=60)[0]
    shown = show_json(path)
    assert any(line.startswith("idle: stops in 59m") for line in shown["idle"]), shown["out"]
    (row,) = xjson(path)
    assert 3500 < row["idle_stop_in_s"] <= 3600 and row["idle_timeout_s"] == 3600
    again, reused = start(path)  # held: no countdown
    try:
        assert reused == pid
        shown = show_json(path)
        assert "idle: stops 1h00m after its last user ends" in shown["idle"], shown["out"]
        (row,) = xjson(path)
        assert row["idle_stop_in_s"] is None and row["holders"] == [again.pid]
    finally:
        again.send_signal(signal.SIGTERM)
        again.communicate(timeout=60)
    assert XProcessInfo(path / ".xprocess", "srv").terminate() == 1
    assert wait_for(lambda: not keepers(path), xprocess._IDLE_LOOK + 5)


def test_a_changed_idle_timeout_alone_restarts_nothing_and_applies_from_then_on(pytester_xp):
    path = project(pytester_xp, extra="idle_timeout = 3600")
    run, pid = start(path, SLEEP="0")
    run.communicate(timeout=60)
    project(pytester_xp, extra="idle_timeout = 7200")
    again, reused = start(path, SLEEP="0")
    out = again.communicate(timeout=60)[0]
    assert reused == pid and "xprocess: reused srv" in out, out
    shown = show_json(path)
    assert any(line.startswith("idle: stops in 1h59m") for line in shown["idle"]), shown["out"]
    project(pytester_xp, extra="idle_timeout = None")  # none: no countdown, and the keeper ends
    start(path, SLEEP="0")[0].communicate(timeout=60)
    assert show_json(path)["idle"] == []
    assert wait_for(lambda: not keepers(path), xprocess._IDLE_LOOK + 5)
    assert alive(pid)


def test_the_ini_default_applies_where_a_starter_sets_none_and_none_overrides_it(pytester_xp):
    path = project(pytester_xp)
    pytester_xp.makeini("[pytest]\nxprocess_idle_timeout = 3600\n")
    start(path, SLEEP="0")[0].communicate(timeout=60)
    assert any(line.startswith("idle: stops in 59m") for line in show_json(path)["idle"])
    project(pytester_xp, extra="idle_timeout = None")
    start(path, SLEEP="0")[0].communicate(timeout=60)
    assert show_json(path)["idle"] == []


@pytest.mark.parametrize("value", ["soon", "0", "-1", "nan", "inf"])
def test_a_bad_ini_idle_timeout_is_a_usage_error(pytester_xp, value):
    pytester_xp.makeini(f"[pytest]\nxprocess_idle_timeout = {value}\n")
    pytester_xp.makepyfile("def test_a():\n    pass\n")
    result = pytester_xp.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*xprocess_idle_timeout = {value!r}: give a positive number of seconds, or none"])


@pytest.mark.parametrize("value", ["'soon'", "0", "-5", "True", "float('inf')", "float('nan')", "10**400"])
def test_a_bad_idle_timeout_on_a_starter_is_named(xp, value):
    with pytest.raises(ValueError, match=r"'srv': idle_timeout must be None or a positive number of seconds, got "):
        xp.ensure("srv", starter("print('ready')", idle_timeout=eval(value)))
    assert not (xp.statedir / "srv" / "state.jsonl").exists()


def test_the_state_records_the_idle_timeout_and_when_the_last_holder_ended(xp):
    """What --xshow and the keeper read (a unit look at the record)."""
    xp.ensure("srv", starter(SLEEPER, idle_timeout=600))
    xp._session.release()
    state = xprocess._read_state(xp.getinfo("srv").statepath)
    assert state.idle == 600 and state.released is not None
    assert 599 < xprocess._idle_stop_in(xprocess._Recorded.read(xp.getinfo("srv"))) <= 600
    assert json.loads((xp.statedir / "srv" / "state.jsonl").read_text().splitlines()[-1]) == {
        "released": state.released
    }


def test_a_state_whose_idle_timeout_is_not_a_number_has_none(xp):
    """Python's JSON reads NaN and Infinity, which no state of the plugin's holds: ignored."""
    xp.ensure("srv", starter(SLEEPER, idle_timeout=600))
    statepath = xp.getinfo("srv").statepath
    for value in ("NaN", "Infinity"):
        with statepath.open("a") as f:
            f.write(f'{{"idle": {value}, "released": {value}}}\n')
        state = xprocess._read_state(statepath)
        assert state.idle is None and state.released is None
        assert xprocess._idle_stop_in(xprocess._Recorded.read(xp.getinfo("srv"))) is None
