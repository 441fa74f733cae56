"""XProcess.ensure and XProcessInfo, driven directly against a temporary directory."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tracemalloc

import psutil
import pytest
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

import xprocess
from xprocess import ProcessExitedError, ProcessStarter, StartupTimeoutError, XProcess, XProcessError

# --- both APIs ---


def test_preparefunc_two_tuple_starts_in_its_control_dir(xp):
    seen = []

    def prepare(cwd):
        seen.append(cwd)
        return "ready", py("import os, time; print('ready', os.getcwd(), flush=True); time.sleep(600)")

    pid, logpath = xp.ensure("old", prepare)
    assert seen == [xp.statedir / "old"]
    assert logpath == xp.statedir / "old" / "xprocess.log"
    assert xp.getinfo("old").isrunning()
    assert psutil.Process(pid).cwd() == str(xp.statedir / "old")


def test_preparefunc_three_tuple_env_is_the_whole_environment(xp):
    code = "import os, time; print('ready', os.environ.get('ONLY'), 'PATH' in os.environ, flush=True); time.sleep(600)"
    result = xp.ensure("envy", lambda cwd: ("ready", py(code), {"ONLY": "1"}))
    assert result.match.string == "ready 1 False\n"


def test_inherited_env_gets_pythonunbuffered(xp, monkeypatch):
    # print() without flush into a file is block-buffered, so this hangs unless the plugin
    # sets PYTHONUNBUFFERED for an inherited environment (not set here, whatever the machine's).
    monkeypatch.delenv("PYTHONUNBUFFERED", raising=False)
    code = "import os, time; print('ready', os.environ.get('PYTHONUNBUFFERED')); time.sleep(600)"
    assert xp.ensure("buffered", starter(code, timeout=10)).match.string == "ready 1\n"


def test_starter_reuse_returns_the_same_process(xp):
    Starter = starter(
        "import time; print('booting'); print('ready port=1234', flush=True); time.sleep(600)", pattern=r"port=(\d+)"
    )
    first = xp.ensure("srv", Starter)
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


# --- readiness: whole lines ---


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


# --- failures ---


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
    assert not alive(xp.getinfo("silent").pid)


def test_exit_by_signal_is_reported(xp):
    code = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
    with pytest.raises(ProcessExitedError, match="exited with code -9"):
        xp.ensure("killed", starter(code))


# --- reuse and restarts ---


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


def test_earlier_logs_are_bounded_and_persist_logs_false_keeps_none(xp):
    for _ in range(xprocess.KEPT_LOGS + 2):
        xp.ensure("logs", starter(SLEEPER), restart=True)
    control = xp.statedir / "logs"
    kept = sorted(p.name for p in control.glob("xprocess.log*"))
    assert kept == ["xprocess.log"] + [f"xprocess.log.{i}" for i in range(1, xprocess.KEPT_LOGS + 1)]
    xp.ensure("logs", starter(SLEEPER), restart=True, persist_logs=False)
    assert sorted(p.name for p in control.glob("xprocess.log*")) == ["xprocess.log"]


def test_dead_process_is_restarted(xp):
    pid = xp.ensure("dies", starter(SLEEPER))[0]
    os.kill(pid, signal.SIGKILL)
    assert wait_for(lambda: not alive(pid))
    assert xp.ensure("dies", starter(SLEEPER))[0] != pid


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


@pytest.mark.parametrize("content", ["", '{"version": 1, "pid": 12', "garbage\x00", '{"version": 99}', "[]"])
def test_unreadable_state_means_not_running_with_a_warning(xp, content):
    control = xp.statedir / "bad"
    control.mkdir(parents=True)
    (control / "state.jsonl").write_text(content)
    with pytest.warns(xprocess.XProcessWarning, match="not running"):
        assert not xp.getinfo("bad").isrunning()
    with pytest.warns(xprocess.XProcessWarning):
        assert xp.ensure("bad", starter(SLEEPER)).match.string == "ready\n"
    assert xp.getinfo("bad").isrunning()


def test_state_is_a_start_record_and_a_whole_ready_line(xp):
    xp.ensure("atomic", starter(SLEEPER))
    control = xp.statedir / "atomic"
    assert sorted(p.name for p in control.iterdir()) == ["lock", "state.jsonl", "xprocess.log"]
    start, ready = (json.loads(line) for line in (control / "state.jsonl").read_text().splitlines())
    assert start["ready"] is False and ready == {
        "ready": True,
        "match": "ready\n",
        "pattern": ["ready", 32],
        "port": None,
    }


def test_a_ready_line_cut_short_means_never_ready(xp):
    """A crash while appending the ready line: the process is not trusted, it is restarted."""
    first = xp.ensure("torn", starter(SLEEPER))[0]
    path = xp.statedir / "torn" / "state.jsonl"
    path.write_text(path.read_text().splitlines()[0] + '\n{"ready": tr')
    assert xp.getinfo("torn").isrunning()  # alive, but never became ready as far as we know
    second = xp.ensure("torn", starter(SLEEPER))[0]
    assert second != first and not alive(first)


def test_getinfo_creates_nothing(xp):
    info = xp.getinfo("nothing")
    assert info.pid is None and not info.isrunning() and info.terminate() == 0
    assert not xp.statedir.exists()


def test_state_dir_has_a_gitignore(xp):
    xp.ensure("gi", starter(SLEEPER))
    assert (xp.statedir / ".gitignore").read_text() == "*\n"


# --- stopping ---


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


def test_kill_is_terminate(xp):
    pid = xp.ensure("k", starter(SLEEPER))[0]
    assert xp.getinfo("k").kill() == 1 and not alive(pid)


def test_terminate_reaps_its_own_children(xp):
    pid = xp.ensure("reap", starter(SLEEPER))[0]
    xp.getinfo("reap").terminate()
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


# --- bad input: a clear error, nothing spawned or written ---


class Good(ProcessStarter):
    args = py(SLEEPER)
    pattern = "ready"


@pytest.mark.parametrize(
    "name", ["a/b", "a\\b", "..", "../x", ".hidden", "-x", "", "a\0b", "x" * 201, "é" * 101, None, b"x"]
)
def test_bad_names(xp, name):
    with pytest.raises(ValueError, match="invalid xprocess name"):
        xp.ensure(name, Good)
    assert not xp.statedir.exists()


def _sub(**attrs):
    return type("Bad", (Good,), attrs)


@pytest.mark.parametrize(
    "bad, error, words",
    [
        (_sub(args=[]), TypeError, "args must be a non-empty"),
        (_sub(args="python -c pass"), TypeError, "args must be a non-empty"),
        (_sub(args=[sys.executable, object()]), TypeError, "args items"),
        (_sub(args=["no-such-program-xyz"]), FileNotFoundError, "'no-such-program-xyz' not found on PATH"),
        (_sub(pattern="ready("), ValueError, "invalid pattern 'ready\\('"),
        (_sub(pattern=None), TypeError, "needs a pattern or a startup_check"),
        (_sub(popen_kwargs={"stdout": None}), ValueError, "may not set stdout"),
        (_sub(popen_kwargs={"shell": True}), ValueError, "may not set shell"),
        (_sub(env={"A": 1}), TypeError, "env must be None or a mapping of str to str"),
        (_sub(env={1: "a"}), TypeError, "env must be None or a mapping of str to str"),
        (_sub(popen_kwargs=[("cwd", "/")]), TypeError, "popen_kwargs must be a mapping"),
        (_sub(pattern=re.compile(b"ready")), TypeError, "pattern must be a str regex or None, got re.compile"),
        (_sub(timeout=0), ValueError, "timeout must be a positive"),
        (_sub(timeout=float("nan")), ValueError, "timeout must be a positive"),
        (_sub(max_read_lines=0), ValueError, "max_read_lines must be"),
        (lambda cwd: ("ready",), TypeError, r"must return \(pattern, args\)"),
        (lambda cwd: ["ready", py(SLEEPER)], TypeError, r"it returned \['ready'"),
        (42, TypeError, "expected a ProcessStarter"),
    ],
)
def test_bad_starters(xp, bad, error, words):
    with pytest.raises(error, match=words):
        xp.ensure("bad", bad)
    assert not xp.statedir.exists()  # nothing written, not even the state directory


def test_a_file_that_is_not_executable(xp, tmp_path):
    (tmp_path / "data.txt").write_text("not a program")
    (tmp_path / "data.txt").chmod(0o644)
    with pytest.raises(FileNotFoundError, match=r"'\./data\.txt' is not an executable file"):
        xp.ensure("bad", _sub(args=["./data.txt"], popen_kwargs={"cwd": tmp_path}))
    assert not (xp.statedir / "bad").exists()


def test_args_accept_paths_and_numbers(xp, tmp_path):
    script = tmp_path / "s.py"
    script.write_text("import sys, time; print('ready', sys.argv[1:], flush=True); time.sleep(600)")
    result = xp.ensure("argtypes", _sub(args=[sys.executable, script, 7, 1.5]))
    assert "['7', '1.5']" in result.match.string


def test_popen_kwargs_cwd_is_used(xp, tmp_path):
    code = "import os, time; print('ready', os.getcwd(), flush=True); time.sleep(600)"
    result = xp.ensure("cwd", _sub(args=py(code), popen_kwargs={"cwd": tmp_path}))
    assert str(tmp_path) in result.match.string


def test_unwritable_state_dir_is_a_clear_error(tmp_path):
    # a file where the state directory should be: the same error a read-only disk gives
    (tmp_path / ".xprocess").write_text("")
    with XProcess(None, tmp_path) as xp, pytest.raises(XProcessError, match=re.escape(str(tmp_path / ".xprocess"))):
        xp.ensure("ro", Good)


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


# --- faults ---


@pytest.mark.parametrize("deleted", ["state dir", "control dir"])
def test_state_deleted_while_running_starts_fresh_and_ends_the_orphan(xp, deleted):
    first = xp.ensure("lost", starter(SLEEPER))[0]
    shutil.rmtree(xp.statedir if deleted == "state dir" else xp.statedir / "lost")
    assert xprocess._recorded_infos(xp, []) == []  # listing what is left does not crash, and finds nothing
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


def test_different_names_do_not_wait_for_each_other(tmp_path):
    """'first' gets ready only after 'second' started: with one lock for both, this would time out."""
    flag = tmp_path / "second-started"
    first = (
        "import os, sys, time\n"
        f"while not os.path.exists({str(flag)!r}): time.sleep(0.01)\n"
        "print('ready', flush=True); time.sleep(600)"
    )
    session = (
        "import sys; from xprocess import XProcess, ProcessStarter\n"
        f"S = type('S', (ProcessStarter,), dict(args=[sys.executable, '-c', {first!r}], pattern='ready', timeout=30))\n"
        f"with XProcess(None, {str(tmp_path)!r}) as xp: xp.ensure('first', S)\n"
    )
    other = subprocess.Popen([sys.executable, "-c", session])
    try:
        assert wait_for((tmp_path / ".xprocess" / "first" / "state.jsonl").exists, 30)
        with XProcess(None, tmp_path) as xp:
            second = f"import time; open({str(flag)!r}, 'w').close(); print('ready', flush=True); time.sleep(600)"
            xp.ensure("second", starter(second, timeout=30))
        assert other.wait(60) == 0
    finally:
        other.kill()
        other.wait()

        terminate_all(tmp_path / ".xprocess")


def test_full_disk_is_a_clear_error_and_leaves_no_state(tiny_disk):
    with XProcess(None, tiny_disk) as xp:
        xp.ensure("warmup", Good)  # the state directory exists; now fill the disk
        xp.getinfo("warmup").terminate()
        fd = os.open(tiny_disk / "filler", os.O_WRONLY | os.O_CREAT)
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"x" * 4096)
        os.close(fd)
        with pytest.raises(XProcessError, match=re.escape(str(tiny_disk / ".xprocess"))) as excinfo:
            xp.ensure("full", Good)
        assert "No space left" in str(excinfo.value)
        control = tiny_disk / ".xprocess" / "full"
        assert not any(p.name.startswith(("state", ".state")) for p in control.iterdir())
        assert ours_still_running(tiny_disk) == []


def test_read_only_state_dir_is_a_clear_error(tiny_disk):
    with XProcess(None, tiny_disk) as xp:
        xp.ensure("warmup", Good)
        xp.getinfo("warmup").terminate()
        subprocess.run(["mount", "-o", "remount,ro", str(tiny_disk)], check=True)
        with pytest.raises(XProcessError, match=re.escape(str(tiny_disk / ".xprocess" / "ro"))) as excinfo:
            xp.ensure("ro", Good)
        assert "Read-only file system" in str(excinfo.value)


# --- what each of these catches: see tests/README.rst (mutations of xprocess.py) ---


def test_popen_kwargs_reach_popen(xp):
    """``executable`` runs the real program under a name that is none; ``umask`` is the child's."""
    code = "import os, time; print('ready', oct(os.umask(0)), flush=True); time.sleep(600)"
    Named = starter(
        code, args=["no-such-program", "-c", code], popen_kwargs={"executable": sys.executable, "umask": 0o027}
    )
    assert xp.ensure("kwargs", Named).match.string == "ready 0o27\n"


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


