"""Sections 6 and 7, the process table and ownership: state on disk never makes any command touch
a stranger; what a lost state left is still found as ours.

The cases that could kill any process on the machine run inside a private pid namespace
(``unshare --pid --fork --kill-child --mount-proc``, root only), so a regression kills nothing
outside it."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import psutil
import pytest
from conftest import (
    SLEEPER,
    alive,
    conftest_source,
    kill_writing_under,
    make_project,
    ours_still_running,
    py,
    starter,
    terminate_all,
    wait_for,
)

import xprocess
from xprocess import ProcessStarter, XProcess, XProcessInfo


def test_recycled_pid_is_neither_reused_nor_signalled(xp, tmp_path):
    stranger = subprocess.Popen(["sleep", "600"])
    time.sleep(0.05)  # started in another clock tick (10 ms) than the recorded process
    try:
        Starter = starter(SLEEPER)
        xp.ensure("rec", Starter)
        state_path = xp.statedir / "rec" / "state.jsonl"
        state = xp.getinfo("rec")._state().to_json()
        xp.getinfo("rec").terminate()
        # the record now points at an unrelated process with the same pid
        state.update(pid=stranger.pid)  # its start time is the recorded one's, not the stranger's
        state_path.write_text(json.dumps(state) + "\n")
        info = xp.getinfo("rec")
        assert not info.isrunning()
        assert info.terminate() == 0
        new_pid = xp.ensure("rec", Starter)[0]
        assert new_pid != stranger.pid
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


@pytest.mark.parametrize("deleted", ["state dir", "control dir"])
def test_state_deleted_while_running_starts_fresh_and_ends_the_orphan(xp, deleted):
    first = xp.ensure("lost", starter(SLEEPER))[0]
    shutil.rmtree(xp.statedir if deleted == "state dir" else xp.statedir / "lost")
    infos, lost = xprocess._recorded_infos(xp, [])  # what --xshow lists: the process, by its removed log
    found = {name: [p.pid for p in procs] for name, procs in lost.items()}
    assert ([i.name for i in infos], found) == ((["lost"], {"lost": [first]}) if xprocess._PROC_FS else ([], {}))
    second = xp.ensure("lost", starter(SLEEPER))[0]
    assert second != first
    assert wait_for(lambda: not alive(first))


def test_the_orphan_sweep_spares_other_projects(tmp_path):
    with XProcess(None, tmp_path / "a") as a, XProcess(None, tmp_path / "b") as b:
        try:
            theirs = a.ensure("same", starter(SLEEPER))[0]
            b.ensure("same", starter(SLEEPER))  # nothing recorded in b: sweeps b's project only
            assert alive(theirs)
        finally:
            terminate_all(a.statedir)
            terminate_all(b.statedir)


def test_a_log_deleted_while_the_process_runs(pytester_xp):
    """The process is reused; its log is gone: no logfile, no report section, no crash."""
    pytester_xp.makeconftest(conftest_source(None, code=SLEEPER))
    pytester_xp.makepyfile("def test_fails(srv):\n    assert 0\n")
    pytester_xp.runpytest_subprocess().assert_outcomes(failed=1)
    (pytester_xp.path / ".xprocess" / "srv" / "xprocess.log").unlink()
    result = pytester_xp.runpytest_subprocess()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["xprocess: reused srv"])
    assert "xprocess srv log" not in result.stdout.str()


def zombie_of_this_process(xp, name):
    """Start ``name`` and make it a zombie that stays one: this process is its parent (the child
    of a Popen) and reaps it only when the XProcess closes, whatever init does with orphans."""
    pid = xp.ensure(name, starter(SLEEPER))[0]
    assert psutil.Process(pid).ppid() == os.getpid()
    os.kill(pid, signal.SIGKILL)
    assert wait_for(lambda: psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    return pid


def test_isrunning_ignores_a_zombie(xp):
    zombie_of_this_process(xp, "zombie")
    info = xp.getinfo("zombie")
    assert not info.isrunning()
    assert info.isrunning(ignore_zombies=False)  # the very process recorded, not yet reaped


def test_xshow_does_not_call_a_zombie_live(pytester_xp):
    with XProcess(None, pytester_xp.path) as xp:
        pid = zombie_of_this_process(xp, "zombie")
        show = pytester_xp.runpytest_subprocess("--xshow")
        assert psutil.Process(pid).status() == psutil.STATUS_ZOMBIE  # it was one all along
    assert show.ret == 0
    show.stdout.fnmatch_lines([f"zombie  DEAD    {pid} *"])


ENV_WIPED = (
    "import os, sys; os.execve(sys.executable, [sys.executable, '-c', "
    "\"import time; print('ready', flush=True); time.sleep(600)\"], {})"
)  # a server that wipes its environment (as title-rewriting servers hide it): no marker to read


PROC_FD = pytest.mark.skipif(
    not xprocess._PROC_FS,
    reason="a removed log is reached through /proc/<pid>/fd (Linux); elsewhere only the marker finds what a lost "
    "state left, which a server that wipes its environment hides",
)


@pytest.fixture
def lost(xp):
    """What the tests of a lost state leave behind when the plugin fails them (under a mutation)."""
    yield
    kill_writing_under(xp.statedir)


@PROC_FD
def test_what_a_lost_state_left_is_found_by_its_log_and_stopped(xp, lost):
    """Issue 18: .xprocess deleted while a server without a readable marker runs: the next
    ensure() finds it by the log file it still writes to (its path now "... (deleted)") and
    stops it, so one server runs afterwards."""
    old = xp.ensure("srv", starter(ENV_WIPED))[0]
    assert xprocess._OS.marker(old) == ""  # nothing but the log proves it
    shutil.rmtree(xp.statedir)
    new = xp.ensure("srv", starter(ENV_WIPED))[0]
    assert new != old
    assert not alive(old)


@PROC_FD
def test_what_a_lost_state_left_is_stopped_before_the_starter_runs(xp, lost, tmp_path, monkeypatch):
    """Issue 18: the starter of a new start may rebuild what the old server still uses (initdb
    into a deleted data directory): the old server is gone before the starter is read."""
    seen = tmp_path / "seen"

    class Server(ProcessStarter):
        pattern = "ready"

        @property
        def args(self):
            old = os.environ.get("OLD_PID")
            if old:
                seen.write_text("alive" if alive(int(old)) else "gone")
            return py(ENV_WIPED)

    old = xp.ensure("srv", Server)[0]
    shutil.rmtree(xp.statedir)
    monkeypatch.setenv("OLD_PID", str(old))
    xp.ensure("srv", Server)
    assert seen.read_text() == "gone"


def in_pid_namespace(project: Path, script: str) -> dict[str, object]:
    """Run ``script`` as pid 1 of a new pid namespace in ``project``; return the JSON it printed last."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("a private pid namespace needs root and unshare(1)")
    prelude = textwrap.dedent("""
        import json, os, subprocess, sys
        def pytest(*args, env=None, shell=False):
            cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-s", *args]
            if shell:  # through a shell: pytest's parent is then a process of its own
                cmd = ["sh", "-c", " ".join(cmd) + "; exit $?"]
            r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})
            return r.returncode, r.stdout + r.stderr
        def gone(pid):  # ended: no such process, or a zombie
            try:
                with open(f"/proc/{pid}/stat") as f:
                    return f.read().rpartition(")")[2].split()[0] == "Z"
            except FileNotFoundError:
                return True
    """)
    done = subprocess.run(
        ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc", sys.executable, "-c", prelude + script],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout.splitlines()[-1])  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    "forge", ["empty-marker", "init", "self", "parent", "stranger", "thread-of-self", "thread-of-init"]
)
def test_a_state_naming_init_pytest_its_shell_or_anyone_signals_nobody(tmp_path, forge):
    """Issue 18, cases 2 and 3: a state edited to name a same-user process with its real start
    (no marker, output elsewhere), or a thread id, is not running: nothing is reused, shown LIVE
    or signalled."""
    script = textwrap.dedent(f"""
        import threading, time
        stranger = subprocess.Popen(["sleep", "600"], start_new_session=True)  # a same-user process, nobody's server
        thread = threading.Thread(target=time.sleep, args=(600,), daemon=True)
        thread.start()
        named = thread.native_id if {forge!r} == "thread-of-init" else stranger.pid
        env = {{"FORGE": {forge!r}, "STRANGER": str(named)}}
        first = pytest()  # starts srv and records it
        stopped = pytest("--xkill")  # srv's state stays, naming a pid that no longer runs
        xkill = pytest("--xkill", env=env, shell=True)
        xshow = pytest("--xshow", env=env, shell=True)
        ensure = pytest(env=env, shell=True)
        pytest("--xkill")
        print(json.dumps(dict(first=first, stopped=stopped, xkill=xkill, xshow=xshow, ensure=ensure,
                              stranger=stranger.poll() is None, me=os.getpid())))
    """)
    result = in_pid_namespace(make_project(tmp_path / "p"), script)
    assert result["first"][0] == 0 and result["stopped"][0] == 0, result
    assert result["me"] == 1  # and it is still alive to print this: init was not signalled
    assert result["stranger"] is True, result
    xkill_rc, xkill_out = result["xkill"]
    assert xkill_rc == 0, xkill_out
    assert "srv NO PROCESS FOUND" in xkill_out
    assert not re.search(r"^srv +LIVE", result["xshow"][1], re.M), result["xshow"][1]
    ensure_rc, ensure_out = result["ensure"]
    assert ensure_rc == 0, ensure_out  # pytest was not killed (143 or -9): a new srv was started
    assert "srv: restarted" in ensure_out or "srv: started" in ensure_out


