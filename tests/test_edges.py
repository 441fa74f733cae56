"""Correct under contention and at the edges: one test per bug found in review (issue 12)."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

import pytest
from conftest import SLEEPER, alive, conftest_source, py, starter, wait_for

import xprocess
from xprocess import StartupTimeoutError, XProcess, XProcessInfo


def test_the_starter_is_read_once_under_the_lock_from_a_cold_start(pytester_xp):
    """Its ``args`` property creates, on the first run, a directory that must not exist (as initdb
    does): under ``-n 4`` from a cold ``.xprocess`` one worker creates it and starts the server,
    the others wait and reuse it (read outside the lock, two would race to create it)."""
    pytester_xp.makeconftest(
        textwrap.dedent("""
        import os, sys, pytest
        from xprocess import ProcessStarter

        class Server(ProcessStarter):
            pattern = "ready"

            @property
            def args(self):
                cluster = self.control_dir / "cluster"
                if not cluster.exists():  # first run: create it (FileExistsError in a race)
                    os.mkdir(cluster)
                return [sys.executable, "-c", "import time; print('ready', flush=True); time.sleep(600)"]

        @pytest.fixture
        def srv(xprocess):
            return xprocess.ensure("srv", Server)
    """)
    )
    pytester_xp.makepyfile("".join(f"def test_{i}(srv):\n    import time; time.sleep(0.05)\n\n" for i in range(8)))
    result = pytester_xp.runpytest_subprocess("-n", "4")
    result.assert_outcomes(passed=8)
    result.stdout.fnmatch_lines(["srv: started in *"])


def test_the_old_process_s_grace_period_does_not_eat_the_new_start_s_timeout(xp):
    stubborn = "import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN); " + SLEEPER
    first = xp.ensure("stubborn", starter(stubborn, timeout=5))[0]
    # its configuration changes: the old one takes the whole grace period (10 s) to end
    slow_start = "import time; time.sleep(1); print('ready', flush=True); time.sleep(600)"
    second = xp.ensure("stubborn", starter(slow_start, timeout=5))
    assert second[0] != first and not alive(first)
    assert second.match is not None


def test_processes_stop_after_the_session_fixtures_that_use_them(pytester_xp):
    """With ``--xstop`` or ``terminate_on_interrupt``, a session fixture's teardown still talks to
    its server (here: reads that it is alive) before the plugin stops it."""
    pytester_xp.makeconftest(
        textwrap.dedent(f"""
        import os, sys, pytest
        from xprocess import ProcessStarter

        class Server(ProcessStarter):
            pattern = "ready"
            args = {py(SLEEPER)!r}
            terminate_on_interrupt = True

        @pytest.fixture(scope="session")
        def srv(xprocess):
            pid = xprocess.ensure("srv", Server)[0]
            yield pid
            with open("teardown", "w") as f:
                f.write("alive" if xprocess.getinfo("srv").isrunning() else "gone")
    """)
    )
    pytester_xp.makepyfile("def test_a(srv):\n    raise KeyboardInterrupt\n")
    result = pytester_xp.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.INTERRUPTED
    assert (pytester_xp.path / "teardown").read_text() == "alive"
    assert not XProcess(None, pytester_xp.path).getinfo("srv").isrunning()
    pytester_xp.makepyfile("def test_a(srv):\n    pass\n")
    result = pytester_xp.runpytest_subprocess("--xstop")
    assert result.ret == 0
    assert (pytester_xp.path / "teardown").read_text() == "alive"
    result.stdout.fnmatch_lines(["srv: * terminated at end"])


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


def test_popen_kwargs_stdin_is_accepted(xp):
    code = "import sys; print('ready', sys.stdin.readable(), flush=True); import time; time.sleep(600)"
    started = xp.ensure("stdin", starter(code, popen_kwargs={"stdin": subprocess.PIPE}))
    assert started.match.string == "ready True\n"


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        ({"cwd": "/nonexistent"}, FileNotFoundError, "working directory '/nonexistent' does not exist"),
        ({"stdinn": None}, TypeError, "subprocess.Popen does not take: stdinn"),
    ],
)
def test_bad_popen_kwargs_stop_nothing(xp, kwargs, error, words):
    running = xp.ensure("kw", starter(SLEEPER))[0]
    log = xp.statedir / "kw" / "xprocess.log"
    with pytest.raises(error, match=re.escape(words)):
        xp.ensure("kw", starter(SLEEPER, popen_kwargs=kwargs))
    assert alive(running) and XProcessInfo(xp.statedir, "kw").isrunning()
    assert log.read_text() == "ready\n" and not log.with_name("xprocess.log.1").exists()


def test_a_failing_test_after_a_restart_in_the_session_reports_the_new_log(pytester_xp):
    code = "import time; print('ready', flush=True); print('spam ' * 40, flush=True); time.sleep(600)"
    pytester_xp.makeconftest(conftest_source(None, code=code, ensure_args=", restart=True"))
    pytester_xp.makepyfile(
        "def test_a(srv):\n    pass\n\ndef test_b(srv):\n    import time; time.sleep(0.2); assert 0\n"
    )
    result = pytester_xp.runpytest_subprocess()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*- xprocess srv log -*", "ready", "spam spam*"])


def test_a_changed_pattern_restarts(xp):
    first = xp.ensure(
        "pat",
        starter("import time; print('booting listening on port 1234', flush=True); time.sleep(600)", pattern="booting"),
    )
    assert first.match.group(0) == "booting"
    Changed = starter(
        "import time; print('booting listening on port 1234', flush=True); time.sleep(600)",
        pattern=r"listening on port (\d+)",
    )
    second = xp.ensure("pat", Changed)
    assert second[0] != first[0]
    assert second.match.group(1) == "1234"
    assert xp.ensure("pat", Changed).match.group(1) == "1234"  # reused: the recorded line, matched again


def test_cwd_is_resolved_and_every_popen_kwarg_counts(xp, tmp_path, monkeypatch):
    for d in ("a/work", "b/work"):
        (tmp_path / d).mkdir(parents=True)
    Starter = starter(SLEEPER, popen_kwargs={"cwd": "work"})
    monkeypatch.chdir(tmp_path / "a")
    in_a = xp.ensure("cwd", Starter)[0]
    monkeypatch.chdir(tmp_path / "b")
    in_b = xp.ensure("cwd", Starter)[0]  # "work" is another directory from here
    assert in_b != in_a
    exe = starter(SLEEPER, popen_kwargs={"cwd": "work", "executable": sys.executable})
    assert xp.ensure("cwd", exe)[0] != in_b


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


def test_xshow_escapes_what_the_terminal_cannot_print(pytester_xp, monkeypatch):
    pytester_xp.makeconftest(conftest_source(None, names=("café",), code="# café\n" + SLEEPER))
    pytester_xp.makepyfile("def test_a(café):\n    pass\n")
    assert pytester_xp.runpytest_subprocess().ret == 0
    monkeypatch.setenv("LC_ALL", "C")
    monkeypatch.setenv("PYTHONUTF8", "0")
    monkeypatch.setenv("PYTHONIOENCODING", "ascii")
    result = pytester_xp.runpytest_subprocess("--xshow")
    assert result.ret == 0, result.stderr.str()
    # the name as this locale decodes the directory's bytes; the argument escaped
    result.stdout.fnmatch_lines(["NAME *STATUS *PID*", "caf* LIVE *", "    $ *# caf\\xe9\\nimport*"])
    header, row = result.stdout.lines[:2]
    assert row.index("LIVE") == header.index("STATUS")  # aligned as printed, escapes and all


def test_an_xdist_worker_dying_mid_start_under_xstop_leaves_nothing(pytester_xp):
    code = "import time; time.sleep(2); print('ready', flush=True); time.sleep(600)"
    dies = "def startup_check(self):\n    __import__('os')._exit(3)  # the worker dies while the server boots\n"
    pytester_xp.makeconftest(conftest_source(None, code=code, extra=dies))
    pytester_xp.makepyfile("def test_a(srv):\n    pass\n")
    result = pytester_xp.runpytest_subprocess("-n", "1", "--xstop")
    assert result.ret != 0
    info = XProcess(None, pytester_xp.path).getinfo("srv")
    assert info.pid is not None and not alive(info.pid)
    result.stdout.fnmatch_lines(["srv: its start did not finish*"])


def test_timeout_that_poll_cannot_take_is_capped(xp):
    """A huge finite timeout works too (poll() takes at most ~24.8 days in ms)."""
    started = xp.ensure("huge", starter(SLEEPER, timeout=10.0**12))
    assert started.match is not None
