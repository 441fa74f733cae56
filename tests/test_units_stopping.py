"""The signalling core of a stop, over the test's own short-lived children: ``_signal`` (only to a
process whose pid still names it), ``_wait_gone`` (what is still there, zombies reaped when they
are ours) and ``_terminate`` (SIGTERM, SIGCONT to a stopped process, SIGKILL after the grace,
forks made during the stop, per name 1, 0 or -1), each case in milliseconds.

What a child was sent shows in what it prints (a handler) or in how it ended: Linux decides a
process's end when a fatal signal is sent, so a SIGKILL after a SIGTERM still ends it "by
SIGTERM". A synthetic answer stands in only where no real process gives one on demand: a refused
signal (EPERM), a process that SIGKILL does not end (stuck in the kernel), a process reaped
between two looks, a stop that began just before a fork. The stops of real servers through the
public API stay in test_stopping.py."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from typing import Iterator

import pytest

import xprocess

PYTHON = [sys.executable, "-I", "-S", "-c"]

# A child that prints "ready" once its handlers are set, "term" on SIGTERM (then exits) and
# "cont" on SIGCONT. With "fork", a shutdown hook forks on SIGTERM: the fork prints its pid and
# takes SIGTERM as its parent did. Each waits on its stdin, so it ends when the test does, even a
# test killed by mutmut's timeout (a fork too: it is nobody's child here to get a parent-death signal).
HANDLER = """
    import os, signal, sys, time

    class Term(Exception):
        pass

    def on_term(*_):
        raise Term

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGCONT, lambda *_: os.write(1, b"cont\\n"))
    try:
        print("ready", flush=True)
        while os.read(0, 1):
            pass
    except Term:
        pass
    try:
        if sys.argv[1:] == ["fork"] and os.fork() == 0:
            os.write(1, f"fork {os.getpid()}\\n".encode())
            while os.read(0, 1):
                pass
    except Term:
        pass
    os.write(1, b"term\\n")
    time.sleep(0.02)  # a SIGCONT sent with the SIGTERM is handled before the exit
    os._exit(0)
"""
IGNORES_TERM = ["sh", "-c", 'trap "" TERM; echo ready; exec sleep 600']

# A parent that never reaps its child: the child stays a zombie.
KEEPS_A_ZOMBIE = "import os, time\npid = os.fork() or os._exit(0)\nprint(pid, flush=True)\ntime.sleep(600)"

# A session leader whose child (not stopped itself) forks a process on a line read (one that
# ends with the test: at the end of its stdin) and prints how that fork ended.
REPORTS_ITS_FORK = """
    import os, subprocess, sys
    child = '''
    import os, sys
    print("child", os.getpid(), flush=True)
    sys.stdin.readline()
    pid = os.fork()
    if pid == 0:
        os.execvp("sh", ["sh", "-c", "read x"])
    print("fork", pid, flush=True)
    print("ended", os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), flush=True)
    '''
    subprocess.run([sys.executable, "-I", "-S", "-c", child])
"""


LIBC = xprocess._libc()


def dies_with_me() -> None:
    """(In the child, before exec.) SIGKILL when the test's process dies, even killed by mutmut's
    timeout, which no finalizer sees."""
    if LIBC is not None:
        LIBC.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG


class Children:
    """What a test starts: each killed (when its pid still names it) and reaped at the end."""

    def __init__(self) -> None:
        self.popens: list[subprocess.Popen[bytes]] = []
        self.others: list[xprocess._Proc] = []  # grandchildren, by pid and start

    def start(self, args: list[str], session: bool = False, stdin: int | None = None) -> subprocess.Popen[bytes]:
        popen = subprocess.Popen(
            args, bufsize=0, stdin=stdin, stdout=subprocess.PIPE, start_new_session=session, preexec_fn=dies_with_me
        )
        self.popens.append(popen)
        return popen

    def ready(self, args: list[str], session: bool = False) -> subprocess.Popen[bytes]:
        popen = self.start(args, session)
        assert line(popen) == b"ready"
        return popen

    def python(self, *argv: str, session: bool = False) -> subprocess.Popen[bytes]:
        popen = self.start([*PYTHON, textwrap.dedent(HANDLER), *argv], session, stdin=subprocess.PIPE)
        assert line(popen) == b"ready"
        return popen

    def adopt(self, proc: xprocess._Proc | None) -> xprocess._Proc:
        """Kill and reap ``proc`` at the end too (a grandchild: orphaned, it is adopted here)."""
        assert proc is not None
        self.others.append(proc)
        return proc

    def adopt_if_of(self, pid: int, session: int) -> None:
        """Kill and reap ``pid`` at the end too if it still runs in ``session``."""
        p = xprocess._OS.proc(pid)
        if p is not None and p.sid == session:
            self.others.append(p)

    def cleanup(self) -> None:
        with xprocess._subreaper():  # an orphan of what is killed here is reaped here, not by init
            for popen in self.popens:
                popen.kill()  # (nothing if the code under test reaped it: Popen knows then)
                popen.wait()
                for pipe in (popen.stdin, popen.stdout):
                    if pipe:
                        pipe.close()
            for p in self.others:
                end(p)


def end(p: xprocess._Proc) -> None:
    """Kill ``p`` if its pid still names it, and reap it once it is this process's child (orphaned)."""
    if p.now() is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(p.pid, signal.SIGKILL)
    wait_until(lambda: p.now() is None or p.now().ppid == os.getpid())  # type: ignore[union-attr]
    with contextlib.suppress(ChildProcessError):
        os.waitpid(p.pid, 0)