def test_a_changed_env_restarts(xp):
    Env1 = starter(SLEEPER, env={**os.environ, "SETTING": "1"})
    Env2 = starter(SLEEPER, env={**os.environ, "SETTING": "2"})
    first = xp.ensure("env", Env1)[0]
    assert xp.ensure("env", Env1)[0] == first
    assert xp.ensure("env", Env2)[0] != first


def test_the_lock_wait_times_out_while_another_session_starts_it(xp):
    control = xp.statedir / "locked"
    control.mkdir(parents=True)
    holder = subprocess.Popen(
        py(f"""
            import fcntl, os, sys, time
            fd = os.open({str(control / "lock")!r}, os.O_RDONLY | os.O_CREAT)
            fcntl.flock(fd, fcntl.LOCK_EX)
            print("held", flush=True)
            time.sleep(600)
        """),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(StartupTimeoutError, match=r"another session held .*lock.* until the timeout"):
            xp.ensure("locked", starter(SLEEPER, timeout=1))
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()


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


def test_a_starter_instance_is_used_as_it_is(xp):
    instance = _sub()(xp.statedir / "inst", xp)
    instance.args = py("import time; print('ready from the instance', flush=True); time.sleep(600)")
    assert xp.ensure("inst", instance).match.string == "ready from the instance\n"


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


# --- issue 20: behaviours a mutation showed no test pinned down ---


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


def test_the_patterns_flags_are_part_of_the_configuration(xp):
    first = xp.ensure("flags", starter(SLEEPER, pattern=re.compile("ready", re.I)))
    assert xp.ensure("flags", starter(SLEEPER, pattern=re.compile("ready", re.I))) == first  # same: reused
    second = xp.ensure("flags", starter(SLEEPER, pattern=re.compile("ready")))  # the same text, no re.I
    assert second[0] != first[0] and not alive(first[0])


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
