"""Section 10, the session: the summary, the log of a failing test, crashes named by the test
during which they happened (a child that segfaults), what is stopped at the end."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import textwrap

import pytest
from conftest import SLEEPER, alive, conftest_source, py, sleeper_project, starter, terminate_all, wait_for

from xprocess import XProcess, XProcessError, XProcessInfo


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


def test_a_failing_test_after_a_restart_in_the_session_reports_the_new_log(pytester_xp):
    code = "import time; print('ready', flush=True); print('spam ' * 40, flush=True); time.sleep(600)"
    pytester_xp.makeconftest(conftest_source(None, code=code, ensure_args=", restart=True"))
    pytester_xp.makepyfile(
        "def test_a(srv):\n    pass\n\ndef test_b(srv):\n    import time; time.sleep(0.2); assert 0\n"
    )
    result = pytester_xp.runpytest_subprocess()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*- xprocess srv log -*", "ready", "spam spam*"])


# Ready at once; killed by SIGSEGV (no core file) once "crash" appears in its control directory.
CRASHY = """
import os, resource, signal, time
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
print("ready", flush=True)
while not os.path.exists("crash"):
    time.sleep(0.01)
os.unlink("crash")  # its next start must not crash
print("about to crash", flush=True)
os.kill(os.getpid(), signal.SIGSEGV)
"""


CRASH_CONFTEST = f"""
import json, sys, pytest
from xprocess import ProcessStarter

class Crashy(ProcessStarter):
    pattern = "ready"
    args = [sys.executable, "-c", {CRASHY!r}]

@pytest.fixture
def crashy(xprocess):
    return xprocess.ensure("crashy", Crashy)

def crash(xprocess):
    (xprocess.getinfo("crashy").controldir / "crash").touch()

def wait_dead(xprocess):
    import time
    info = xprocess.getinfo("crashy")
    while info.isrunning():
        time.sleep(0.01)

def pytest_runtest_logreport(report):  # every report's sections, for the test to read
    with open("sections.jsonl", "a") as f:
        f.write(json.dumps([report.nodeid, report.when, report.sections]) + "\\n")