@pytest.fixture
def kids() -> Iterator[Children]:
    children = Children()
    yield children
    children.cleanup()


def wait_until(predicate: object, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < end, "the child never got there"
        time.sleep(0.001)


def proc(popen: subprocess.Popen[bytes]) -> xprocess._Proc:
    p = xprocess._OS.proc(popen.pid)
    assert p is not None
    return p


def running(popen: subprocess.Popen[bytes]) -> bool:
    p = xprocess._OS.proc(popen.pid)
    return p is not None and not p.zombie


def line(popen: subprocess.Popen[bytes]) -> bytes:
    assert popen.stdout is not None
    return popen.stdout.readline().rstrip(b"\n")


def output(popen: subprocess.Popen[bytes], timeout: float = 2.0) -> bytes:
    """What the child (and what shares its stdout) printed since, until the pipe closes."""
    assert popen.stdout is not None
    fd, got, end = popen.stdout.fileno(), b"", time.monotonic() + timeout
    while select.select([fd], [], [], max(0.0, end - time.monotonic()))[0]:
        chunk = os.read(fd, 4096)
        if not chunk:
            return got
        got += chunk
    return got + b"(still open)"


def signalled_nothing(popen: subprocess.Popen[bytes]) -> bool:
    """Whether ``popen`` (whose SIGTERM is fatal) was sent no SIGTERM: it then ends by this SIGKILL."""
    popen.kill()
    return popen.wait() == -signal.SIGKILL


def zombie(kids: Children) -> subprocess.Popen[bytes]:
    """A child of this process that exited (code 0) and is not reaped yet."""
    popen = kids.start(["true"])
    wait_until(lambda: proc(popen).zombie)
    return popen


def zombie_of_another(kids: Children) -> xprocess._Proc:
    """A zombie whose parent (a child of this process) never reaps it."""
    parent = kids.start([*PYTHON, KEEPS_A_ZOMBIE])
    z = kids.adopt(xprocess._OS.proc(int(line(parent))))
    wait_until(lambda: (z.now() or z).zombie)
    return z


@pytest.fixture(params=["pidfd", "kill"])
def signals(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each signal through a pidfd (Linux) and through os.kill (macOS, old kernels: no pidfds)."""
    if request.param == "kill":
        monkeypatch.delattr(os, "pidfd_open", raising=False)
    elif not hasattr(os, "pidfd_open"):
        pytest.skip("no pidfd here")
    return request.param


@pytest.fixture(params=["procfs", "psutil"])
def reader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The process table read from /proc, and through psutil (macOS; tox -e psutil on Linux)."""
    monkeypatch.setattr(xprocess, "_OS", xprocess._ProcFS() if request.param == "procfs" else xprocess._Portable())
    return request.param


def open_fds() -> set[int]:
    return {int(fd) for fd in os.listdir("/proc/self/fd")}


# --- _signal ---


def test_a_signal_reaches_a_process_whose_pid_still_names_it(kids, signals):
    popen = kids.start(["sleep", "600"])
    before = open_fds()
    xprocess._signal(proc(popen), signal.SIGTERM)
    assert popen.wait(timeout=5) == -signal.SIGTERM
    assert open_fds() == before  # its pidfd closed


def test_no_signal_reaches_a_process_that_got_the_pid_since(kids, signals):
    popen = kids.start(["sleep", "600"])
    p = proc(popen)
    before = open_fds()
    xprocess._signal(xprocess._Proc(p.pid, p.start + "0", p.since, p.ppid, p.sid, False), signal.SIGTERM)
    assert open_fds() == before
    assert signalled_nothing(popen)


def test_a_process_gone_and_reaped_is_no_error(kids, signals):
    popen = kids.start(["sleep", "600"])
    p = proc(popen)
    popen.kill()
    popen.wait()
    xprocess._signal(p, signal.SIGTERM)  # its pid names nothing now (or another start)


def test_a_thread_id_gets_no_signal(kids, signals, reader):
    """Through either reader, with or without pidfds (a kernel refuses a thread's pidfd with EINVAL,
    or from 6.9 with ENOENT)."""
    code = "import threading, time\nt = threading.Thread(target=time.sleep, args=(600,))\nt.start()\n"
    code += "print(t.native_id, flush=True)"
    popen = kids.start([*PYTHON, code])
    thread = xprocess._OS.proc(int(line(popen)))  # a thread id reads as a process
    assert thread is not None
    xprocess._signal(thread, signal.SIGTERM)  # it would end the whole process
    assert signalled_nothing(popen)


class ReapedWhileLooked:
    """The process table as it was a moment ago: the child is killed and reaped as it is looked at
    (a stop racing its exit), so the signal then finds no process."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self.real, self.popen, self.was = xprocess._OS, popen, proc(popen)

    def proc(self, pid: int) -> xprocess._Proc | None:
        if pid == self.popen.pid and self.popen.returncode is None:
            self.popen.kill()
            self.popen.wait()
            return self.was
        return self.real.proc(pid)

    def is_process(self, pid: int) -> bool:
        return True


def ends_as_it_is_looked_at(kids: Children, monkeypatch: pytest.MonkeyPatch) -> None:
    popen = kids.start(["sleep", "600"])
    p = proc(popen)
    with monkeypatch.context() as m:
        m.setattr(xprocess, "_OS", ReapedWhileLooked(popen))
        xprocess._signal(p, signal.SIGTERM)
    assert popen.returncode == -signal.SIGKILL  # the table's kill, not a SIGTERM sent after it


def test_a_process_that_ends_just_before_its_signal_is_no_error(kids, signals, monkeypatch):
    ends_as_it_is_looked_at(kids, monkeypatch)


RECYCLED_AS_LOOKED_AT = """
    import json, os, signal, subprocess, sys
    sys.path.insert(0, sys.argv[1])
    import xprocess

    first = subprocess.Popen(["sleep", "600"])
    was = xprocess._OS.proc(first.pid)

    class Recycled:
        \"\"\"The process table, where the process ends and its pid goes to the next one as it is looked at.\"\"\"

        def __init__(self):
            self.real, self.next = xprocess._OS, None

        def __getattr__(self, name):
            return getattr(self.real, name)

        def proc(self, pid):
            if pid != first.pid or self.next is not None:
                return self.real.proc(pid)
            first.kill()
            first.wait()
            with open("/proc/sys/kernel/ns_last_pid", "w") as f:
                f.write(str(first.pid - 1))
            self.next = subprocess.Popen(["sleep", "600"])
            return was

    xprocess._OS = table = Recycled()
    xprocess._signal(was, signal.SIGTERM)
    table.next.kill()
    print(json.dumps({"recycled": table.next.pid == first.pid, "next": table.next.wait()}))
"""


def test_a_pid_handed_to_another_process_between_the_look_and_the_signal_gets_no_signal(kids, monkeypatch):
    """The pidfd, opened before the look, names the process looked at: the signal cannot reach a
    process that got its pid since (a private pid namespace, where ns_last_pid hands it out again)."""
    if os.geteuid() != 0 or shutil.which("unshare") is None or not hasattr(os, "pidfd_open"):
        pytest.skip("a private pid namespace needs root and unshare(1); this guarantee needs pidfds")
    # first here, the pid not handed out again: mutmut runs a test only for the functions it saw
    # the test's own process call
    ends_as_it_is_looked_at(kids, monkeypatch)
    script = textwrap.dedent(RECYCLED_AS_LOOKED_AT)
    here = os.path.dirname(os.path.abspath(xprocess.__file__))
    done = subprocess.run(
        ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc", sys.executable, "-c", script, here],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"recycled": True, "next": -signal.SIGKILL}  # not the SIGTERM


# --- _wait_gone ---


def test_what_still_runs_at_the_deadline_is_returned(kids):
    popen = kids.start(["sleep", "600"])
    p = proc(popen)
    assert xprocess._wait_gone([p], xprocess._Deadline(0.01), zombies_gone=True) == [p]
    assert xprocess._wait_gone([p], xprocess._Deadline(0.01), zombies_gone=False) == [p]


def test_a_process_that_ends_during_the_wait_is_not_returned(kids):
    popen = kids.start(["sleep", "600"])
    p = proc(popen)
    threading.Timer(0.02, popen.kill).start()
    assert xprocess._wait_gone([p], xprocess._Deadline(5), zombies_gone=True) == []


@pytest.mark.parametrize("zombies_gone", [True, False])
def test_a_zombie_of_ours_is_reaped_and_gone(kids, zombies_gone):
    popen = zombie(kids)
    assert xprocess._wait_gone([proc(popen)], xprocess._Deadline(0), zombies_gone) == []
    with pytest.raises(ChildProcessError):
        os.waitpid(popen.pid, os.WNOHANG)


@pytest.mark.parametrize("zombies_gone", [True, False])
def test_a_zombie_of_another_process_is_gone_only_if_zombies_count_as_gone(kids, zombies_gone):
    z = zombie_of_another(kids)
    left = xprocess._wait_gone([z], xprocess._Deadline(0.01), zombies_gone)
    assert left == ([] if zombies_gone else [z])


def test_a_pid_that_names_another_start_is_gone(kids):
    popen = kids.start(["sleep", "600"])
    p = proc(popen)
    other = xprocess._Proc(p.pid, p.start + "0", p.since, p.ppid, p.sid, False)
    assert xprocess._wait_gone([other, p], xprocess._Deadline(0.01), zombies_gone=True) == [p]


# --- _terminate ---


def test_nothing_found_is_nothing_to_do(kids):
    assert xprocess._terminate({}, 1.0) == {}
    assert xprocess._terminate({"a": [], "b": []}, 1.0) == {"a": 0, "b": 0}


def test_sigterm_ends_each_name_and_a_name_with_nothing_found_is_zero(kids):
    a, b = kids.python(), kids.python()
    assert xprocess._terminate({"a": [proc(a)], "b": [proc(b)], "c": []}, 5.0) == {"a": 1, "b": 1, "c": 0}
    assert output(a) == output(b) == b"term\n"  # SIGTERM alone: no SIGCONT to what was not stopped
    assert not running(a) and not running(b)


def test_a_process_that_ignores_sigterm_is_killed_after_the_grace(kids):
    stubborn, meek = kids.ready(IGNORES_TERM), kids.python()
    assert xprocess._terminate({"srv": [proc(stubborn), proc(meek)]}, 0.05) == {"srv": 1}
    assert not running(stubborn) and output(meek) == b"term\n"


def test_a_stopped_process_is_continued_so_that_it_handles_its_sigterm(kids):
    popen = kids.python()
    os.kill(popen.pid, signal.SIGSTOP)
    wait_until(lambda: proc(popen).stopped)
    assert xprocess._terminate({"srv": [proc(popen)]}, 1.0) == {"srv": 1}
    assert b"term\n" in output(popen)


def test_a_fork_made_during_the_stop_is_stopped_too(kids, reader):
    leader = kids.python("fork", session=True)
    assert xprocess._terminate({"srv": [proc(leader)]}, 5.0) == {"srv": 1}
    lines = output(leader).split(b"\n")
    fork = int(next(word for word in lines if word.startswith(b"fork ")).split()[1])
    kids.adopt_if_of(fork, leader.pid)
    assert sorted(lines) == sorted([b"", f"fork {fork}".encode(), b"term", b"term"])  # both took SIGTERM
    assert xprocess._OS.proc(fork) is None  # and the fork was reaped here


class BegunEarlier:
    """The process table, but the stop began a moment ago: what was forked since was forked
    during the stop (the fork of a shutdown hook, as the first look finds it)."""

    def __init__(self) -> None:
        self.real = xprocess._OS
        self.began = self.real.mark(), self.real.clock()

    def __getattr__(self, name: str) -> object:
        return getattr(self.real, name)

    def mark(self) -> tuple[int, int | None] | None:
        return self.began[0]

    def clock(self) -> float:
        return self.began[1]


def test_a_fork_found_after_the_grace_gets_sigkill_only(kids, monkeypatch):
    if xprocess._OS.mark() is None:
        pytest.skip("no mark of the pids handed out: a stop takes no fork made before it")
    leader = kids.start([*PYTHON, textwrap.dedent(REPORTS_ITS_FORK)], session=True, stdin=subprocess.PIPE)
    assert leader.stdin is not None
    word, pid = line(leader).split()
    assert word == b"child"
    kids.adopt(xprocess._OS.proc(int(pid)))  # adopted here once the leader ends
    monkeypatch.setattr(xprocess, "_OS", BegunEarlier())
    leader.stdin.write(b"fork\n")
    word, pid = line(leader).split()
    assert word == b"fork"
    kids.adopt(xprocess._OS.proc(int(pid)))
    assert xprocess._terminate({"srv": [proc(leader)]}, 0.0) == {"srv": 1}
    assert output(leader) == f"ended {-signal.SIGKILL}\n".encode()


def refuse(monkeypatch: pytest.MonkeyPatch, pid: int) -> list[int]:
    """Make every signal to ``pid`` fail as it does for a process of another user (EPERM); the
    signals refused are listed in what is returned."""
    refused: list[int] = []
    kill, send = os.kill, getattr(signal, "pidfd_send_signal", None)

    def check(target: int, sig: int) -> None:
        if target == pid:
            if sig != 0:  # (0 only asks whether it exists: psutil's reader does)
                refused.append(sig)
            raise PermissionError(errno.EPERM, os.strerror(errno.EPERM))

    def fake_kill(target: int, sig: int) -> None:
        check(target, sig)
        kill(target, sig)

    def fake_send(fd: int, sig: int, *rest: object) -> None:
        with open(f"/proc/self/fdinfo/{fd}") as info:
            target = int(next(line for line in info if line.startswith("Pid:")).split()[1])
        check(target, sig)
        send(fd, sig, *rest)  # type: ignore[misc]

    monkeypatch.setattr(os, "kill", fake_kill)
    if send is not None:
        monkeypatch.setattr(signal, "pidfd_send_signal", fake_send)
    return refused


def test_a_process_that_refuses_the_signal_fails_its_name_and_is_not_waited_for(kids, monkeypatch, signals):
    monkeypatch.setattr(xprocess, "_ZOMBIE_WAIT", 0.0)
    theirs, ours = kids.start(["sleep", "600"]), kids.python()
    refused = refuse(monkeypatch, theirs.pid)
    assert xprocess._terminate({"a": [proc(theirs)], "b": [proc(ours)]}, 2.0) == {"a": -1, "b": 1}
    assert refused == [signal.SIGTERM] and running(theirs)
    assert output(ours) == b"term\n"


class Unkillable:
    """The process table, but one process still there after every signal (stuck in the kernel)."""

    def __init__(self, snapshot: xprocess._Proc) -> None:
        self.real, self.snapshot = xprocess._OS, snapshot

    def __getattr__(self, name: str) -> object:
        return getattr(self.real, name)

    def proc(self, pid: int) -> xprocess._Proc | None:
        return self.snapshot if pid == self.snapshot.pid else self.real.proc(pid)


def test_a_process_that_outlives_sigkill_fails_its_name(kids, monkeypatch):
    stuck, other = kids.ready(IGNORES_TERM), kids.python()
    monkeypatch.setattr(xprocess, "_OS", Unkillable(proc(stuck)))
    monkeypatch.setattr(xprocess, "_KILL_WAIT", 0.02)
    monkeypatch.setattr(xprocess, "_ZOMBIE_WAIT", 0.0)
    assert xprocess._terminate({"a": [proc(stuck)], "b": [proc(other)]}, 0.02) == {"a": -1, "b": 1}
    assert stuck.wait(timeout=5) == -signal.SIGKILL


def test_a_zombie_another_process_keeps_is_left_to_it_and_logged(kids, monkeypatch, caplog):
    monkeypatch.setattr(xprocess, "_ZOMBIE_WAIT", 0.01)
    z = zombie_of_another(kids)
    with caplog.at_level(logging.INFO, logger="xprocess"):
        assert xprocess._terminate({"srv": [z]}, 5.0) == {"srv": 1}
    assert f"xprocess: [{z.pid}] left as zombies for their parent (or init) to reap" in caplog.messages
