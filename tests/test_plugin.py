"""The plugin end to end: real pytest runs through pytester."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import pytest
from conftest import alive, conftest_source, wait_for

from xprocess import XProcessInfo


@pytest.fixture
def project(pytester_xp):
    pytester_xp.makeconftest(conftest_source(pytester_xp.path / "starts"))
    pytester_xp.makepyfile("def test_a(srv):\n    assert srv[0] > 0\n")
    return pytester_xp


def recorded_pid(pytester, name="srv"):
    return XProcessInfo(pytester.path / ".xprocess", name).pid


def test_first_run_starts_second_reuses(project):
    first = project.runpytest_subprocess()
    first.assert_outcomes(passed=1)
    first.stdout.fnmatch_lines(["*= xprocess =*", "srv: started in * s"])
    second = project.runpytest_subprocess()
    second.assert_outcomes(passed=1)
    second.stdout.fnmatch_lines(["xprocess: reused srv"])
    assert (project.path / "starts").read_text() == "x"


def test_works_without_the_cache_plugin_and_can_be_disabled(project):
    project.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)
    assert XProcessInfo(project.path / ".xprocess", "srv").isrunning()
    result = project.runpytest_subprocess("-p", "no:xprocess")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'xprocess' not found*"])


def test_xshow_and_xkill(project):
    project.runpytest_subprocess().assert_outcomes(passed=1)
    pid = recorded_pid(project)
    show = project.runpytest_subprocess("--xshow")
    assert show.ret == 0
    show.stdout.fnmatch_lines(
        ["NAME *STATUS *PID *", f"srv *LIVE *{pid} *", "    $ *", "    log: */.xprocess/srv/xprocess.log"]
    )
    assert "passed" not in show.stdout.str()  # no tests ran
    kill = project.runpytest_subprocess("--xkill", "srv")
    assert kill.ret == 0
    kill.stdout.fnmatch_lines([f"{pid} srv TERMINATED"])
    assert not alive(pid)
    project.runpytest_subprocess("--xshow", "srv").stdout.fnmatch_lines([f"srv *DEAD *{pid} *"])
    again = project.runpytest_subprocess("--xkill")
    assert again.ret == 0
    again.stdout.fnmatch_lines([f"{pid} srv NO PROCESS FOUND"])


@pytest.mark.parametrize("option", ["--xshow", "--xkill"])
def test_unknown_name_is_an_error_not_a_traceback(project, option):
    project.runpytest_subprocess().assert_outcomes(passed=1)
    result = project.runpytest_subprocess(option, "nope")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["xprocess: no process recorded as 'nope' in *"])
    assert "Traceback" not in result.stderr.str()
    assert alive(recorded_pid(project))


def test_xshow_with_nothing_recorded(pytester_xp):
    result = pytester_xp.runpytest_subprocess("--xshow")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["no processes recorded in *.xprocess"])


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


def test_compatible_with_a_pytest_xprocess_1_conftest(pytester_xp):
    """The example from pytest-xprocess 1.0.2's documentation, unchanged."""
    pytester_xp.makepyfile(
        server="""
        import socket, sys
        s = socket.socket()
        s.bind(("127.0.0.1", 0)); s.listen()
        open("port", "w").write(str(s.getsockname()[1]))
        print("Server has started!", flush=True)
        while True:
            c, _ = s.accept(); c.sendall(b"pong"); c.close()
        """
    )
    pytester_xp.makeconftest(
        f"""
        import socket
        import pytest
        from xprocess import ProcessStarter

        @pytest.fixture
        def myserver(xprocess):
            class Starter(ProcessStarter):
                pattern = "[Ss]erver has started!"
                args = [{sys.executable!r}, {str(pytester_xp.path / "server.py")!r}]
                timeout = 45
                max_read_lines = 100
                terminate_on_interrupt = True

                def startup_check(self):
                    port = int((self.control_dir / "port").read_text())
                    with socket.create_connection(("127.0.0.1", port)) as c:
                        return c.recv(4) == b"pong"

            logfile = xprocess.ensure("myserver", Starter)
            port = int((xprocess.getinfo("myserver").controldir / "port").read_text())
            yield port
            xprocess.getinfo("myserver").terminate()
        """
    )
    pytester_xp.makepyfile(
        """
        import socket
        def test_ping(myserver):
            with socket.create_connection(("127.0.0.1", myserver)) as c:
                assert c.recv(4) == b"pong"
        """
    )
    pytester_xp.runpytest_subprocess().assert_outcomes(passed=1)
    assert not alive(recorded_pid(pytester_xp, "myserver"))


