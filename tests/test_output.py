"""What the plugin prints: the summary, --xshow, --xforget, hints, warnings, and 1.x suites (issue 21)."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import textwrap

import pytest
from conftest import SLEEPER, alive, conftest_source, py, starter, wait_for

from xprocess import ProcessExitedError, XProcess, XProcessInfo, _show


def recorded_pid(pytester, name="srv"):
    return XProcessInfo(pytester.path / ".xprocess", name).pid


def project(pytester, code=SLEEPER, extra="", ensure_args=""):
    pytester.makeconftest(conftest_source(None, code=code, extra=extra, ensure_args=ensure_args))
    pytester.makepyfile("def test_a(srv):\n    pass\n")
    return pytester


# --- the summary ---


def test_summary_is_a_pytest_section_with_the_blank_line_before_its_header(pytester_xp):
    result = project(pytester_xp).runpytest_subprocess()
    result.assert_outcomes(passed=1)
    lines = result.stdout.lines
    at = next(i for i, line in enumerate(lines) if re.fullmatch(r"=+ xprocess =+", line))
    assert lines[at - 1] == "", lines  # as pytest's own sections: a blank line, then the header
    assert re.fullmatch(r"srv: started in \d+\.\d\d s", lines[at + 1]), lines


def test_all_reused_is_one_line_and_nothing_when_quiet(pytester_xp):
    project(pytester_xp).runpytest_subprocess().assert_outcomes(passed=1)
    again = pytester_xp.runpytest_subprocess()
    again.assert_outcomes(passed=1)
    again.stdout.fnmatch_lines(["xprocess: reused srv"])
    assert "= xprocess =" not in again.stdout.str()
    for quiet in ("-q", "-qq"):
        out = pytester_xp.runpytest_subprocess(quiet).stdout.str()
        assert "xprocess" not in out, out


def test_a_start_failing_says_why(pytester_xp):
    result = project(pytester_xp, code="import sys; sys.exit(1)").runpytest_subprocess()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["srv: FAILED to start: exited with code 1 before it was ready"])
    assert "did not finish" not in result.stdout.str()


def test_a_start_timing_out_says_so(pytester_xp):
    result = project(pytester_xp, code="import time; time.sleep(600)", extra="timeout = 1").runpytest_subprocess()
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
    project(pytester_xp, code=code)
    pytester_xp.makepyfile("def test_a(srv):\n    pass\ndef test_b(srv):\n    pass\n")
    result = pytester_xp.runpytest_subprocess()
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        ["srv: FAILED to start: exited with code 2 before it was ready; then another start: restarted in * s (*)"]
    )


def test_ctrl_c_during_a_start_reads_as_one_event(pytester_xp):
    project(pytester_xp, code="import time; time.sleep(600)", extra="terminate_on_interrupt = True")
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
    project(pytester_xp, code=slow_to_stop).runpytest_subprocess().assert_outcomes(passed=1)
    project(pytester_xp, code=slow_to_stop, ensure_args=", restart=True")
    result = pytester_xp.runpytest_subprocess()
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["srv: restarted in *.* s after a *.* s stop (restart=True)"])


def test_a_reuse_stopped_at_end_is_a_section_not_the_one_line(pytester_xp):
    project(pytester_xp).runpytest_subprocess().assert_outcomes(passed=1)
    result = pytester_xp.runpytest_subprocess("--xstop")
    result.stdout.fnmatch_lines(["*= xprocess =*", "srv: reused, terminated at end"])
    assert "xprocess: reused" not in result.stdout.str()


# --- --xshow and --xforget ---


def test_xshow_is_an_aligned_table_with_the_command_beneath(pytester_xp):
    long_arg = "x" * 300
    code = SLEEPER + " # " + long_arg
    pytester_xp.makeconftest(
        conftest_source(None, names=("srv", "other"), code=code).replace(
            "ensure('other'", "ensure('a-much-longer-name'"
        )
    )
    pytester_xp.makepyfile("def test_a(srv, other):\n    pass\n")
    pytester_xp.runpytest_subprocess().assert_outcomes(passed=1)
    show = pytester_xp.runpytest_subprocess("--xshow")
    assert show.ret == 0
    lines = show.stdout.lines
    header = next(line for line in lines if line.startswith("NAME"))
    assert header.split() == ["NAME", "STATUS", "PID", "PORT", "UPTIME", "USERS"]
    rows = [line for line in lines if line.startswith(("srv ", "a-much-longer-name "))]
    assert len(rows) == 2
    for row in rows:  # each cell starts under its heading
        for heading in ("STATUS", "PID", "UPTIME"):
            at = header.index(heading)
            assert row[at - 2 : at] == "  " and row[at] != " ", (header, row)
    assert re.match(r"a-much-longer-name +LIVE +\d+ +- +\d+s +-$", rows[0]), rows
    commands = [line for line in lines if line.startswith("    $ ")]
    assert len(commands) == 2 and all(len(c) <= 100 and c.endswith("...") and len(c) == 100 for c in commands), commands
    assert sum(line.startswith("    log: ") and line.endswith("xprocess.log") for line in lines) == 2


def test_xshow_escapes_control_characters_in_commands(xp):
    # sh -c SCRIPT ARG0 ARG1: the arguments ride along, short enough to show whole
    xp.ensure("esc", starter("", args=["sh", "-c", "echo ready; exec sleep 600", "red \x1b[31m", "two\nlines"]))
    lines = _show([xp.getinfo("esc")])
    command = next(line for line in lines if line.startswith("    $ "))
    assert "\x1b" not in command and "\n" not in command
    assert "red \\x1b[31m" in command and "two\\nlines" in command


def test_xforget_removes_dead_records_only(pytester_xp):
    project(pytester_xp).runpytest_subprocess().assert_outcomes(passed=1)
    pytester_xp.makeconftest(conftest_source(None, names=("srv", "bad"), code=SLEEPER))
    controldir = pytester_xp.path / ".xprocess"
    (controldir / "gone").mkdir()  # a record left by a failed start: no state, a log
    (controldir / "gone" / "xprocess.log").write_text("boom\n")
    pid = recorded_pid(pytester_xp)

    live = pytester_xp.runpytest_subprocess("--xforget", "srv")
    assert live.ret != 0
    live.stdout.fnmatch_lines([f"srv NOT FORGOTTEN: it is LIVE (pid {pid}); stop it first: pytest --xkill srv"])
    assert alive(pid) and (controldir / "srv").is_dir()

    every = pytester_xp.runpytest_subprocess("--xforget")
    assert every.ret == 0
    every.stdout.fnmatch_lines(["gone FORGOTTEN", f"srv kept: it is LIVE (pid {pid})"])
    assert not (controldir / "gone").exists() and (controldir / "srv").is_dir()

    pytester_xp.runpytest_subprocess("--xkill", "srv").stdout.fnmatch_lines([f"{pid} srv TERMINATED"])
    dead = pytester_xp.runpytest_subprocess("--xforget", "srv")
    assert dead.ret == 0
    dead.stdout.fnmatch_lines(["srv FORGOTTEN"])
    assert not (controldir / "srv").exists()
    show = pytester_xp.runpytest_subprocess("--xshow")
    show.stdout.fnmatch_lines(["no processes recorded in *"])


@pytest.mark.parametrize("name", ["nope", "../up"])
def test_xforget_names_are_checked_as_for_xshow(pytester_xp, name):
    project(pytester_xp).runpytest_subprocess().assert_outcomes(passed=1)
    result = pytester_xp.runpytest_subprocess("--xforget", name)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "Traceback" not in result.stderr.str()
    result.stderr.fnmatch_lines(["xprocess: *"])
    assert alive(recorded_pid(pytester_xp))


# --- hints ---


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


# --- warnings and errors point at the user's conftest ---


def test_a_warning_points_at_the_conftest_once(pytester_xp):
    project(pytester_xp).runpytest_subprocess().assert_outcomes(passed=1)
    pytester_xp.runpytest_subprocess("--xkill")
    (pytester_xp.path / ".xprocess" / "srv" / "state.jsonl").write_text("garbage\n")
    pytester_xp.makepyfile("def test_a(srv):\n    pass\ndef test_b(srv):\n    pass\n")
    result = pytester_xp.runpytest_subprocess()
    result.assert_outcomes(passed=2, warnings=1)
    out = result.stdout.str()
    assert "xprocess.py" not in out, out
    result.stdout.fnmatch_lines(["*conftest.py:*: XProcessWarning: *state.jsonl is not valid JSON lines*"])
    assert out.count("is not valid JSON lines") == 1, out


def test_a_bad_starter_shows_no_plugin_frame(pytester_xp):
    pytester_xp.makeconftest(
        textwrap.dedent("""
        import pytest
        from xprocess import ProcessStarter

        class Starter(ProcessStarter):
            pattern = "ready"
            args = "python -c pass"  # a string, not a list

        @pytest.fixture
        def srv(xprocess):
            return xprocess.ensure("srv", Starter)
        """)
    )
    pytester_xp.makepyfile("def test_a(srv):\n    pass\n")
    result = pytester_xp.runpytest_subprocess("--tb=long")
    result.assert_outcomes(errors=1)
    out = result.stdout.str()
    assert not re.search(r"^\S*xprocess\.py:\d+: ", out, re.M), out
    result.stdout.fnmatch_lines(
        ['*return xprocess.ensure("srv", Starter)', "E *TypeError: xprocess 'srv': args must be*"]
    )


# --- pytest-xprocess 1.x suites ---


def test_a_1x_suite_with_an_xprocess_subclass_passing_log(pytester_xp):
    pytester_xp.makeconftest(
        textwrap.dedent(f"""
        import logging, sys
        import pytest
        from xprocess import ProcessStarter, XProcess

        class Log:
            def __init__(self):
                self.lines = []
            def debug(self, msg, *args):
                self.lines.append(msg % args if args else msg)

        class MyXProcess(XProcess):
            def __init__(self, config, rootdir, log=None):
                super().__init__(config, rootdir, log)

        @pytest.fixture(scope="session")
        def myxprocess(pytestconfig):
            log = Log()
            with MyXProcess(pytestconfig, pytestconfig.rootpath, log) as xp:
                yield xp
            # what 1.x subclasses do with it
            assert xp.log is log

        class Starter(ProcessStarter):
            pattern = "ready"
            args = [{sys.executable!r}, "-c", {SLEEPER!r}]

        @pytest.fixture
        def srv(myxprocess):
            myxprocess.log.debug("starting %s", "srv")
            pid, logpath = myxprocess.ensure("srv", Starter)
            yield pid
            myxprocess.getinfo("srv").terminate()
        """)
    )
    pytester_xp.makepyfile("def test_a(srv):\n    assert srv > 0\n")
    pytester_xp.runpytest_subprocess().assert_outcomes(passed=1)
    assert XProcess(None, pytester_xp.path).log.name == "xprocess"  # without one: the module's logger


def test_a_1x_preparefunc_returning_a_starter(pytester_xp):
    pytester_xp.makeconftest(
        textwrap.dedent(f"""
        import sys
        import pytest
        from xprocess import ProcessStarter

        @pytest.fixture(params=["instance", "class"])
        def srv(xprocess, request):
            def preparefunc(control_dir, process):
                class Starter(ProcessStarter):
                    pattern = "ready"
                    args = [{sys.executable!r}, "-c", {SLEEPER!r}]
                    env = {{"WHERE": str(control_dir)}}
                return Starter(control_dir, process) if request.param == "instance" else Starter

            pid, logpath = xprocess.ensure("srv-" + request.param, preparefunc)
            yield pid
            xprocess.getinfo("srv-" + request.param).terminate()
        """)
    )
    pytester_xp.makepyfile("def test_a(srv):\n    assert srv > 0\n")
    pytester_xp.runpytest_subprocess().assert_outcomes(passed=2)


def test_0x_preparefuncs_still_take_one_argument(xp):
    def one(cwd):
        return "ready", py(SLEEPER)

    def with_a_default(cwd, more=None):  # accepts two: called with two, its tuple still counts
        return "ready", py(SLEEPER), None

    assert xp.ensure("one", one).match is not None
    assert xp.ensure("default", with_a_default).match is not None


def test_a_preparefunc_returning_something_else_is_a_type_error(xp):
    with pytest.raises(TypeError, match=r"preparefunc must return .* or a ProcessStarter, it returned 42"):
        xp.ensure("bad", lambda control_dir, process: 42)
