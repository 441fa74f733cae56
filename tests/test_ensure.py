"""Section 11, XProcess.ensure as a whole: reuse, restart, health checks on reuse, concurrent
sessions."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

from conftest import (
    SLEEPER,
    alive,
    conftest_source,
    kill_writing_under,
    ours_still_running,
    py,
    starter,
    terminate_all,
    wait_for,
)

from xprocess import ProcessStarter, XProcess


def test_starter_reuse_returns_the_same_process(xp):
    Starter = starter(
        "import time; print('booting'); print('ready port=1234', flush=True); time.sleep(600)", pattern=r"port=(\d+)"
    )
    first = xp.ensure("srv", Starter)
    assert (first.pid, first.logpath) == tuple(first) == (xp.getinfo("srv").pid, xp.getinfo("srv").logpath)
    assert first.match.group(1) == "1234"
    assert first.logfile.read() == ""  # right after the matched line: nothing follows
    second = xp.ensure("srv", Starter)
    assert second == first
    assert second.match.group(1) == "1234"  # from the run that started it
    # a new session reuses it too: nothing spawned, the log not rotated
    with XProcess(None, xp.rootdir) as later:
        third = later.ensure("srv", Starter)
        assert third == first
        assert third.match.group(1) == "1234"
        assert third.logfile.read() == ""  # at the end of the log
    assert not (xp.statedir / "srv" / "xprocess.log.1").exists()


def test_changed_configuration_restarts_and_keeps_the_old_log(xp):
    first = xp.ensure("cfg", starter(SLEEPER))
    second = xp.ensure("cfg", starter(SLEEPER + "  # changed"))
    assert second[0] != first[0] and not alive(first[0])
    assert (xp.statedir / "cfg" / "xprocess.log.1").read_text() == "ready\n"


def test_restart_true_restarts(xp):
    first = xp.ensure("rs", starter(SLEEPER))
    second = xp.ensure("rs", starter(SLEEPER), restart=True)
    assert second[0] != first[0] and not alive(first[0]) and alive(second[0])
    assert (xp.statedir / "rs" / "xprocess.log.1").read_text() == "ready\n"  # the old log, kept


def test_dead_process_is_restarted(xp):
    pid = xp.ensure("dies", starter(SLEEPER))[0]
    os.kill(pid, signal.SIGKILL)
    assert wait_for(lambda: not alive(pid))
    assert xp.ensure("dies", starter(SLEEPER))[0] != pid


def test_many_waiting_sessions_start_once(tmp_path):
    """Eight processes ensure one name at the same moment: one start, all get its pid."""
    counter = tmp_path / "starts"
    code = (
        "import sys; from pathlib import Path; from xprocess import XProcess, ProcessStarter\n"
        "class S(ProcessStarter):\n"
        f"    args = [sys.executable, '-c', \"import time; open({str(counter)!r}, 'a').write('x'); time.sleep(0.5);"
        " print('ready', flush=True); time.sleep(600)\"]\n"
        "    pattern = 'ready'\n"
        f"with XProcess(None, {str(tmp_path)!r}) as xp: print(xp.ensure('shared', S)[0])\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) for _ in range(8)]
    try:
        pids = {p.communicate(timeout=60)[0].strip() for p in procs}
        assert counter.read_text() == "x"
        assert len(pids) == 1
    finally:
        terminate_all(tmp_path / ".xprocess")


def test_two_concurrent_sessions_share_one_process(pytester_xp):
    code = (
        f"import time; open({str(pytester_xp.path / 'starts')!r}, 'a').write('x'); time.sleep(0.5);"
        " print('ready', flush=True); time.sleep(600)"
    )
    pytester_xp.makeconftest(conftest_source(None, code=code))
    pytester_xp.makepyfile("def test_a(srv):\n    print('PID', srv[0])\n")
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "pytest", "-s", "-p", "no:cacheprovider"],
            cwd=pytester_xp.path,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=120)[0] for run in runs]
    assert all(run.returncode == 0 for run in runs), outputs
    assert (pytester_xp.path / "starts").read_text() == "x"
    pids = {pid for out in outputs for pid in re.findall(r"PID (\d+)", out)}
    assert len(pids) == 1


CLOSES_ITS_SOCKET = """
import os, signal, socket, sys, time
server = socket.socket()
server.bind(("127.0.0.1", int(sys.argv[1])))
server.listen()
signal.signal(signal.SIGUSR1, lambda *_: server.close())  # alive, but no longer listening
print("ready", flush=True)
while True:
    time.sleep(1)