def test_a_state_written_by_another_user_is_not_trusted(pytester_xp):
    if os.geteuid() != 0:
        pytest.skip("writing a file as another user needs root")
    make_project(pytester_xp.path)
    stranger = subprocess.Popen(["sleep", "600"])
    try:
        assert pytester_xp.runpytest_subprocess().ret == 0
        assert pytester_xp.runpytest_subprocess("--xkill").ret == 0
        state = pytester_xp.path / ".xprocess" / "srv" / "state.jsonl"
        record: dict[str, object] = {}
        for line in state.read_text().splitlines():
            record.update(json.loads(line))
        # another user (nobody) writes into a world-writable .xprocess a state for root's process
        record["pid"] = stranger.pid
        record["start"] = xprocess._OS.proc(stranger.pid).start  # type: ignore[union-attr]
        state.write_text(json.dumps(record) + "\n")
        os.chown(state, 65534, 65534)
        result = pytester_xp.runpytest_subprocess("--xkill")
        assert result.ret == 0
        result.stdout.fnmatch_lines(["- srv NO PROCESS FOUND"])
        result.stderr.fnmatch_lines(["*belongs to uid 65534*not trusted*"])
        assert stranger.poll() is None
        state.chmod(0o666)  # ours, but writable by anyone: not trusted either
        os.chown(state, 0, 0)
        assert "writable by others" in pytester_xp.runpytest_subprocess("--xkill").stderr.str()
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