# --- when processes stop ---


@pytest.mark.parametrize(
    "args, env, ini, stops",
    [
        ((), None, None, False),
        (("--xstop",), None, None, True),
        ((), "1", None, True),
        ((), None, "true", True),
        (("--no-xstop",), "1", None, False),
        ((), "0", "true", False),
    ],
)
def test_stop_switch_and_its_precedence(project, monkeypatch, args, env, ini, stops):
    if env is not None:
        monkeypatch.setenv("XPROCESS_STOP", env)
    if ini is not None:
        project.makeini(f"[pytest]\nxprocess_stop = {ini}\n")
    result = project.runpytest_subprocess(*args)
    result.assert_outcomes(passed=1)
    assert alive(recorded_pid(project)) is not stops
    if stops:
        result.stdout.fnmatch_lines(["srv: started in * s, terminated at end"])


def test_bad_stop_environment_is_a_usage_error(project, monkeypatch):
    monkeypatch.setenv("XPROCESS_STOP", "maybe")
    result = project.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*XPROCESS_STOP='maybe'*"])


# --- many runners ---


def sixteen_tests(pytester, names=("srv",)):
    body = "".join(
        f"def test_{i}({names[i % len(names)]}):\n    assert {names[i % len(names)]}[0] > 0\n\n" for i in range(16)
    )
    pytester.makepyfile(body)


def test_xdist_workers_start_one_server_once(pytester_xp):
    pytester_xp.makeconftest(conftest_source(pytester_xp.path / "starts"))
    sixteen_tests(pytester_xp)
    result = pytester_xp.runpytest_subprocess("-n", "4")
    result.assert_outcomes(passed=16)
    assert (pytester_xp.path / "starts").read_text() == "x"
    assert result.stdout.str().count("srv: started in") == 1  # the summary once, in the controller


def test_xdist_two_servers_each_start_once(pytester_xp):
    pytester_xp.makeconftest(conftest_source(pytester_xp.path / "starts", names=("one", "two")))
    sixteen_tests(pytester_xp, names=("one", "two"))
    pytester_xp.runpytest_subprocess("-n", "4").assert_outcomes(passed=16)
    assert (pytester_xp.path / "starts").read_text() == "xx"
    assert alive(recorded_pid(pytester_xp, "one")) and alive(recorded_pid(pytester_xp, "two"))


def test_xdist_stop_at_end_leaves_nothing_and_only_the_controller_stops(pytester_xp):
    pytester_xp.makeconftest(conftest_source(pytester_xp.path / "starts"))
    sixteen_tests(pytester_xp)
    result = pytester_xp.runpytest_subprocess("-n", "4", "--xstop")
    result.assert_outcomes(passed=16)  # no worker lost its server to another's teardown
    result.stdout.fnmatch_lines(["srv: started in * s, terminated at end"])
    assert not alive(recorded_pid(pytester_xp))
    assert (pytester_xp.path / "starts").read_text() == "x"


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


# --- interrupts ---


@pytest.mark.parametrize("xdist", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_terminate_on_interrupt(pytester_xp, xdist):
    pytester_xp.makeconftest(
        conftest_source(None, names=("flagged", "kept")).replace(
            "return xprocess.ensure('flagged', Starter)", "return xprocess.ensure('flagged', Flagged)"
        )
        + "\nclass Flagged(Starter):\n    terminate_on_interrupt = True\n"
    )
    pytester_xp.makepyfile("def test_a(flagged, kept):\n    raise KeyboardInterrupt\n")
    result = pytester_xp.runpytest_subprocess(*xdist)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    assert not alive(recorded_pid(pytester_xp, "flagged"))
    assert alive(recorded_pid(pytester_xp, "kept"))


def run_until_waiting(pytester):
    """Start pytest on a server that never gets ready; return it once ensure() is waiting."""
    pytester.makeconftest(conftest_source(None, code="import time; time.sleep(600)"))
    pytester.makepyfile("def test_a(srv):\n    pass\n")
    run = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider"],
        cwd=pytester.path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # a suite started with SIGINT ignored (nohup, a background job) must not pass that on
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    state = pytester.path / ".xprocess" / "srv" / "state.jsonl"
    assert wait_for(state.exists, 30)
    return run, recorded_pid(pytester)


def test_sigint_while_waiting_terminates_the_half_started_process(pytester_xp):
    run, pid = run_until_waiting(pytester_xp)
    run.send_signal(signal.SIGINT)
    out = run.communicate(timeout=60)[0]
    assert run.returncode == pytest.ExitCode.INTERRUPTED, out
    assert not alive(pid)


def test_sigkill_while_waiting_then_the_next_run_starts_afresh(pytester_xp):
    run, pid = run_until_waiting(pytester_xp)
    run.kill()
    run.communicate(timeout=60)
    assert alive(pid)  # its own session: it outlives the killed pytest
    pytester_xp.makeconftest(conftest_source(pytester_xp.path / "starts"))
    result = pytester_xp.runpytest_subprocess()
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["srv: restarted in * s (it never became ready)"])
    assert not alive(pid)


