"""Section 4, spawning and waiting: the pattern read line by line as the log grows, startup checks,
the one deadline, early exits with their hints (a port in use names its holder), all evented."""

from __future__ import annotations

import fcntl
import os
import re
import subprocess
import sys
import threading
import tracemalloc
from pathlib import Path

import psutil
import pytest
from conftest import (
    SLEEPER,
    alive,
    py,
    recorded_pid,
    starter,
    wait_for,
)

import xprocess
from xprocess import (
    ProcessExitedError,
    ProcessStarter,
    StartupTimeoutError,
    XProcessError,
)


def test_the_old_process_s_grace_period_does_not_eat_the_new_start_s_timeout(xp, monkeypatch):
    monkeypatch.setattr(xprocess, "TERMINATE_TIMEOUT", 3.0)  # the grace period, longer than the timeout
    stubborn = "import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN); " + SLEEPER
    first = xp.ensure("stubborn", starter(stubborn, timeout=2))[0]
    # its configuration changes: the old one takes the whole grace period (3 s) to end
    slow_start = "import time; time.sleep(1); print('ready', flush=True); time.sleep(600)"
    second = xp.ensure("stubborn", starter(slow_start, timeout=2))
    assert second[0] != first and not alive(first)
    assert second.match is not None


def test_a_reader_past_its_deadline_stops_after_one_chunk(tmp_path):
    """A log written faster than it is read must not hold the wait past the timeout."""
    log = tmp_path / "log"
    log.write_bytes(b"chatter\n" * (4 * 2**20 // 8))  # 4 MiB: 16 chunks
    reader = xprocess._LogLines(log, deadline=0.0)  # the deadline has passed
    try:
        lines = sum(1 for _ in reader.lines())
    finally:
        reader.close()
    assert 0 < lines <= xprocess._CHUNK // 8


def test_a_chatty_child_still_times_out(xp):
    code = "import os\nwhile True: os.write(1, b'x' * 65535 + b'\\n')"
    with pytest.raises(StartupTimeoutError, match="not ready after its timeout of 1 s"):
        xp.ensure("chatty", starter(code, timeout=1))
    (xp.statedir / "chatty" / "xprocess.log").unlink()  # it may be large


def test_lines_the_child_appends_through_its_own_handle_are_kept(xp):
    """The log is opened in append mode: a child writing through a handle of its own (as a
    server reopening its log file does) does not overwrite what its stdout wrote, nor the reverse."""
    code = """
        import os, sys, time
        print("first line", flush=True)
        with open(os.path.join(os.getcwd(), "xprocess.log"), "a") as own:
            own.write("ready\\n")
        print("third line", flush=True)
        time.sleep(600)
    """
    started = xp.ensure("appends", starter(code))
    assert started.match is not None and started.match.string == "ready\n"
    assert wait_for(lambda: started[1].read_text().splitlines() == ["first line", "ready", "third line"])


def test_lone_cr_after_an_overlong_line_ends_it(tmp_path):
    """A line over 1 MiB whose "\\r" comes as the last byte of a read, then the ready line."""
    log = tmp_path / "log"
    with open(log, "wb") as f:
        f.write(b"x" * (2 * 2**20) + b"\r")
    reader = xprocess._LogLines(log)
    try:
        assert [len(line) for line, _ in reader.lines()] == []  # "\r" may be half of "\r\n": wait
        with open(log, "ab") as f:
            f.write(b"ready\r")
        lines = [line for line, _ in reader.lines()]
        assert lines[0] == "x" * 2**20 + "\n"
        assert reader.partial()[0] == "ready\n"
    finally:
        reader.close()


def test_an_infinite_timeout_means_no_deadline(xp):
    started = xp.ensure("forever", starter(SLEEPER, timeout=float("inf")))
    assert started.match is not None


def test_timeout_that_poll_cannot_take_is_capped(xp):
    """A huge finite timeout works too (poll() takes at most ~24.8 days in ms)."""
    started = xp.ensure("huge", starter(SLEEPER, timeout=10.0**12))
    assert started.match is not None


def test_logfile_is_positioned_after_the_matched_line(xp):
    Starter = starter("import time; print('a'); print('ready'); print('after'); time.sleep(600)")
    result = xp.ensure("pos", Starter)
    assert wait_for(lambda: "after" in result[1].read_text())
    assert result.logfile.readline() == "after\n"


def test_startup_check_only(xp, tmp_path):
    flag = tmp_path / "flag"
    code = f"import time, pathlib; time.sleep(0.3); pathlib.Path({str(flag)!r}).touch(); time.sleep(600)"

    class Starter(ProcessStarter):
        args = py(code)

        def startup_check(self):
            return flag.exists()

    result = xp.ensure("check", Starter)
    assert flag.exists() and result.match is None


def test_startup_check_oserror_means_not_yet(xp):
    calls = []

    class Starter(ProcessStarter):
        args = py(SLEEPER)
        pattern = "ready"

        def startup_check(self):
            calls.append(1)
            if len(calls) < 3:
                raise ConnectionRefusedError
            return True

    xp.ensure("refused", Starter)
    assert len(calls) == 3


def test_startup_check_other_errors_propagate_and_terminate(xp):
    class Starter(ProcessStarter):
        args = py(SLEEPER)
        pattern = "ready"

        def startup_check(self):
            raise KeyError("broken check")

    with pytest.raises(KeyError, match="broken check"):
        xp.ensure("broken", Starter)
    info = xp.getinfo("broken")
    assert not info.isrunning() and not alive(info.pid)


def test_keyboard_interrupt_during_wait_terminates_the_half_started_tree(xp):
    class Starter(ProcessStarter):
        args = py(
            "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']);"
            " print('ready', flush=True); time.sleep(600)"
        )
        pattern = "ready"

        def startup_check(self):
            tree.extend(psutil.Process(self.process.getinfo("ctrlc").pid).children())
            raise KeyboardInterrupt

    tree: list[psutil.Process] = []
    with pytest.raises(KeyboardInterrupt):
        xp.ensure("ctrlc", Starter)
    info = xp.getinfo("ctrlc")
    assert not alive(info.pid)
    assert len(tree) == 1 and not alive(tree[0].pid)  # the grandchild too
    assert info.terminate() == 0  # nothing of it was left to terminate


EVENTS = pytest.mark.skipif(
    not (sys.platform.startswith("linux") and hasattr(os, "pidfd_open")),
    reason="inotify and pidfd are Linux's (tox -e portable hides them: the polling path is tested there)",
)


@EVENTS
def test_the_wait_sleeps_on_events_not_on_a_timer(xp):
    """During a 1 s wait the waiting thread sleeps until the write: a handful of context switches,
    where polling every 10 ms would make about a hundred (counted by the OS, not timed)."""
    import resource

    code = "import time; time.sleep(1); print('ready', flush=True); time.sleep(600)"
    xp.ensure("warmup", starter(code))  # the first ensure imports what it needs
    before = resource.getrusage(resource.RUSAGE_THREAD).ru_nvcsw
    xp.ensure("evented", starter(code))
    switches = resource.getrusage(resource.RUSAGE_THREAD).ru_nvcsw - before
    assert switches < 40, f"{switches} voluntary context switches during a 1 s wait: is it polling?"


@EVENTS
def test_waker_is_woken_by_a_write_and_by_an_exit(tmp_path):
    log = tmp_path / "log"
    log.write_bytes(b"")
    waker = xprocess._Wakeups()
    try:
        with waker.watching(log):
            assert waker._poll.poll(0) == []
            with open(log, "ab") as f:
                f.write(b"line\n")
            assert [fd for fd, _ in waker._poll.poll(0)] == [waker._inotify]
            waker.wait(0)  # drains
            child = subprocess.Popen(["true"])
            waker.wake_on_exit(child.pid)
            child.wait()
            assert [fd for fd, _ in waker._poll.poll(0)] == [waker._pidfd]
    finally:
        waker.close()


@EVENTS
def test_a_finished_watch_never_wakes_the_next_wait(tmp_path):
    """The watch of a finished wait is removed when the next begins (not on the way to ensure()'s
    return): the first server's chatter wakes no later wait, and the kernel keeps one watch."""
    first, second = tmp_path / "first", tmp_path / "second"
    first.write_bytes(b"")
    second.write_bytes(b"")
    waker = xprocess._Wakeups()

    def watches():
        with open(f"/proc/self/fdinfo/{waker._inotify}") as f:
            return sum(line.startswith("inotify wd:") for line in f)

    try:
        with waker.watching(first):
            pass
        with waker.watching(second):
            with open(first, "ab") as f:
                f.write(b"chatter\n")
            assert waker._poll.poll(0) == []
            assert watches() == 1
            with waker.watching(first):  # nested (a startup_check's ensure()): gone at its end
                assert watches() == 2
            assert watches() == 1
            waker.wait(0)  # drains the kernel's note that the inner watch was removed
            with open(first, "ab") as f:
                f.write(b"chatter\n")
            assert waker._poll.poll(0) == []
    finally:
        waker.close()


def test_half_line_is_not_a_line_until_its_end_comes(tmp_path):
    log = tmp_path / "log"
    log.write_bytes(b"first\nxx")
    reader = xprocess._LogLines(log)
    try:
        assert list(reader.lines()) == [("first\n", 6)]  # "xx" may go on: it is held back
        assert reader.partial() == ("xx", 8)  # what the wait matches once output has paused
        with open(log, "ab") as f:
            f.write(b"yy\r")
        assert list(reader.lines()) == []  # a "\r" may be the start of "\r\n"
        with open(log, "ab") as f:
            f.write(b"\nnext\n")
        assert list(reader.lines()) == [("xxyy\n", 12), ("next\n", 17)]
    finally:
        reader.close()


def test_prompt_without_newline_matches_once_output_pauses(xp):
    code = "import sys, time; sys.stdout.write('db ready> '); sys.stdout.flush(); time.sleep(600)"
    result = xp.ensure("prompt", starter(code, pattern=r"ready> $"))
    assert result.match.group() == "ready> "


@pytest.mark.parametrize("ending", [b"\r\n", b"\r"])
def test_crlf_and_cr_endings_count_as_newline(xp, ending):
    code = f"import os, time; os.write(1, b'noise' + {ending!r} + b'ready' + {ending!r}); time.sleep(600)"
    result = xp.ensure("crlf", starter(code, pattern=r"^ready\n$"))
    assert result.match.string == "ready\n"


def test_invalid_utf8_is_replaced_not_fatal(xp):
    code = r"import os, time; os.write(1, b'\xff\xfe bad\nready \xc3\n'); time.sleep(600)"
    result = xp.ensure("utf8", starter(code, pattern=r"ready (.)"))
    assert result.match.group(1) == "\ufffd"


def test_no_cap_on_lines_before_the_ready_line(xp):
    code = "import sys, time; sys.stdout.write('chatter\\n' * 200000 + 'ready\\n'); sys.stdout.flush(); time.sleep(600)"
    assert xp.ensure("deep", starter(code)).match.string == "ready\n"


def test_overlong_line_is_cut_and_the_next_line_still_matches(xp):
    code = """
        import os, time
        for _ in range(100): os.write(1, b'x' * (1 << 20))
        os.write(1, b'\\nready\\n'); time.sleep(600)
    """
    assert xp.ensure("long", starter(code, timeout=60)).match.string == "ready\n"


def test_max_read_lines_fails_and_terminates(xp):
    code = "import time; [print('line', i) for i in range(10)]; print('ready', flush=True); time.sleep(600)"
    with pytest.raises(XProcessError, match="not in its first 5 lines") as excinfo:
        xp.ensure("capped", starter(code, max_read_lines=5))
    assert not alive(xp.getinfo("capped").pid)
    assert "line 4" in str(excinfo.value)


def test_a_line_from_an_earlier_start_never_counts(xp):
    xp.ensure("again", starter(SLEEPER))
    silent = starter("import time; time.sleep(600)", timeout=0.5)
    with pytest.raises(StartupTimeoutError):
        xp.ensure("again", silent, restart=True)


def test_early_exit_fails_at_once_with_everything_needed(xp):
    code = "import sys; print('boom: cannot bind'); sys.exit(3)"
    with pytest.raises(ProcessExitedError) as excinfo:
        xp.ensure("crash", starter(code, timeout=60))
    err = excinfo.value
    message = str(err)
    assert err.exitcode == 3 and err.name == "crash"
    for part in ("'crash'", "exited with code 3", "'ready'", "waited:", str(err.logpath), "boom: cannot bind"):
        assert part in message
    assert isinstance(err, RuntimeError)
    assert not xp.getinfo("crash").isrunning()


def test_timeout_is_a_timeout_error_and_explains_an_empty_log(xp):
    with pytest.raises(TimeoutError) as excinfo:
        xp.ensure("silent", starter("import time; time.sleep(600)", timeout=0.3))
    assert isinstance(excinfo.value, StartupTimeoutError)
    assert "buffering" in str(excinfo.value) and "timeout of 0.3 s" in str(excinfo.value)
    assert str(excinfo.value).endswith("hint: if it is only slow to get ready, raise the starter's timeout (now 0.3 s)")
    assert not alive(xp.getinfo("silent").pid)


def test_exit_by_signal_is_reported(xp):
    code = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
    with pytest.raises(ProcessExitedError, match="exited with code -9"):
        xp.ensure("killed", starter(code))


def test_a_gigabyte_of_log_before_the_ready_line_in_bounded_memory(xp):
    code = """
        import os, time
        block = (b'x' * 4095 + b'\\n') * 256  # 1 MiB of 4 KiB lines
        for _ in range(1024):
            os.write(1, block)
        os.write(1, b'ready\\n'); time.sleep(600)
    """
    tracemalloc.start()
    try:
        result = xp.ensure("gig", starter(code, timeout=240))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    try:
        assert result.match.string == "ready\n"
        assert result[1].stat().st_size > 2**30
        assert peak < 16 * 2**20, f"peak Python allocations {peak / 2**20:.1f} MiB"
    finally:
        result[1].unlink()  # a gigabyte is too much to leave in the temporary directory


def test_a_last_line_without_newline_matches_when_the_child_exits(xp):
    code = "import sys; sys.stdout.write('ready> '); sys.stdout.flush()"  # and it exits at once
    started = xp.ensure("prompt", starter(code, pattern="ready>"))
    assert started.match.string == "ready> "


def test_a_child_reaped_by_someone_else_is_an_exit_not_a_hang(xp):
    class ReapsIt(ProcessStarter):
        args = py("print('ready', flush=True)")  # and it exits
        pattern = "ready"
        timeout = 30

        def startup_check(self):  # someone else in this process reaps the child first
            os.waitpid(self.process.getinfo("reaped").pid, 0)
            return False

    with pytest.raises(ProcessExitedError, match="exited with code 0"):
        xp.ensure("reaped", ReapsIt)


def test_logfile_after_an_overlong_line_is_right_after_the_ready_line(xp):
    """The bytes cut from an overlong line still count in the offset ``.logfile`` starts at."""
    code = """
        import os, time
        os.write(1, b'x' * (3 << 20) + b'\\nready\\nafter\\n'); time.sleep(600)
    """
    started = xp.ensure("long", starter(code, timeout=60))
    assert started.match.string == "ready\n"
    assert started.logfile.readline() == "after\n"


def test_max_read_lines_counts_only_non_blank_lines(xp):
    code = "import time; print('\\n' * 20 + '  \\nready', flush=True); time.sleep(600)"
    assert xp.ensure("blanks", starter(code, max_read_lines=3)).match.string == "ready\n"


@pytest.mark.skipif(
    not (sys.platform.startswith("linux") and hasattr(os, "pidfd_open")),
    reason="the evented wait is Linux's (inotify, pidfd); elsewhere waits poll",
)
def test_a_nested_ensure_leaves_the_outer_wait_and_later_waits_evented(xp):
    """Item 6: ensure() called from a startup_check: the inner wait has watches of its own, the
    outer ones come back, and no pidfd is left registered: once the inner server exits, a later
    wait still sleeps on its events instead of waking at once (a spin at 100 % CPU)."""
    import resource

    inner = starter(SLEEPER)

    class Outer(xprocess.ProcessStarter):
        pattern = "ready"
        args = py(SLEEPER)

        def startup_check(self) -> bool:
            xp.ensure("inner", inner)
            return True

    xp.ensure("outer", Outer)
    assert xp.getinfo("inner").terminate() == 1
    slow = "import time; time.sleep(1); print('ready', flush=True); time.sleep(600)"
    before = resource.getrusage(resource.RUSAGE_THREAD)
    xp.ensure("later", starter(slow))
    after = resource.getrusage(resource.RUSAGE_THREAD)
    switches = after.ru_nvcsw - before.ru_nvcsw
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    assert switches < 40, f"{switches} voluntary context switches during a 1 s wait: a leaked watch?"
    assert cpu < 0.5, f"{cpu:.2f} s of CPU during a 1 s wait: it spins on a leaked watch"  # counted, not timed


def test_the_lock_wait_and_the_start_share_one_deadline(xp):
    """Item 9: the timeout is the whole wait. Another session holds the start lock for 1.5 s and
    the process needs 1 s more to be ready: with a timeout of 2 s that is a timeout, where a full
    timeout for each would have succeeded."""
    control = xp.getinfo("srv").controldir
    control.mkdir(parents=True)
    os.chmod(xp.statedir, 0o700)
    lock = os.open(control / "lock", os.O_RDONLY | os.O_CREAT, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX)
    release = threading.Timer(1.5, lambda: os.close(lock))
    release.start()
    slow = "import time; time.sleep(1); print('ready', flush=True); time.sleep(600)"
    try:
        with pytest.raises(StartupTimeoutError):
            xp.ensure("srv", starter(slow, timeout=2))
    finally:
        release.join()


def test_exit_code_0_before_ready_hints_at_a_daemon(xp):
    with pytest.raises(ProcessExitedError) as excinfo:
        xp.ensure("daemon", starter("print('forking into the background')"))
    assert "hint: it exited with code 0 before it was ready: it probably went into the background" in str(excinfo.value)


def test_exit_code_1_gives_no_daemon_hint(xp):
    with pytest.raises(ProcessExitedError) as excinfo:
        xp.ensure("fails", starter("import sys; sys.exit(1)"))
    assert "hint:" not in str(excinfo.value)


@pytest.fixture
def stranger():
    """Another program listening on a port the OS chose."""
    code = (
        "import socket, sys, time\n"
        "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n"
        "print(s.getsockname()[1], flush=True); time.sleep(600)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        yield proc, int(proc.stdout.readline())
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the holder is found in /proc")
def test_a_port_in_use_names_the_process_holding_it(xp, stranger):
    proc, port = stranger
    server = (
        "import socket, sys\n"
        "port = int(sys.argv[1])\n"
        "try:\n"
        "    socket.socket().bind(('127.0.0.1', port))\n"
        "except OSError as e:\n"
        "    print(f'bind 127.0.0.1:{port}: {e.strerror}', flush=True); sys.exit(1)\n"
    )
    with pytest.raises(ProcessExitedError) as excinfo:
        xp.ensure("busy", starter("", pattern="listening", args=[*py(server), str(port)]))
    message = str(excinfo.value)
    assert "Address already in use" in message
    assert f"hint: port {port} is in use by pid {proc.pid}: {sys.executable} -c import socket" in message


def test_address_in_use_without_a_visible_holder_still_hints(xp):
    with pytest.raises(ProcessExitedError) as excinfo:
        xp.ensure(
            "busy", starter("import sys; print('bind: Address already in use'); sys.exit(1)", pattern="listening")
        )
    assert "hint: its log says an address is already in use" in str(excinfo.value)


def test_a_busy_kept_port_taken_by_our_own_server_is_not_blamed(xp):
    """A server that listens on its port but never prints its pattern times out: not a port clash."""
    code = (
        "import socket, sys, time\n"
        "s = socket.socket(); s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen(); time.sleep(600)\n"
    )

    class Quiet(starter("", timeout=1)):  # type: ignore[misc]
        @property
        def args(self):
            return [*py(code), str(self.port)]

    with pytest.raises(Exception) as excinfo:
        xp.ensure("quiet", Quiet)
    assert "hint: port" not in str(excinfo.value)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the holder is found in /proc")
def test_a_server_of_this_start_on_its_port_whose_marker_is_gone_is_named_as_its_own(xp):
    """Issue 28, 7: a misspelled pattern named the very server started for the name as the holder
    of its port (redis rewrites its process title over its environment, marker and all). Here the
    server execs itself with an empty environment: the hint says it is its own, and that it runs."""
    listen = (
        "import socket, sys, time\n"
        "s = socket.socket(); s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen()\n"
        "print('Ready to accept connections', flush=True); time.sleep(600)\n"
    )
    code = "import os, sys; os.execve(sys.executable, [sys.executable, '-c', sys.argv[1], sys.argv[2]], {})"

    class Misspelled(starter("", pattern="ready to accept", timeout=1)):  # type: ignore[misc]
        @property
        def args(self):
            return [*py(code), listen, str(self.port)]

    with pytest.raises(StartupTimeoutError) as excinfo:
        xp.ensure("redisish", Misspelled)
    message = str(excinfo.value)
    assert "hint: port" not in message
    assert re.search(r"hint: its own process \(pid \d+\) listens on port \d+: it runs", message), message
    assert "no line of its log matched the pattern" in message


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the holder is found in /proc")
def test_a_daemon_with_the_names_marker_on_its_port_is_said_to_be_stopped_with_the_start_and_is(xp, tmp_path):
    """The daemon a start left, in a session of its own, writing nowhere, but with the marker in
    its environment: the hint names it as started for the name, and says it is stopped with the
    start; it is."""
    pidfile = tmp_path / "daemon.pid"
    code = (
        "import os, socket, sys, time\n"
        "if os.fork():\n"
        f"    while not os.path.exists({str(pidfile)!r}): time.sleep(0.01)\n"
        "    print('went into the background', flush=True); os._exit(0)\n"
        "os.setsid()\n"
        "null = os.open(os.devnull, os.O_RDWR)\n"
        "for fd in (0, 1, 2): os.dup2(null, fd)\n"
        "s = socket.socket(); s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen()\n"
        f"open({str(pidfile)!r} + '.tmp', 'w').write(str(os.getpid()))\n"
        f"os.rename({str(pidfile)!r} + '.tmp', {str(pidfile)!r})\n"
        "time.sleep(600)\n"
    )

    class Daemon(starter("", pattern="ready", timeout=30)):  # type: ignore[misc]
        @property
        def args(self):
            return [*py(code), str(self.port)]

    with pytest.raises(ProcessExitedError, match="exited with code 0 before it was ready") as excinfo:
        xp.ensure("daemon", Daemon)
    daemon = int(pidfile.read_text())
    assert f"was held by pid {daemon}, started for 'daemon' (it has its marker): it is stopped with the rest" in str(
        excinfo.value
    )
    assert not alive(daemon)


def test_child_processes_are_in_their_own_session(project):
    project.runpytest_subprocess().assert_outcomes(passed=1)
    pid = recorded_pid(project)
    assert os.getsid(pid) == pid and os.getpgid(pid) == pid  # a session and a group of its own
    assert os.getsid(pid) != os.getsid(0)


def test_a_daemonizing_server_whose_check_passes_is_a_failed_start_naming_the_daemon(xp, tmp_path):
    """Issue 26, case 8: a server that daemonizes (it forks, the fork writes to /dev/null and
    listens, the process started exits 0: redis-server --daemonize yes) while its startup_check
    passes was reported started; its daemon, which nothing proves to be ours, was orphaned, one
    more on each run. Its check passing after it exited is a failed start, with the daemon hint
    and the pid that holds its port."""
    pidfile = tmp_path / "daemon.pid"
    daemon_code = f"""if 1:
        import os, socket, sys, time
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", int(sys.argv[1])))
        s.listen()
        open({str(pidfile)!r}, "w").write(str(os.getpid()))
        os.write(int(sys.argv[2]), b"x")
        time.sleep(600)
    """
    code = f"""
        import os, sys
        r, w = os.pipe()
        if os.fork():
            os.read(r, 1)  # the daemon listens: the process started exits
            os._exit(0)
        os.setsid()
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.set_inheritable(w, True)
        # no environment, output to /dev/null: nothing proves it ours (Redis rewrites its title)
        os.execve(sys.executable, [sys.executable, "-c", {daemon_code!r}, sys.argv[1], str(w)], {{}})
    """

    class Daemon(ProcessStarter):
        pattern = None
        timeout = 30

        @property
        def args(self):
            return [*py(code), str(self.port)]

        def startup_check(self):  # its first call passes, as the process started exits (here: once it has)
            started = self.process.getinfo("daemon").pid
            wait_for(lambda: Path(f"/proc/{started}/stat").read_text().rpartition(")")[2].split()[0] == "Z")
            return self.listening()

    try:
        with pytest.raises(
            ProcessExitedError, match="exited with code 0: its startup_check passed, but for another"
        ) as e:
            xp.ensure("daemon", Daemon)
        daemon = int(pidfile.read_text())
        assert "went into the background (daemonized)" in str(e.value)
        assert f"is in use by pid {daemon}" in str(e.value)
        # issue 28, 10: the daemon is left running (nothing proves it ours): the message says so, and how to stop it
        assert f"so it keeps running: stop it yourself (kill {daemon})" in str(e.value)
        assert "the log is empty: it wrote nothing to it before it exited" in str(e.value)
        assert "buffering" not in str(e.value)  # nothing to flush: it exited
        assert alive(daemon)
    finally:
        if pidfile.exists():
            os.kill(int(pidfile.read_text()), 9)