"""


def sections(pytester: pytest.Pytester) -> dict[str, list[tuple[str, str]]]:
    """The xprocess report sections of each test (all its phases)."""
    found: dict[str, list[tuple[str, str]]] = {}
    for line in (pytester.path / "sections.jsonl").read_text().splitlines():
        nodeid, _, secs = json.loads(line)
        for title, text in secs:
            if title.startswith("xprocess"):
                found.setdefault(nodeid, []).append((title, text))
    return found


def test_a_segfault_is_reported_on_the_test_during_which_it_happened(pytester_xp):
    pytester_xp.makeconftest(CRASH_CONFTEST)
    pytester_xp.makepyfile(
        test_a="""
        from conftest import crash, wait_dead

        def test_before(crashy):
            pass

        def test_x(crashy, xprocess):
            crash(xprocess)
            wait_dead(xprocess)

        def test_after(crashy, xprocess):
            assert crashy[0] == xprocess.getinfo("crashy").pid  # started again
            assert xprocess.getinfo("crashy").isrunning()
        """
    )
    result = pytester_xp.runpytest_subprocess("-rA")
    result.assert_outcomes(passed=3)
    found = sections(pytester_xp)
    assert found.get("test_a.py::test_before", []) == []
    assert found.get("test_a.py::test_after", []) == []
    [(title, text)] = found["test_a.py::test_x"]
    assert title == "xprocess 'crashy' was killed by signal 11 (SIGSEGV) during this test"
    assert "about to crash" in text
    result.stdout.fnmatch_lines(
        [
            "*xprocess 'crashy' was killed by signal 11 (SIGSEGV) during this test*",
            "*about to crash*",
            "*restarted: it died during test_a.py::test_x*",  # the next ensure() says why
        ]
    )
    result.stdout.fnmatch_lines(
        ["*= xprocess =*", "crashy: started in *", "crashy: DIED during test_a.py::test_x (signal 11)"]
    )


def test_a_crash_of_a_reused_process_is_reported_without_its_exit_code(pytester_xp):
    pytester_xp.makeconftest(CRASH_CONFTEST)
    pytester_xp.makepyfile(
        test_a="""
        from conftest import crash, wait_dead

        def test_x(crashy, xprocess):
            if xprocess.getinfo("crashy").controldir.joinpath("second run").exists():
                crash(xprocess)
                wait_dead(xprocess)
        """
    )
    pytester_xp.runpytest_subprocess().assert_outcomes(passed=1)
    (pytester_xp.path / ".xprocess" / "crashy" / "second run").touch()
    result = pytester_xp.runpytest_subprocess()  # reuses it: not its child, the exit code is not known
    result.assert_outcomes(passed=1)
    [(title, _)] = sections(pytester_xp)["test_a.py::test_x"]
    assert title == "xprocess 'crashy' exited during this test"
    result.stdout.fnmatch_lines(["crashy: DIED during test_a.py::test_x (exit status unknown)"])


def test_a_crash_in_a_failing_test_is_reported_beside_its_log(pytester_xp):
    pytester_xp.makeconftest(CRASH_CONFTEST)
    pytester_xp.makepyfile(
        test_a="""
        from conftest import crash, wait_dead

        def test_x(crashy, xprocess):
            crash(xprocess)
            wait_dead(xprocess)
            assert 0, "the server went away"
        """
    )
    result = pytester_xp.runpytest_subprocess()
    result.assert_outcomes(failed=1)
    [(title, log), (crash_title, crash_text)] = sections(pytester_xp)["test_a.py::test_x"]
    assert title == "xprocess crashy log" and "about to crash" in log
    assert crash_title == "xprocess 'crashy' was killed by signal 11 (SIGSEGV) during this test"
    assert crash_text == "its last lines are in the section 'xprocess crashy log'"  # not the same lines again
    result.stdout.fnmatch_lines(["crashy: DIED during test_a.py::test_x (signal 11)"])


def test_stopping_on_purpose_is_no_crash(pytester_xp):
    pytester_xp.makeconftest(CRASH_CONFTEST)
    pytester_xp.makepyfile(
        test_a="""
        import pytest
        from conftest import Crashy

        def test_terminate(crashy, xprocess):
            assert xprocess.getinfo("crashy").terminate() == 1

        def test_kill(crashy, xprocess):
            assert xprocess.getinfo("crashy").kill() == 1

        def test_restart(crashy, xprocess):
            assert xprocess.ensure("crashy", Crashy, restart=True)[0] != crashy[0]

        def test_changed_configuration(crashy, xprocess):
            class Changed(Crashy):
                env = {"CHANGED": "1"}
            xprocess.ensure("crashy", Changed)

        def test_state_lost(crashy, xprocess):  # the old one is stopped on purpose, found by its log
            import shutil
            shutil.rmtree(xprocess.getinfo("crashy").controldir)
            assert xprocess.ensure("crashy", Crashy)[0] != crashy[0]

        def test_last(crashy):
            pass
        """
    )
    result = pytester_xp.runpytest_subprocess("--xstop", "-rA")
    result.assert_outcomes(passed=6)
    assert sections(pytester_xp) == {}
    assert "DIED" not in result.stdout.str() and "died" not in result.stdout.str()
    result.stdout.fnmatch_lines(["crashy: started in *, terminated at end"])


def test_a_stop_by_another_session_is_told_as_a_stop_not_a_crash(pytester_xp):
    pytester_xp.makeconftest(CRASH_CONFTEST)
    pytester_xp.makepyfile(
        test_a="""
        import subprocess, sys
        from conftest import wait_dead

        def test_xkill(crashy, xprocess):  # another terminal's --xkill, while this test runs
            subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--xkill"], check=True)
            wait_dead(xprocess)
            assert 0, "the server went away"
        """
    )
    result = pytester_xp.runpytest_subprocess()
    result.assert_outcomes(failed=1)
    assert [title for title, _ in sections(pytester_xp)["test_a.py::test_xkill"]] == ["xprocess crashy log"]
    stopped = "crashy: started in *; stopped by --xkill during test_a.py::test_xkill"
    result.stdout.fnmatch_lines(["*= xprocess =*", stopped])
    assert "DIED" not in result.stdout.str() and "died" not in result.stdout.str()


def test_without_pidfd_a_crash_is_found_by_its_pid_and_start(xp, monkeypatch, caplog):
    monkeypatch.delattr(os, "pidfd_open", raising=False)  # the portable path (macOS, old kernels)
    pid, _ = xp.ensure("srv", starter(SLEEPER))
    other, _ = xp.ensure("other", starter(SLEEPER))
    xp._session.test_starts("test_a.py::test_x")
    os.kill(pid, signal.SIGKILL)
    assert wait_for(lambda: not xp.getinfo("srv").isrunning())
    xp._session.notice_crashes()
    assert xp._session.crash_watch is not None
    [(title, _)] = xp._session.crash_watch.sections("test_a.py::test_x")
    assert title == "xprocess 'srv' was killed by signal 9 (SIGKILL) during this test"
    xp._session.notice_crashes()
    assert xp._session.crash_watch.sections("test_a.py::test_y") == []  # noticed once; "other" still runs
    with caplog.at_level(logging.WARNING, logger="xprocess"):
        assert xp.ensure("srv", starter(SLEEPER))[0] != pid
    assert "xprocess 'srv' restarted: it died during test_a.py::test_x" in caplog.text
    assert xp.ensure("other", starter(SLEEPER))[0] == other


def test_a_crash_found_by_ensure_itself_is_named_in_the_next_report(xp):
    pid, _ = xp.ensure("srv", starter(SLEEPER))
    xp._session.test_starts("test_a.py::test_x")
    os.kill(pid, signal.SIGTERM)  # not through the plugin: a crash
    assert wait_for(lambda: not xp.getinfo("srv").isrunning())
    xp.ensure("srv", starter(SLEEPER))  # notices it, then starts it again
    assert xp._session.crash_watch is not None
    assert [t for t, _ in xp._session.crash_watch.sections("test_a.py::test_x")] == [
        "xprocess 'srv' was killed by signal 15 (SIGTERM) during this test"
    ]


def test_an_xprocess_outside_pytest_closes_its_pidfds(xp):
    if not hasattr(os, "pidfd_open"):
        pytest.skip("no pidfd here")
    pid, _ = xp.ensure("srv", starter(SLEEPER))
    assert xp._session.crash_watch is not None and xp._session.crash_watch.pid("srv") == pid
    [fd] = xp._session.crash_watch._names
    assert os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:[pidfd]"
    xp.close()
    assert xp._session.crash_watch is None
    assert not os.path.exists(f"/proc/self/fd/{fd}") or os.readlink(f"/proc/self/fd/{fd}") != "anon_inode:[pidfd]"


def test_a_server_per_test_under_its_own_name_keeps_no_descriptor(pytester_xp):
    """Issue 26, case 15: a session starting and stopping a server per test under a name of its
    own (werkzeug's fixture) kept the lease of each name open: at the descriptor limit (here 64)
    ensure() failed. Each terminate() ends this session's lease on what it stops."""
    pytester_xp.makeconftest(
        textwrap.dedent(f"""
            import resource, sys, pytest
            from xprocess import ProcessStarter

            resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

            class Server(ProcessStarter):
                pattern = "ready"
                args = {py(SLEEPER)!r}

            @pytest.fixture
            def server(xprocess, request):
                name = "srv-" + request.node.name
                xprocess.ensure(name, Server)
                yield
                xprocess.getinfo(name).terminate()
        """)
    )
    pytester_xp.makepyfile(
        """
        import pytest

        @pytest.mark.parametrize("i", range(80))
        def test_it(server, i):
            pass
        """
    )
    result = pytester_xp.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=80)