def test_a_recycled_pid_started_soon_after_the_recorded_one_is_a_stranger(pytester_xp):
    """The old 1 s tolerance on start times took such a process for ours."""
    make_project(pytester_xp.path)
    assert pytester_xp.runpytest_subprocess().ret == 0
    info = XProcess(None, pytester_xp.path).getinfo("srv")
    recorded = info._state().to_json()
    assert recorded is not None
    info.terminate()
    stranger = subprocess.Popen(["sleep", "600"])
    try:
        # the record names the stranger's pid, and a start 50 ms (5 ticks) before the stranger's
        start = xprocess._OS.proc(stranger.pid).start  # type: ignore[union-attr]
        if ":" in start:  # Linux's /proc: "<boot id>:<clock ticks>"
            boot, ticks = start.rsplit(":", 1)
            start = f"{boot}:{int(ticks) - 5}"
        else:  # psutil's creation time, in seconds
            start = repr(float(start) - 0.05)
        recorded.update(pid=stranger.pid, start=start)
        info.statepath.write_text(json.dumps(recorded) + "\n")
        assert not info.isrunning()
        show = pytester_xp.runpytest_subprocess("--xshow")
        show.stdout.fnmatch_lines([f"srv *DEAD *{stranger.pid} *"])
        run = pytester_xp.runpytest_subprocess("-s")
        run.stdout.fnmatch_lines([f"srv: restarted in * (its pid {stranger.pid} now belongs to another process)"])
        kill = pytester_xp.runpytest_subprocess("--xkill")
        assert kill.ret == 0
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


def test_a_copied_project_starts_its_own_server_and_leaves_the_original_alone(tmp_path):
    original = make_project(tmp_path / "original")
    copy = tmp_path / "copy"

    def run(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-s", *args]
        return subprocess.run(cmd, cwd=project, capture_output=True, text=True, timeout=120)

    try:
        first = run(original)
        assert first.returncode == 0, first.stdout + first.stderr
        pid = XProcess(None, original).getinfo("srv").pid
        assert pid is not None and alive(pid)
        subprocess.run(["cp", "-a", str(original), str(copy)], check=True)
        in_copy = run(copy)
        assert in_copy.returncode == 0, in_copy.stdout + in_copy.stderr
        assert "srv: started" in in_copy.stdout  # not "restarted: its configuration changed (cwd)"
        assert "recorded by another project directory" in in_copy.stdout + in_copy.stderr
        assert alive(pid)
        copy_pid = XProcess(None, copy).getinfo("srv").pid
        assert copy_pid not in (None, pid) and alive(copy_pid)  # type: ignore[arg-type]
        assert "TERMINATED" in run(copy, "--xkill").stdout
        assert alive(pid) and not alive(copy_pid)  # type: ignore[arg-type]
    finally:
        terminate_all(original / ".xprocess")
        terminate_all(copy / ".xprocess")


def test_a_hard_link_copy_of_a_project_leaves_the_original_alone(tmp_path):
    """Issue 26, case 1: ``cp -al`` (rsync --link-dest, rsnapshot) gives the copy the original's
    log as a hard link: the same inode, so the inode alone proves nothing there. The copy starts,
    shows and stops its own server; the original still reuses, shows and stops its own."""
    original, copy = tmp_path / "original", tmp_path / "copy"
    original.mkdir()
    (original / "pytest.ini").write_text("[pytest]\n")
    (original / "conftest.py").write_text(conftest_source(None, code=ENV_WIPED))
    (original / "test_srv.py").write_text("def test_a(srv):\n    pass\n")

    def run(project: Path, *args: str) -> str:
        cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-s", *args]
        done = subprocess.run(cmd, cwd=project, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout + done.stderr

    try:
        assert "srv: started" in run(original)
        pid = XProcessInfo(original / ".xprocess", "srv").pid
        assert pid is not None and xprocess._OS.marker(pid) == ""  # only its log proves it
        subprocess.run(["cp", "-al", str(original), str(copy)], check=True)
        log = Path(".xprocess", "srv", "xprocess.log")
        assert os.stat(copy / log).st_ino == os.stat(original / log).st_ino  # one file, two names
        assert not re.search(r"^srv +LIVE", run(copy, "--xshow"), re.M)
        assert "srv: started" in run(copy)
        copy_pid = XProcessInfo(copy / ".xprocess", "srv").pid
        assert copy_pid not in (None, pid) and alive(pid)
        assert "xprocess: reused srv" in run(original)  # the original's log, linked twice, still proves it there
        assert re.search(rf"^srv +LIVE +{pid} ", run(original, "--xshow"), re.M)
        assert "srv TERMINATED" in run(copy, "--xkill")
        assert alive(pid) and not alive(copy_pid)  # type: ignore[arg-type]
        assert "srv TERMINATED" in run(original, "--xkill")
        assert not alive(pid)
    finally:
        kill_writing_under(original / ".xprocess")
        kill_writing_under(copy / ".xprocess")


@pytest.mark.parametrize("renamed", ["xprocess.log.old", "xprocess.log-20261206", "server.log"])
def test_a_renamed_log_still_proves_its_server(xp, lost, renamed):
    """Issue 26, case 4: logrotate's dateext or a user's ``mv`` renames the log in its control
    directory: the server still writes to it there, so it is still ours (no marker here to say so):
    reused, shown, stopped."""
    pid = xp.ensure("srv", starter(ENV_WIPED))[0]
    info = xp.getinfo("srv")
    info.logpath.rename(info.logpath.with_name(renamed))
    assert info.isrunning()
    assert xp.ensure("srv", starter(ENV_WIPED))[0] == pid
    assert info.terminate() == 1 and not alive(pid)


def test_a_pytest_killed_at_the_spawn_leaves_nothing_that_xkill_cannot_find(pytester_xp):
    """pytest dies (SIGKILL) after spawning a child and before recording it, while the state of
    an earlier start is still there: the child is found by its marker."""
    make_project(pytester_xp.path)
    assert pytester_xp.runpytest_subprocess().ret == 0
    earlier = XProcess(None, pytester_xp.path).getinfo("srv").pid
    killed = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider"],
        cwd=pytester_xp.path,
        env={**os.environ, "KILL_AT_SPAWN": "1"},
        capture_output=True,
        timeout=120,
    )
    assert killed.returncode == -signal.SIGKILL
    assert wait_for(lambda: ours_still_running(pytester_xp.path) != [])  # once the child has exec'd
    assert earlier not in [p.pid for p in ours_still_running(pytester_xp.path)]
    result = pytester_xp.runpytest_subprocess("--xkill")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["* srv TERMINATED"])
    assert wait_for(lambda: ours_still_running(pytester_xp.path) == [])