def test_xkill_while_another_session_waits(pytester_xp):
    run, pid = run_until_waiting(pytester_xp)
    kill = pytester_xp.runpytest_subprocess("--xkill")
    kill.stdout.fnmatch_lines([f"{pid} srv TERMINATED"])
    out = run.communicate(timeout=60)[0]
    assert run.returncode == pytest.ExitCode.TESTS_FAILED
    assert "exited with code -15 before it was ready" in out
    assert not alive(pid)


def test_child_processes_are_in_their_own_session(project):
    project.runpytest_subprocess().assert_outcomes(passed=1)
    pid = recorded_pid(project)
    assert os.getsid(pid) == pid and os.getpgid(pid) == pid  # a session and a group of its own
    assert os.getsid(pid) != os.getsid(0)


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
        result.stdout.fnmatch_lines(["srv: restarted in * s (its pid * now belongs to another process)"])
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


def test_xkill_ends_a_server_whose_state_is_garbage(project):
    project.runpytest_subprocess().assert_outcomes(passed=1)
    pid = recorded_pid(project)
    (project.path / ".xprocess" / "srv" / "state.jsonl").write_text("garbage")
    kill = project.runpytest_subprocess("--xkill")
    assert kill.ret == 0
    kill.stdout.fnmatch_lines(["- srv TERMINATED"])
    kill.stderr.fnmatch_lines(["*state.jsonl is not valid JSON lines*"])
    assert not alive(pid)


# --- other systems ---


def test_a_run_that_never_ensures_needs_nothing_posix_only(pytester_xp):
    """As on Windows: no fcntl, termios, resource, pwd or grp; the plugin loads and the run passes."""
    pytester_xp.makepyfile("def test_a():\n    pass\n")
    code = (
        "import sys\n"
        "for name in ('fcntl', 'termios', 'resource', 'pwd', 'grp'):\n"
        "    sys.modules[name] = None  # importing it now raises ImportError\n"
        "import pytest\n"
        "sys.exit(pytest.main(['-p', 'xprocess', '-p', 'no:cacheprovider', '-q']))\n"
    )
    result = pytester_xp.run(sys.executable, "-c", code)
    assert result.ret == 0, result.stdout.str() + result.stderr.str()
    result.stdout.fnmatch_lines(["1 passed*"])


def test_ensure_on_windows_says_it_is_not_supported(tmp_path, monkeypatch):
    from xprocess import XProcess, XProcessError

    monkeypatch.setattr(sys, "platform", "win32")
    with XProcess(None, tmp_path) as xp, pytest.raises(XProcessError, match="Windows is not supported"):
        xp.ensure("srv", lambda cwd: ("ready", [sys.executable, "-c", "print('ready')"]))
    assert not (tmp_path / ".xprocess").exists()


def test_terminate_on_interrupt_after_an_internal_error(pytester_xp):
    """pytest ending with INTERNALERROR (a plugin's hook raised) stops what it would stop on Ctrl-C."""
    pytester_xp.makeconftest(
        conftest_source(None, names=("flagged", "kept")).replace(
            "return xprocess.ensure('flagged', Starter)", "return xprocess.ensure('flagged', Flagged)"
        )
        + "\nclass Flagged(Starter):\n    terminate_on_interrupt = True\n"
        + "\ndef pytest_runtest_logfinish(nodeid, location):\n    raise RuntimeError('a broken hook')\n"
    )
    pytester_xp.makepyfile("def test_a(flagged, kept):\n    pass\n")
    result = pytester_xp.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.INTERNAL_ERROR
    assert "INTERNALERROR" in result.stdout.str() + result.stderr.str() and "a broken hook" in result.stdout.str()
    assert not alive(recorded_pid(pytester_xp, "flagged"))
    assert alive(recorded_pid(pytester_xp, "kept"))


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