@pytest.mark.parametrize("noticed", ["before the restart", "after the restart"])
def test_after_a_crash_the_lease_follows_the_server_started_again(tmp_path, noticed):
    """Issue 26, case 9: session A uses srv; srv crashes; session B starts it again, and A's tests
    go on talking to the new one. A held the lease of the dead one only, so a third session's
    restart stopped the new one under A. A's lease follows it (noticed at A's next test start,
    before or after B's restart), and the third session waits for A, then gives up."""
    with XProcess(None, tmp_path) as a:
        first = a.ensure("srv", starter(SLEEPER))[0]
        os.kill(first, signal.SIGKILL)
        assert wait_for(lambda: not XProcessInfo(a.statedir, "srv").isrunning())
        if noticed == "before the restart":
            a._session.test_starts("test_a1")
        with XProcess(None, tmp_path) as b:
            second = b.ensure("srv", starter(SLEEPER))[0]
        a._session.test_starts("test_a2")
        with XProcess(None, tmp_path) as c, pytest.raises(XProcessError, match="in use by another session"):
            c.ensure("srv", starter(SLEEPER, timeout=1), restart=True)
        assert alive(second) and XProcessInfo(a.statedir, "srv").pid == second
    terminate_all(tmp_path / ".xprocess")


def test_summary_is_a_pytest_section_with_the_blank_line_before_its_header(pytester_xp):
    result = sleeper_project(pytester_xp).runpytest_subprocess()
    result.assert_outcomes(passed=1)
    lines = result.stdout.lines
    at = next(i for i, line in enumerate(lines) if re.fullmatch(r"=+ xprocess =+", line))
    assert lines[at - 1] == "", lines  # as pytest's own sections: a blank line, then the header
    assert re.fullmatch(r"srv: started in \d+\.\d\d s", lines[at + 1]), lines