"""


class ClosesItsSocket(ProcessStarter):
    pattern = "ready"

    @property
    def args(self) -> list[object]:
        return [sys.executable, "-c", CLOSES_ITS_SOCKET, self.port]

    def startup_check(self) -> bool:
        return self.listening()


def test_a_process_alive_but_not_listening_is_restarted_on_reuse(pytester_xp):
    pytester_xp.makeconftest(
        "import pytest, sys\nfrom xprocess import ProcessStarter\n"
        f"CLOSES_ITS_SOCKET = {CLOSES_ITS_SOCKET!r}\n"
        + textwrap.dedent("""
        class ClosesItsSocket(ProcessStarter):
            pattern = "ready"

            @property
            def args(self):
                return [sys.executable, "-c", CLOSES_ITS_SOCKET, self.port]

            def startup_check(self):
                return self.listening()

        @pytest.fixture
        def srv(xprocess):
            return xprocess.ensure("srv", ClosesItsSocket)
    """)
    )
    pytester_xp.makepyfile("def test_a(srv):\n    pass\n")
    assert pytester_xp.runpytest_subprocess().ret == 0
    info = XProcess(None, pytester_xp.path).getinfo("srv")
    first = info.pid
    pytester_xp.runpytest_subprocess().stdout.fnmatch_lines(["xprocess: reused srv"])  # healthy: reused
    import os
    import signal

    os.kill(first, signal.SIGUSR1)
    probe = ProcessStarter(info.controldir, None)  # type: ignore[arg-type]
    assert wait_for(lambda: not probe.listening(info.port))
    result = pytester_xp.runpytest_subprocess()
    assert result.ret == 0
    result.stdout.fnmatch_lines(["srv: restarted in * (its startup_check failed on reuse)"])
    assert not alive(first) and info.pid != first


def test_check_on_reuse_false_reuses_without_asking(xp):
    first = xp.ensure("srv", ClosesItsSocket)
    import os
    import signal

    os.kill(first[0], signal.SIGUSR1)
    probe = ProcessStarter(xp.statedir / "srv", xp)
    assert wait_for(lambda: not probe.listening(first.port))
    unchecked = type("Unchecked", (ClosesItsSocket,), {"check_on_reuse": False})
    assert xp.ensure("srv", unchecked)[0] == first[0]
    assert xp.ensure("srv", ClosesItsSocket)[0] != first[0]


def test_a_check_that_blocks_on_reuse_counts_as_failed(xp):
    first = xp.ensure("srv", ClosesItsSocket)
    hang = threading.Event()
    calls = []

    class Blocking(ClosesItsSocket):
        def startup_check(self) -> bool:
            calls.append(1)
            if len(calls) == 1:  # the check on reuse blocks; the new start's checks do not
                hang.wait(60)
            return self.listening()

    try:
        second = xp.ensure("srv", Blocking)
    finally:
        hang.set()  # lets the abandoned check's thread end
    assert second[0] != first[0]
    assert len(calls) >= 2


def test_at_the_descriptor_limit_a_running_server_is_neither_restarted_nor_orphaned(xp):
    """Issue 26, case 15: a pytest out of file descriptors could not read the state, /proc or the
    lease, and took that for "not running" (a restart, or a second server beside the first) or
    failed with a misleading message ("make it writable", an ImportError). Now, wherever the limit
    is hit, ensure() raises one error saying so, and the server is reused once descriptors are back."""
    pid = xp.ensure("srv", starter(SLEEPER))[0]
    try:
        at_the_limit(xp, pid)
    finally:
        kill_writing_under(xp.rootdir)  # a broken plugin (tests/mutate.py) may leave a second server


def at_the_limit(xp: XProcess, pid: int) -> None:
    child = subprocess.run(
        py(f"""
            import os
            import xprocess
            from xprocess import XProcess, XProcessError
            from conftest import starter, SLEEPER

            def at_the_limit(spare, what):
                held = []
                try:
                    while True:
                        held.append(os.open("/dev/null", os.O_RDONLY))
                except OSError:
                    pass
                for _ in range(spare):
                    os.close(held.pop())
                try:
                    return what()
                except XProcessError as exc:
                    return "ulimit" if "ran out of file descriptors (or memory)" in str(exc) else repr(exc)
                except BaseException as exc:
                    return repr(exc)
                finally:
                    for fd in held:
                        os.close(fd)

            with XProcess(None, {str(xp.rootdir)!r}) as xp:
                for spare in range(12):
                    srv = at_the_limit(spare, lambda: str(xp.ensure("srv", starter(SLEEPER))[0]))
                    fresh = at_the_limit(spare, lambda: xp.ensure(f"fresh{{spare}}", starter(SLEEPER)) and "started")
                    xp.getinfo(f"fresh{{spare}}").terminate()
                    proc = at_the_limit(spare, lambda: "seen" if xprocess._OS.proc(os.getpid()) else "NONE")
                    print(spare, srv, fresh, proc, flush=True)
        """),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=xp.rootdir,  # not the checkout: the module under test (a mutated copy) is the one imported
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(Path(__file__).parent)])),
        },
    )
    rows = [line.split(" ", 3) for line in child.stdout.splitlines()]
    assert len(rows) == 12, child.stderr
    srv, fresh, proc = ({row[i] for row in rows} for i in (1, 2, 3))
    assert srv == {str(pid), "ulimit"} and rows[-1][1] == str(pid), rows  # reused, or a clear error
    assert fresh == {"started", "ulimit"} and rows[-1][2] == "started", rows  # started, or a clear error
    assert proc == {"seen", "ulimit"}, rows  # a process is never "gone" for want of a descriptor
    assert xp.ensure("srv", starter(SLEEPER))[0] == pid
    assert [p.pid for p in ours_still_running(xp.rootdir)] == [pid]