def test_a_state_naming_another_users_process_without_a_marker_signals_nobody(tmp_path):
    """A process that shows no marker is not proven ours by its recorded pid and start alone:
    here a process of nobody's, whose pid and start a forged state names."""
    script = textwrap.dedent("""
        stranger = subprocess.Popen(["sleep", "600"], user=65534, group=65534)  # no marker, another user
        env = {"FORGE": "nobody", "STRANGER": str(stranger.pid)}
        first = pytest()  # starts srv and records it
        stopped = pytest("--xkill")
        xkill = pytest("--xkill", env=env)
        xshow = pytest("--xshow", env=env)
        ensure = pytest(env=env)
        pytest("--xkill")
        print(json.dumps(dict(first=first, stopped=stopped, xkill=xkill, xshow=xshow, ensure=ensure,
                              stranger=stranger.poll() is None)))
    """)
    result = in_pid_namespace(make_project(tmp_path / "p"), script)
    assert result["first"][0] == 0 and result["stopped"][0] == 0, result
    assert result["stranger"] is True, result
    xkill_rc, xkill_out = result["xkill"]
    assert xkill_rc == 0 and "srv NO PROCESS FOUND" in xkill_out, xkill_out
    assert not re.search(r"^srv +LIVE", result["xshow"][1], re.M), result["xshow"][1]
    assert result["ensure"][0] == 0 and "srv: started" in result["ensure"][1], result["ensure"]  # its state not used


def test_a_token_edited_to_another_projects_key_adds_nothing_to_the_search(tmp_path):
    """Issue 32, case 1: a state that still names this project's own server, proven by its log, but
    whose token was edited to another project's: --xkill stops this project's server and leaves the
    other project's (which carries that token's key) alone."""
    other = make_project(tmp_path / "other")
    conftest = other / "conftest.py"  # its server then writes to /dev/null: only its marker shows whose it is
    conftest.write_text(
        conftest.read_text().replace(
            "print('ready', flush=True); time.sleep(600)",
            "import os; print('ready', flush=True); os.dup2(os.open(os.devnull, os.O_WRONLY), 1); "
            "os.dup2(1, 2); time.sleep(600)",
        )
    )
    script = textwrap.dedent(f"""
        import pathlib
        def run(cwd, *args):
            cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-s", *args]
            done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
            return done.returncode, done.stdout + done.stderr
        def record(project):
            fields = {{}}
            for line in (pathlib.Path(project) / ".xprocess/srv/state.jsonl").read_text().splitlines():
                fields.update(json.loads(line))
            return fields
        def running(pid):
            try:
                return open(f"/proc/{{pid}}/stat").read().rsplit(") ", 1)[1][0] != "Z"
            except OSError:
                return False
        first = run(".")
        other_first = run({str(other)!r})
        mine, theirs = record("."), record({str(other)!r})
        mine["token"] = theirs["token"]
        pathlib.Path(".xprocess/srv/state.jsonl").write_text(json.dumps(mine) + "\\n")
        xkill = run(".", "--xkill")
        result = dict(first=first, other_first=other_first, xkill=xkill, mine=running(mine["pid"]),
                      theirs=running(theirs["pid"]))
        run({str(other)!r}, "--xkill")
        print(json.dumps(result))
    """)
    result = in_pid_namespace(make_project(tmp_path / "p"), script)
    assert result["first"][0] == 0 and result["other_first"][0] == 0, result
    xkill_rc, xkill_out = result["xkill"]
    assert xkill_rc == 0 and "srv TERMINATED" in xkill_out, xkill_out
    assert result["mine"] is False, result
    assert result["theirs"] is True, result  # the other project's server was not taken for this one's


WRAPPING_SERVER = """
    import pathlib, subprocess, sys, time
    print("ready", flush=True)
    while not pathlib.Path(sys.argv[1]).exists():  # the test lets the pids wrap around first
        time.sleep(0.01)
    kids = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"]) for _ in range(2)]
    pathlib.Path(sys.argv[2]).write_text(" ".join(str(k.pid) for k in kids))
    time.sleep(600)
"""