def test_all_reused_is_one_line_and_nothing_when_quiet(pytester_xp):
    sleeper_project(pytester_xp).runpytest_subprocess().assert_outcomes(passed=1)
    again = pytester_xp.runpytest_subprocess()
    again.assert_outcomes(passed=1)
    again.stdout.fnmatch_lines(["xprocess: reused srv"])
    assert "= xprocess =" not in again.stdout.str()
    for quiet in ("-q", "-qq"):
        out = pytester_xp.runpytest_subprocess(quiet).stdout.str()
        assert "xprocess" not in out, out


def test_a_start_failing_says_why(pytester_xp):
    result = sleeper_project(pytester_xp, code="import sys; sys.exit(1)").runpytest_subprocess()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["srv: FAILED to start: exited with code 1 before it was ready"])
    assert "did not finish" not in result.stdout.str()


def test_a_start_timing_out_says_so(pytester_xp):
    project = sleeper_project(pytester_xp, code="import time; time.sleep(600)", extra="timeout = 1")
    result = project.runpytest_subprocess()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["srv: FAILED to start: was not ready after its timeout of 1 s"])


def test_a_failed_start_then_a_good_one_in_the_same_session_shows_both(pytester_xp):
    code = textwrap.dedent(f"""
        import os, sys, time
        flag = {str(pytester_xp.path / "tried")!r}
        if not os.path.exists(flag):
            open(flag, "w").close(); sys.exit(2)
        print("ready", flush=True); time.sleep(600)
    """)
    sleeper_project(pytester_xp, code=code)
    pytester_xp.makepyfile("def test_a(srv):\n    pass\ndef test_b(srv):\n    pass\n")
    result = pytester_xp.runpytest_subprocess()
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        ["srv: FAILED to start: exited with code 2 before it was ready; then another start: restarted in * s (*)"]
    )


def test_a_start_that_failed_in_another_worker_is_reported_by_the_waiting_one_not_tried_again(pytester_xp):
    """Issue 28, 8: the worker that waited for another's failed start tried again on what time was
    left ("not ready after its timeout ... waited: 0.00 s"). It says the other start failed, and
    quotes the log that says why; the server was started once."""
    starts = pytester_xp.path / "starts"
    code = (
        f"import sys, time; open({str(starts)!r}, 'a').write('x')\n"
        "print('boom', flush=True); time.sleep(3); sys.exit(3)"
    )
    sleeper_project(pytester_xp, code=code, extra="timeout = 30")  # its one test, run by each worker at once
    result = pytester_xp.runpytest_subprocess("-n", "2", "--dist", "each")
    result.assert_outcomes(errors=2)
    out = result.stdout.str()
    assert out.count("ProcessExitedError: xprocess 'srv' exited with code 3 before it was ready") == 1, out
    waiting = out.split("xprocess.XProcessError: xprocess 'srv' was not started: another session started it while ")
    assert len(waiting) == 2 and waiting[1].startswith("this one waited, and that start failed"), out
    assert "last line of the log:" in waiting[1] and "boom" in waiting[1].split("ERROR")[0], out
    assert starts.read_text() == "x"
    result.stdout.fnmatch_lines(["srv: FAILED to start: exited with code 3 before it was ready"])  # told once


