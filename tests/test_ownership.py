"""What the plugin will and will not signal: state on disk never makes it touch a stranger.

The cases that could kill any process on the machine run inside a private pid namespace
(``unshare --pid --fork --kill-child --mount-proc``, root only), so a regression kills nothing
outside it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest
from conftest import SLEEPER, alive, ours_still_running, py, starter, terminate_all, wait_for

import xprocess
from xprocess import XProcess

SERVER_CONFTEST = """
    import json, os, pathlib, sys

    import pytest
    import xprocess
    from xprocess import ProcessStarter

    def start_of(pid):  # as the plugin records it (from /proc on Linux, else through psutil)
        return xprocess._OS.proc(pid).start

    # FORGE rewrites the recorded state of srv before the plugin reads it, as a hostile or careless
    # hand would: naming init, this pytest, its parent shell or a stranger, or with an empty marker.
    FORGE = os.environ.get("FORGE")
    STATE = pathlib.Path(__file__).parent / ".xprocess" / "srv" / "state.jsonl"
    if FORGE:
        record = {}
        for line in STATE.read_text().splitlines():
            record.update(json.loads(line))
        if FORGE == "thread-of-self":  # a thread id resolves in /proc like a pid: os.kill(tid) hits pytest
            import threading, time
            thread = threading.Thread(target=time.sleep, args=(600,), daemon=True)
            thread.start()
        pid = {"init": 1, "self": os.getpid(), "parent": os.getppid()}.get(FORGE) or int(
            thread.native_id if FORGE == "thread-of-self" else os.environ["STRANGER"]
        )
        record.update(pid=pid, start=start_of(pid))
        if FORGE == "empty-marker":
            record["token"] = ""
        STATE.write_text(json.dumps(record) + "\\n")

    @pytest.fixture
    def srv(xprocess):
        class Server(ProcessStarter):
            args = [sys.executable, "-c", "import time; print('ready', flush=True); time.sleep(600)"]
            pattern = "ready"
            popen_kwargs = {"preexec_fn": lambda: os.kill(os.getppid(), 9)} if os.environ.get("KILL_AT_SPAWN") else {}
        return xprocess.ensure("srv", Server)
"""


def make_project(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "pytest.ini").write_text("[pytest]\n")
    (path / "conftest.py").write_text(textwrap.dedent(SERVER_CONFTEST))
    (path / "test_srv.py").write_text("def test_a(srv):\n    print('PID', srv[0])\n")
    return path


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


def test_a_failed_state_write_terminates_the_child_it_just_spawned(tiny_disk):
    """The state of the running process is there; the restart's write fails (disk full)."""
    with XProcess(None, tiny_disk) as xp:
        first = xp.ensure("full", starter(SLEEPER))[0]
        fd = os.open(tiny_disk / "filler", os.O_WRONLY | os.O_CREAT)
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"x" * 4096)
        os.close(fd)
        with pytest.raises(xprocess.XProcessError, match="No space left"):
            xp.ensure("full", starter(SLEEPER), restart=True)
        assert not alive(first)
        assert ours_still_running(tiny_disk) == []


@pytest.mark.parametrize(
    "garbage",
    ['{"pid": -5}', "[" * 100_000, '{"pid": NaN}', '{"pid": 99999999999999999999}', '{"pid": {"a": [1]}}', "\x00"],
)
def test_bad_state_for_one_name_is_a_warning_and_the_others_are_handled(pytester_xp, garbage):
    make_project(pytester_xp.path)
    assert pytester_xp.runpytest_subprocess().ret == 0
    good = XProcess(None, pytester_xp.path).getinfo("srv").pid
    state = pytester_xp.path / ".xprocess" / "bad" / "state.jsonl"
    state.parent.mkdir()
    recorded = json.loads((pytester_xp.path / ".xprocess" / "srv" / "state.jsonl").read_text().splitlines()[0])
    if garbage.startswith('{"pid"'):  # a real record but for one value
        garbage = json.dumps({**recorded, "pid": None})[:-1].replace('"pid": null', garbage[1:-1]) + "}"
    state.write_text(garbage)
    for option in ("--xshow", "--xkill"):
        result = pytester_xp.runpytest_subprocess(option)
        assert result.ret == 0, result.stdout.str() + result.stderr.str()
        assert "Traceback" not in result.stdout.str() + result.stderr.str()
        result.stdout.fnmatch_lines(["bad *DEAD *- *" if option == "--xshow" else "- bad NO PROCESS FOUND"])
    assert not alive(good)  # --xkill went on to the healthy one


def test_planted_symlinks_are_not_followed(xp, tmp_path):
    target = tmp_path / "target"
    control = xp.statedir / "planted"
    control.mkdir(parents=True)
    (control / "lock").symlink_to(target)  # a lock planted as a link: replaced, not created
    xp.ensure("planted", starter(SLEEPER))
    assert not target.exists()
    assert not (control / "lock").is_symlink()

    target.write_text("precious\n")

    class SwapsItsState(xprocess.ProcessStarter):
        args = py(SLEEPER)
        pattern = "ready"

        def startup_check(self) -> bool:  # during the start, state.jsonl becomes a link
            state = self.control_dir / "state.jsonl"
            state.unlink()
            state.symlink_to(target)
            return True

    xp.ensure("planted", SwapsItsState, restart=True)
    assert target.read_text() == "precious\n"
    assert xp.getinfo("planted").isrunning()  # its state was replaced by a whole, trusted one

    log = control / "xprocess.log"
    log.unlink()
    log.symlink_to(target)  # a log link: a read never follows it
    with pytest.raises(OSError):
        xp.ensure("planted", SwapsItsState).logfile.read()


def test_a_symlinked_control_directory_is_refused(xp, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    xp.statedir.mkdir()
    (xp.statedir / "linked").symlink_to(elsewhere)
    with pytest.raises(xprocess.XProcessError, match=r"symbolic link.*Remove it"):
        xp.ensure("linked", starter(SLEEPER))
    assert list(elsewhere.iterdir()) == []


def test_one_logfile_per_name_however_often_it_is_ensured(xp):
    Starter = starter(SLEEPER)
    xp.ensure("many", Starter).logfile  # noqa: B018 - the first opens it
    before = len(os.listdir("/proc/self/fd"))
    files = {id(xp.ensure("many", Starter).logfile) for _ in range(200)}
    assert len(os.listdir("/proc/self/fd")) == before
    assert len(files) == 1


def test_reuse_in_a_read_only_project(tiny_disk):
    with XProcess(None, tiny_disk) as xp:
        first = xp.ensure("ro", starter(SLEEPER))[0]
    ro = tiny_disk / ".xprocess"
    subprocess.run(["mount", "--bind", str(ro), str(ro)], check=True)  # the same path, now read-only
    subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)], check=True)
    try:
        with XProcess(None, tiny_disk) as xp:
            assert xp.ensure("ro", starter(SLEEPER))[0] == first
            with pytest.raises(xprocess.XProcessError, match="Read-only file system"):
                xp.ensure("ro", starter(SLEEPER), restart=True)
    finally:
        subprocess.run(["umount", str(ro)], check=True)


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