def test_terminate_after_a_pid_wrap_around_finds_the_children(tmp_path):
    """The children of a server, born after the pids wrapped around, have lower pids than the
    server: terminate() still finds and ends them (ns_last_pid forces the wrap, in a namespace)."""
    project = make_project(tmp_path / "p")
    script = textwrap.dedent(f"""
        import pathlib, time
        from xprocess import ProcessStarter, XProcess

        def next_pid_after(n):
            with open("/proc/sys/kernel/ns_last_pid", "w") as f:
                f.write(str(n))

        class Server(ProcessStarter):
            pattern = "ready"
            args = [sys.executable, "-c", {textwrap.dedent(WRAPPING_SERVER)!r}, os.path.abspath("go"),
                    os.path.abspath("kids")]

        next_pid_after(20000)
        with XProcess(None, os.getcwd()) as xp:
            pid = xp.ensure("srv", Server)[0]
            next_pid_after(300)  # the next pids are lower than the server's
            pathlib.Path("go").touch()
            deadline = time.monotonic() + 60
            while not pathlib.Path("kids").exists() and time.monotonic() < deadline:
                time.sleep(0.01)
            kids = [int(k) for k in pathlib.Path("kids").read_text().split()]
            result = xp.getinfo("srv").terminate()
            def running(p):
                try:
                    return open(f"/proc/{{p}}/stat").read().split(") ")[1][0] != "Z"
                except OSError:
                    return False
            print(json.dumps(dict(pid=pid, kids=kids, result=result, running=[k for k in kids if running(k)])))
    """)
    result = in_pid_namespace(project, script)
    assert all(kid < result["pid"] for kid in result["kids"]), result  # type: ignore[attr-defined,operator]
    assert result["result"] == 1
    assert result["running"] == [], result


@pytest.mark.skipif(not xprocess._PROC_FS, reason="thread ids resolve like pids in Linux's /proc only")
def test_a_thread_of_our_own_server_is_not_taken_for_a_process(xp):
    """Issue 18, case 3: a thread id resolves in /proc like a pid and shares the server's files
    (its stdout is our log): a state naming it is still not running, and it is not signalled as
    if it were a process (a signal to a thread id reaches its whole process)."""
    code = (
        "import threading, time; t = threading.Thread(target=time.sleep, args=(600,), daemon=True); t.start(); "
        "print('tid', t.native_id, flush=True); print('ready', flush=True); time.sleep(600)"
    )
    pid = xp.ensure("srv", starter(code))[0]
    info = xp.getinfo("srv")
    tid = int(info.logpath.read_text().split()[1])
    assert tid != pid and xprocess._OS.proc(tid) is not None
    lines = info.statepath.read_text().splitlines()
    record = json.loads(lines[0])
    record.update(pid=tid, start=xprocess._OS.proc(tid).start)  # type: ignore[union-attr]
    info.statepath.write_text("\n".join([json.dumps(record), *lines[1:]]) + "\n")
    assert not info.isrunning()
    assert alive(pid)
    # the state proves nothing, so it does not narrow the search: the server (older than the
    # thread) is still found by its log, and stopped
    assert info.terminate() == 1
    assert not alive(pid)


def test_xkill_and_xshow_spare_a_stranger_holding_the_recorded_pid(project):
    """The record points at an unrelated process that got the pid: it is neither shown LIVE nor signalled."""
    project.runpytest_subprocess().assert_outcomes(passed=1)
    stranger = subprocess.Popen(["sleep", "600"])
    try:
        info = XProcessInfo(project.path / ".xprocess", "srv")
        info.terminate()
        state = info._state().to_json()
        state.update(pid=stranger.pid)  # the recorded start stays: not the stranger's
        info.statepath.write_text(json.dumps(state) + "\n")
        project.runpytest_subprocess("--xshow").stdout.fnmatch_lines([f"srv *DEAD *{stranger.pid} *"])
        kill = project.runpytest_subprocess("--xkill")
        kill.stdout.fnmatch_lines([f"{stranger.pid} srv NO PROCESS FOUND"])
        assert stranger.poll() is None
        result = project.runpytest_subprocess()  # and the next run starts its own
        result.stdout.fnmatch_lines(["srv: started in * s"])  # terminate() above stopped it on purpose
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


def test_after_a_lost_state_the_descendants_of_what_is_found_are_stopped_too(tmp_path):
    """Issue 26, case 5: with .xprocess lost, the next start finds the server by its log or
    marker, but a child of it with output of its own and a wiped environment (``redis-server ... |
    cat``'s first half) was not walked to, and was orphaned. The descendants of each process found
    are stopped with it; a stranger beside them is not (a private pid namespace: a regression
    kills nothing outside)."""
    project = tmp_path / "p"
    project.mkdir()
    script = textwrap.dedent("""
        import shutil, time
        from xprocess import ProcessStarter, XProcess
        code = (
            "import subprocess, sys, time\\n"
            "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'], env={},"
            " stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)\\n"
            "print('ready', child.pid, flush=True)\\n"
            "time.sleep(600)\\n"
        )

        class Server(ProcessStarter):
            pattern = r"ready (\\d+)"
            args = [sys.executable, "-c", code]

        stranger = subprocess.Popen(["sleep", "600"], start_new_session=True)
        with XProcess(None, ".") as xp:
            first = xp.ensure("srv", Server)
            kid = int(first.match.group(1))
            shutil.rmtree(".xprocess")  # the state lost: nothing names the server or its child
            second = xp.ensure("srv", Server)
            deadline = time.monotonic() + 10
            while not (gone(first[0]) and gone(kid)) and time.monotonic() < deadline:
                time.sleep(0.01)
            print(json.dumps(dict(server=gone(first[0]), kid=gone(kid), stranger=stranger.poll() is None,
                                  new=second[0] != first[0])))
    """)
    assert in_pid_namespace(project, script) == {"server": True, "kid": True, "stranger": True, "new": True}