def test_a_ctrl_c_landing_inside_the_plugin_is_shown_at_the_callers_line(pytester_xp):
    """Where the interrupt lands is chance: here it lands, each time, in the plugin's reading of
    the log (a trace hook raises it there, as a SIGINT arriving at that moment would)."""
    pytester_xp.makeconftest(textwrap.dedent("""
        import sys, pytest
        from xprocess import ProcessStarter

        class Starter(ProcessStarter):
            pattern = "ready"
            args = [sys.executable, "-c", "import time; time.sleep(600)"]
            terminate_on_interrupt = True

        def interrupt(frame, event, arg):
            __tracebackhide__ = True  # it stands in for a signal, which has no frame of its own
            code = frame.f_code
            if event == "call" and code.co_name == "lines" and code.co_filename.endswith("xprocess.py"):
                sys.settrace(None)
                raise KeyboardInterrupt
            return None

        @pytest.fixture
        def srv(xprocess):
            sys.settrace(interrupt)
            try:
                return xprocess.ensure("srv", Starter)
            finally:
                sys.settrace(None)
    """))
    pytester_xp.makepyfile("def test_a(srv):\n    pass\n")
    result = pytester_xp.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.INTERRUPTED
    out = result.stdout.str()
    assert [line for line in out.splitlines() if line.startswith("srv:")] == ["srv: interrupted during its start"], out
    crash = [line for line in out.splitlines() if line.endswith(": KeyboardInterrupt")]
    assert len(crash) == 1 and "conftest.py:" in crash[0], out


def test_ctrl_c_during_a_start_reads_as_one_event(pytester_xp):
    sleeper_project(pytester_xp, code="import time; time.sleep(600)", extra="terminate_on_interrupt = True")
    run = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider"],
        cwd=pytester_xp.path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        assert wait_for((pytester_xp.path / ".xprocess" / "srv" / "state.jsonl").exists, 30)
        run.send_signal(signal.SIGINT)
        out = run.communicate(timeout=60)[0]
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
    assert run.returncode == pytest.ExitCode.INTERRUPTED, out
    summary = [line for line in out.splitlines() if line.startswith("srv:")]
    assert summary == ["srv: interrupted during its start"], out
    assert "xprocess.py" not in out  # the interrupt is shown at the conftest's line
    assert "conftest.py:" in out


def test_a_slow_stop_before_a_restart_is_named_apart_from_the_start(pytester_xp):
    slow_to_stop = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *a: (time.sleep(1.5), sys.exit(0)))\n"
        "print('ready', flush=True)\n"
        "while True: time.sleep(1)\n"
    )
    sleeper_project(pytester_xp, code=slow_to_stop).runpytest_subprocess().assert_outcomes(passed=1)
    sleeper_project(pytester_xp, code=slow_to_stop, ensure_args=", restart=True")
    result = pytester_xp.runpytest_subprocess()
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["srv: restarted in *.* s after a *.* s stop (restart=True)"])


def test_the_time_a_starter_spends_before_the_spawn_is_named_apart_from_the_start(pytester_xp, monkeypatch):
    """Issue 28, 11: "postgres: started in 0.06 s" in a run that spent 3.4 s in initdb, which its
    starter's ``args`` property ran. A second of it is named; a quick starter is not."""
    pytester_xp.makeconftest(textwrap.dedent("""
        import os, sys, time, pytest
        from xprocess import ProcessStarter

        class Starter(ProcessStarter):
            pattern = "ready"

            @property
            def args(self):
                time.sleep(float(os.environ["PREPARE"]))  # the work of an initdb
                return [sys.executable, "-c", "import time; print('ready', flush=True); time.sleep(600)"]

        @pytest.fixture
        def srv(xprocess):
            return xprocess.ensure("srv", Starter)
    """))
    pytester_xp.makepyfile("def test_a(srv):\n    pass\n")
    monkeypatch.setenv("PREPARE", "1.2")
    slow = pytester_xp.runpytest_subprocess()
    slow.stdout.fnmatch_lines(["srv: started in *.* s after 1.* s in its starter"])
    assert pytester_xp.runpytest_subprocess("--xkill").ret == 0
    monkeypatch.setenv("PREPARE", "0")
    quick = pytester_xp.runpytest_subprocess()
    quick.stdout.fnmatch_lines(["srv: started in *.* s"])
    assert "in its starter" not in quick.stdout.str()