@pytest.mark.parametrize("session", ["its own", "this one"])
def test_what_a_server_forks_while_it_is_stopped_is_stopped_too(tmp_path, session):
    """Issue 26, case 6: a server that forks as it is being stopped (a master respawning a worker
    on SIGTERM, a shutdown hook) left that fork running after terminate(), never found again. What
    the processes being stopped fork meanwhile (their children, or members of their sessions once
    adopted) is stopped with them; a process this one starts meanwhile is not (a pid namespace),
    also when what is stopped is in this process's session (one of ours found by its marker)."""
    project = tmp_path / "p"
    project.mkdir()
    script = textwrap.dedent("""
        import signal, threading, time
        from xprocess import ProcessStarter, XProcess
        code = (
            "import os, signal, sys, time\\n"
            "def bye(*_):\\n"
            "    if os.fork() == 0:\\n"
            "        signal.signal(signal.SIGTERM, signal.SIG_DFL)\\n"
            "        open('worker.pid', 'w').write(str(os.getpid()))\\n"
            "        time.sleep(600)\\n"
            "    time.sleep(0.2)\\n"
            "    sys.exit(0)\\n"
            "signal.signal(signal.SIGTERM, bye)\\n"
            "print('ready', flush=True)\\n"
            "while True: time.sleep(1)\\n"
        )

        class Server(ProcessStarter):
            pattern = "ready"
            args = [sys.executable, "-c", code]

        strangers = []
        with XProcess(None, ".") as xp:
            pid = xp.ensure("srv", Server)[0]
            if SESSION == "this one":  # its state lost, it is found by its marker, in this session
                marker = xp.getinfo("srv")._marker_prefix + "0" * 16
                xp.getinfo("srv").terminate()
                os.unlink(".xprocess/srv/state.jsonl")
                os.unlink(".xprocess/srv/worker.pid")
                pid = subprocess.Popen(Server.args, env={**os.environ, "XPROCESS_ID": marker},
                                       stdout=subprocess.PIPE, cwd=".xprocess/srv").pid
                time.sleep(0.5)
            threading.Timer(0.05, lambda: strangers.append(subprocess.Popen(["sleep", "600"]))).start()
            result = xp.getinfo("srv").terminate()
            time.sleep(0.1)
            worker = int(open(".xprocess/srv/worker.pid").read())
            print(json.dumps(dict(result=result, server=gone(pid), worker=gone(worker),
                                  stranger=strangers[0].poll() is None)))
    """)
    script = f"SESSION = {session!r}\n" + script
    result = in_pid_namespace(project, script)
    if session == "this one":  # the worker, adopted once its parent died, shows no session of its own:
        del result["worker"]  # known not to be found (README, "Stopping"); the stranger is spared
        assert result == {"result": 1, "server": True, "stranger": True}
    else:
        assert result == {"result": 1, "server": True, "worker": True, "stranger": True}


def test_a_pid_recycled_while_a_server_is_stopped_does_not_make_its_holders_children_ours(tmp_path):
    """Issue 26, case 6 (a review's find): what is forked during a stop was matched to the processes
    being stopped by its parent's and session's pid alone. A worker stopped first, its pid handed
    out again meanwhile (a wrap on a busy machine; here root sets the next pid), made the new
    holder's children "forks of ours", and they were killed. They are spared: that pid must still
    name the process being stopped."""
    script = textwrap.dedent("""
        import threading, time
        from xprocess import ProcessStarter, XProcess
        code = (
            "import subprocess, sys, time\\n"
            "w2 = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\\n"
            "w = subprocess.Popen([sys.executable, '-c', 'import signal, time; "
            "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)'])\\n"
            "time.sleep(0.3)\\n"
            "print('ready', w2.pid, flush=True)\\n"
            "time.sleep(600)\\n"
        )

        class Server(ProcessStarter):  # one worker ends on SIGTERM, the other holds the stop open
            pattern = r"ready (\\d+)"
            args = [sys.executable, "-c", code]

        out = {}
        def stranger(y):  # once the first worker is gone, its pid goes to someone else's process
            while not gone(y) or os.path.exists(f"/proc/{y}"):
                time.sleep(0.01)
            with open("/proc/sys/kernel/ns_last_pid", "w") as f:
                f.write(str(y - 1))
            s = subprocess.Popen(["sh", "-c", "sleep 600 & echo $! > kid; wait"], start_new_session=True)
            out["stranger"] = s.pid
            while not os.path.exists("kid") or not open("kid").read().strip():
                time.sleep(0.01)
            out["child"] = int(open("kid").read())

        with XProcess(None, ".") as xp:
            y = int(xp.ensure("srv", Server).match.group(1))
            t = threading.Thread(target=stranger, args=(y,))
            t.start()
            result = xp.getinfo("srv").terminate(timeout=3)
            t.join()
            print(json.dumps(dict(result=result, recycled=out["stranger"] == y,
                                  stranger=not gone(out["stranger"]), child=not gone(out["child"]))))
    """)
    result = in_pid_namespace(tmp_path, script)
    assert result == {"result": 1, "recycled": True, "stranger": True, "child": True}


@pytest.mark.skipif(not xprocess._PROC_FS, reason="a removed log is seen through /proc/<pid>/fd only (Linux)")
@pytest.mark.parametrize(
    "how", ["moved", "copied, then the original's .xprocess removed", "copied, edited, removed", "forged, removed"]
)
def test_a_project_moved_to_another_file_system_keeps_no_orphan(tmp_path, how):
    """Issue 26, case 7: ``mv`` of a project to another file system (a copy, then the original
    removed) while its server runs: the log, its inode and the marker's key all differ, so the
    server was taken for a copy's, a second one started and the first orphaned. A removed log of
    a project that is gone, whose key the recorded marker has, proves the server moved with the
    project: it is restarted (its paths changed), not orphaned. A copy whose original lost its
    .xprocess (``git clean -xdf``) but still exists does not take the original's server."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("needs /dev/shm on another file system than the temporary directory")
    project = tmp_path / "p"
    project.mkdir()
    with XProcess(None, project) as xp:
        # the edited token is refused by the key alone where the server hides its marker (Redis)
        hidden = f"import os, sys; os.execve(sys.executable, [sys.executable, '-c', {SLEEPER!r}], {{}})"
        old = xp.ensure("srv", starter(hidden if how == "copied, edited, removed" else SLEEPER))[0]
    dest = Path(tempfile.mkdtemp(dir=shm)) / "q"
    try:
        if how == "moved":
            subprocess.run(["mv", str(project), str(dest)], check=True)
        elif how.startswith("copied, then"):
            subprocess.run(["cp", "-a", str(project), str(dest)], check=True)
            shutil.rmtree(project / ".xprocess")
        elif how == "forged, removed":  # the removed project's key (anyone can compute it), not its token
            subprocess.run(["cp", "-a", str(project), str(dest)], check=True)
            state = dest / ".xprocess" / "srv" / "state.jsonl"
            first, *updates = state.read_text().splitlines()
            record = json.loads(first)
            record["token"] = record["token"].partition(":")[0] + ":" + "0" * 16
            state.write_text("\n".join([json.dumps(record), *updates]) + "\n")
            shutil.rmtree(project)
        else:  # the copy's token edited to its own key: not the marker minted for the removed project
            subprocess.run(["cp", "-a", str(project), str(dest)], check=True)
            state = dest / ".xprocess" / "srv" / "state.jsonl"
            first, *updates = state.read_text().splitlines()
            record = json.loads(first)
            record["token"] = XProcess(None, dest).getinfo("srv")._marker_prefix + record["token"].partition(":")[2]
            state.write_text("\n".join([json.dumps(record), *updates]) + "\n")
            shutil.rmtree(project)
        assert os.readlink(f"/proc/{old}/fd/1").endswith(" (deleted)")
        with XProcess(None, dest) as xp:
            assert xp.getinfo("srv").isrunning() == (how == "moved")
            with (
                contextlib.nullcontext()
                if how == "moved"
                else pytest.warns(xprocess.XProcessWarning, match="recorded by another project directory")
            ):
                new = xp.ensure("srv", starter(SLEEPER))[0]
            assert new != old
            if how == "moved":
                assert wait_for(lambda: not alive(old))  # restarted: the old one stopped first
            else:
                assert alive(old)  # the original's, left alone
            xp.getinfo("srv").terminate()
    finally:
        kill_writing_under(tmp_path)
        shutil.rmtree(dest.parent)


# A child that ends with its parent (its stdin is a pipe from it): none is left behind.
PIPED_CHILD = (
    "import subprocess, sys, time\n"
    "child = subprocess.Popen([sys.executable, '-c', 'import sys; sys.stdin.read()'],"
    " stdin=subprocess.PIPE, stdout=subprocess.PIPE)\n"
    "print('ready', child.pid, flush=True)\n"
    "time.sleep(600)\n"
)


@pytest.mark.parametrize("child", [False, True], ids=["server", "its child writing to a pipe"])
def test_a_fresh_checkout_at_a_renamed_projects_old_path_leaves_its_servers_alone(tmp_path, child):
    """Issue 26, case 2: a project renamed while its server runs, then a fresh checkout at the old
    path: the checkout's first ensure() (or a terminate()) found the renamed project's server by
    its marker, whose key digests the old path, and killed it. A marker is no evidence for a
    process writing to another project's log (the renamed one's, which the kernel follows), nor
    for one whose parent or session leader does (a review's find: a child writing to a pipe)."""
    old, renamed = tmp_path / "p", tmp_path / "q"
    old.mkdir()
    with XProcess(None, old) as xp:
        started = xp.ensure("srv", starter(PIPED_CHILD, r"ready (\d+)") if child else starter(SLEEPER))
        theirs = int(started.match.group(1)) if child else started[0]
    old.rename(renamed)
    old.mkdir()  # the fresh checkout
    try:
        with XProcess(None, old) as xp:
            ours = xp.ensure("srv", starter(SLEEPER))[0]
            assert ours != theirs and alive(theirs)
            assert xp.getinfo("srv").terminate() == 1
            assert wait_for(lambda: not alive(ours)) and alive(theirs)
            assert xp.getinfo("srv").terminate() == 0 and alive(theirs)
        with XProcess(None, renamed) as xp:  # still the renamed project's, which stops it
            assert xp.getinfo("srv").isrunning() and xp.getinfo("srv").terminate() == 1
        assert wait_for(lambda: not alive(theirs))
    finally:
        kill_writing_under(tmp_path)


def test_a_grandchild_that_left_the_session_of_an_adopted_member_is_stopped_too(tmp_path):
    """Issue 27, the first bug of a branch that never landed: terminate() missed a grandchild that
    left the server's session (setsid, output to /dev/null, environment wiped) when its parent was
    a member of the server's session whose own parent had exited. The member is found by its
    session, the grandchild by its parent: both are stopped (a private pid namespace)."""
    script = textwrap.dedent("""
        import time
        from xprocess import ProcessStarter, XProcess
        code = (
            "import os, sys, time\\n"
            "if os.fork() == 0:\\n"  # a member of the server's session, which exits at once
            "    if os.fork() == 0:\\n"  # its child, adopted: still in the session
            "        open('member.pid', 'w').write(str(os.getpid()))\\n"
            "        if os.fork() == 0:\\n"  # the grandchild: a session of its own, nothing of ours on it
            "            os.setsid()\\n"
            "            fd = os.open('/dev/null', os.O_WRONLY)\\n"
            "            os.dup2(fd, 1); os.dup2(fd, 2)\\n"
            "            open('grandchild.pid', 'w').write(str(os.getpid()))\\n"
            "            os.execve(sys.executable, [sys.executable, '-c', 'import time; time.sleep(600)'], {})\\n"
            "        time.sleep(600)\\n"
            "    os._exit(0)\\n"
            "while not os.path.exists('grandchild.pid'): time.sleep(0.01)\\n"
            "time.sleep(0.2)\\n"
            "print('ready', flush=True)\\n"
            "time.sleep(600)\\n"
        )

        class Server(ProcessStarter):
            pattern = "ready"
            args = [sys.executable, "-c", code]

        stranger = subprocess.Popen(["sleep", "600"], start_new_session=True)
        with XProcess(None, ".") as xp:
            server = xp.ensure("srv", Server)[0]
            member = int(open(".xprocess/srv/member.pid").read())
            grandchild = int(open(".xprocess/srv/grandchild.pid").read())
            adopted = open(f"/proc/{member}/stat").read().rpartition(")")[2].split()[1] == "1"
            result = xp.getinfo("srv").terminate()
            print(json.dumps(dict(result=result, adopted=adopted, server=gone(server), member=gone(member),
                                  grandchild=gone(grandchild), stranger=stranger.poll() is None)))
    """)
    result = in_pid_namespace(tmp_path, script)
    expected = {"result": 1, "adopted": True, "server": True, "member": True, "grandchild": True, "stranger": True}
    assert result == expected


def test_a_restart_stops_a_process_of_ours_at_the_recorded_pid_with_another_start(tmp_path):
    """Issue 27, the second bug of a branch that never landed: a restart overlooked a process at
    the recorded pid with another start. The recorded server has exited; a child it left got its
    pid again (root sets the next pid, as a wrap would). Not the recorded process, but one writing
    to the name's log: the restart stops it and the child that made it (a private pid namespace)."""
    script = textwrap.dedent("""
        import time
        from xprocess import ProcessStarter, XProcess
        def start(pid):
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rpartition(")")[2].split()[19]
        code = (
            "import os, sys, time\\n"
            "me = os.getpid()\\n"
            "def put(name):\\n"  # whole or not at all: the test reads it the moment it appears
            "    open(name + '.tmp', 'w').write(str(os.getpid())); os.rename(name + '.tmp', name)\\n"
            "if os.fork() == 0:\\n"  # what the server leaves: it makes a process at the server's pid
            "    os.setsid()\\n"  # (a session or group the server led keeps its pid from being handed out)
            "    while os.path.exists(f'/proc/{me}'): time.sleep(0.01)\\n"  # exited and reaped
            "    for _ in range(100):\\n"  # until it has the pid (a thread elsewhere may take it first)
            "        open('/proc/sys/kernel/ns_last_pid', 'w').write(str(me - 1))\\n"
            "        if os.fork() == 0:\\n"
            "            if os.getpid() != me: os._exit(0)\\n"
            "            put('again.pid')\\n"
            "            time.sleep(600)\\n"
            "        time.sleep(0.01)\\n"
            "        if os.path.exists('again.pid'): break\\n"
            "    put('left.pid')\\n"
            "    time.sleep(600)\\n"
            "print('ready', flush=True)\\n"
            "if len(sys.argv) < 2: sys.exit(0)\\n"
            "time.sleep(600)\\n"
        )

        class Server(ProcessStarter):
            pattern = "ready"
            args = [sys.executable, "-c", code]

        class Again(Server):
            args = [sys.executable, "-c", code, "stay"]

        stranger = subprocess.Popen(["sleep", "600"], start_new_session=True)
        with XProcess(None, ".") as xp:
            server = xp.ensure("srv", Server)[0]
            try:
                os.waitpid(server, 0)
            except ChildProcessError:  # the readiness wait reaped it (it polls where waitid cannot peek)
                pass
            deadline = time.monotonic() + 10
            while not os.path.exists(".xprocess/srv/left.pid") and time.monotonic() < deadline:
                time.sleep(0.01)
            again = int(open(".xprocess/srv/again.pid").read())
            left = int(open(".xprocess/srv/left.pid").read())
            starts = {pid: start(pid) for pid in (again, left)}  # the pids are handed out again at once here
            ended = lambda pid: gone(pid) or start(pid) != starts[pid]
            same_pid = again == server
            new = xp.ensure("srv", Again, restart=True)[0]
            print(json.dumps(dict(same_pid=same_pid, again=ended(again), left=ended(left), new=not gone(new),
                                  stranger=stranger.poll() is None)))
            xp.getinfo("srv").terminate()
    """)
    result = in_pid_namespace(tmp_path, script)
    assert result == {"same_pid": True, "again": True, "left": True, "new": True, "stranger": True}