def test_a_long_session_still_stops_and_reports_a_name_first_used_late(pytester_xp):
    """Issue 32, case 2: a reuse per test once added a record per test to the session file, which
    was read back up to 1 MiB only (about 14,000 tests): a name first used after that was neither
    stopped by --xstop nor in the summary. A repeated reuse now adds nothing, and the whole file
    is read (here padded past 1 MiB with the records such a session wrote)."""
    pytester_xp.makeconftest(conftest_source(None, names=("srv", "late")))
    pytester_xp.makepyfile(
        textwrap.dedent("""
        import glob, json, pytest

        @pytest.mark.parametrize("i", range(200))
        def test_reuse(srv, i):
            pass

        def test_the_reuses_were_recorded_once():
            [path] = glob.glob(".xprocess/.session-*.jsonl")
            kinds = [json.loads(line)["kind"] for line in open(path).read().splitlines()]
            assert kinds == ["starting", "started", "reused"]
            line = open(path).read().splitlines()[-1] + "\\n"
            with open(path, "a") as f:
                f.write(line * (2**20 // len(line) + 1000))

        def test_late(late):
            pass
        """)
    )
    result = pytester_xp.runpytest_subprocess("--xstop")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["late: started in *, terminated at end", "srv: started in *, terminated at end"])
    info = XProcess(None, pytester_xp.path).getinfo
    assert not info("srv").isrunning() and not info("late").isrunning()


def test_a_reuse_stopped_at_end_is_a_section_not_the_one_line(pytester_xp):
    sleeper_project(pytester_xp).runpytest_subprocess().assert_outcomes(passed=1)
    result = pytester_xp.runpytest_subprocess("--xstop")
    result.stdout.fnmatch_lines(["*= xprocess =*", "srv: reused, terminated at end"])
    assert "xprocess: reused" not in result.stdout.str()


def test_a_warning_points_at_the_conftest_once(pytester_xp):
    sleeper_project(pytester_xp).runpytest_subprocess().assert_outcomes(passed=1)
    pytester_xp.runpytest_subprocess("--xkill")
    (pytester_xp.path / ".xprocess" / "srv" / "state.jsonl").write_text("garbage\n")
    pytester_xp.makepyfile("def test_a(srv):\n    pass\ndef test_b(srv):\n    pass\n")
    result = pytester_xp.runpytest_subprocess()
    result.assert_outcomes(passed=2, warnings=1)
    out = result.stdout.str()
    assert "xprocess.py" not in out, out
    result.stdout.fnmatch_lines(["*conftest.py:*: XProcessWarning: *state.jsonl is not valid JSON lines*"])
    assert out.count("is not valid JSON lines") == 1, out


@pytest.mark.parametrize("xdist", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_failed_test_report_shows_the_log_lines_written_during_it(pytester_xp, xdist):
    code = "import time, itertools\nprint('booted', flush=True)\n" + (
        "for i in itertools.count(): print('tick', i, flush=True); time.sleep(0.02)"
    )
    pytester_xp.makeconftest(conftest_source(None, code=code).replace('pattern = "ready"', 'pattern = "booted"'))
    pytester_xp.makepyfile(
        """
        import time
        def test_ok(srv):
            time.sleep(0.1)
        def test_fails(srv):
            time.sleep(0.1)
            assert 0
        """
    )
    result = pytester_xp.runpytest_subprocess(*xdist)
    result.assert_outcomes(passed=1, failed=1)
    out = result.stdout.str()
    section = out[out.index(" xprocess srv log ") :]
    assert "tick" in section
    if not xdist:  # serially, test_ok started it: its start-up lines are not test_fails' lines
        assert "booted" not in section
    assert out.count(" xprocess srv log ") == 1  # the passing test has none
    assert out.count("srv: started in") == 1  # the summary once, also under xdist


def test_a_worker_that_cannot_record_its_use_warns(pytester_xp):
    """An xdist worker's record of use is the controller's only news of it (for --xstop): a failed
    write says so. Here a directory stands where the session's record file would be appended to."""
    pytester_xp.makeconftest(
        conftest_source(None).replace(
            "def srv(xprocess):\n", "def srv(xprocess):\n    import os; os.makedirs(xprocess._session.path)\n"
        )
    )
    pytester_xp.makepyfile("def test_a(srv):\n    pass\n")
    result = pytester_xp.runpytest_subprocess("-n", "1")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(
        ["*XProcessWarning: xprocess cannot record that it uses 'srv' (*--xstop will not stop it*"]
    )
