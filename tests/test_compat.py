"""Suites written for pytest-xprocess 0.x and 1.x run unchanged: shaped like the ones people have,
run through pytester."""

from __future__ import annotations

import re
import sys
import textwrap

import psutil
import pytest
from conftest import SLEEPER, alive, conftest_source, py, recorded_pid, starter

from xprocess import XProcess, XProcessError, _show

# A dev_server fixture as web frameworks' suites write it: one server per test, named from the
# test id, restarted each time, its pattern a cached property that sends the new server a request
# and returns the line the server will log for it.
DEV_SERVER_CONFTEST = """
    import functools, http.client, socket, sys
    import psutil, pytest
    from xprocess import ProcessStarter

    SERVER = '''
    import http.server, sys
    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/crash":
                raise SystemExit(3)
            super().do_GET()
    http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
    '''

    @pytest.fixture
    def dev_server(xprocess, request):
        def start(**kwargs):
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]

            class Starter(ProcessStarter):
                args = [sys.executable, "-c", SERVER, port]

                @functools.cached_property
                def pattern(self):
                    conn = http.client.HTTPConnection("127.0.0.1", port)  # refused: "not yet"
                    conn.request("GET", "/ensure")
                    conn.getresponse().read()
                    conn.close()
                    return "GET /ensure"

            name = f"dev_server-{request.node.name}"
            pid, log = xprocess.ensure(name, Starter, restart=True)
            request.addfinalizer(xprocess.getinfo(name).terminate)
            return name, pid, port

        return start
"""


DEV_SERVER_TESTS = """
    import urllib.request
    import psutil, pytest

    @pytest.mark.parametrize("flag", [True, False])
    def test_basic(dev_server, flag):
        name, pid, port = dev_server()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/") as r:
            assert r.status == 200

    @pytest.mark.parametrize("kind", ["unix socket", "db=1,x", "a:b"])
    def test_server(dev_server, kind):
        assert dev_server()[1] > 0

    @pytest.mark.parametrize("endpoint", ["", "crash"])
    def test_streaming_close_response(dev_server, endpoint):
        assert dev_server()[1] > 0

    def test_terminate_then_pid_is_gone(dev_server, xprocess):
        name, pid, port = dev_server()
        assert xprocess.getinfo(name).terminate() == 1
        assert not psutil.pid_exists(pid)
"""


def test_a_dev_server_suite_with_names_from_test_ids_and_a_pattern_property(pytester_xp):
    pytester_xp.makeconftest(textwrap.dedent(DEV_SERVER_CONFTEST))
    pytester_xp.makepyfile(textwrap.dedent(DEV_SERVER_TESTS))
    result = pytester_xp.runpytest_subprocess("-p", "no:randomly")
    result.assert_outcomes(passed=8)
    names = sorted(p.name for p in (pytester_xp.path / ".xprocess").iterdir() if p.is_dir())
    assert "dev_server-test_basic[True]" in names
    assert "dev_server-test_server[unix socket]" in names
    assert "dev_server-test_streaming_close_response[]" in names
    assert "dev_server-test_server[a:b]" in names
    logs = (pytester_xp.path / ".xprocess" / "dev_server-test_server[db=1,x]" / "xprocess.log").read_text()
    assert "GET /ensure" in logs


def test_names_from_test_ids_work_with_xshow_and_xkill(pytester_xp):
    pytester_xp.makeconftest(textwrap.dedent(DEV_SERVER_CONFTEST).replace("request.addfinalizer(", "(lambda f: f)("))
    pytester_xp.makepyfile(textwrap.dedent(DEV_SERVER_TESTS))
    pytester_xp.runpytest_subprocess("-k", "test_basic or unix").assert_outcomes(passed=3)
    show = pytester_xp.runpytest_subprocess("--xshow", "dev_server-test_server[unix socket]")
    assert show.ret == 0
    show.stdout.fnmatch_lines(["dev_server-test_server[[]unix socket[]] *LIVE *"])
    kill = pytester_xp.runpytest_subprocess("--xkill", "dev_server-test_basic[True]", "dev_server-test_basic[False]")
    assert kill.ret == 0
    kill.stdout.fnmatch_lines(
        ["* dev_server-test_basic[[]True[]] TERMINATED", "* dev_server-test_basic[[]False[]] TERMINATED"]
    )
    unknown = pytester_xp.runpytest_subprocess("--xkill", "dev_server-test_basic[maybe]")
    assert unknown.ret == pytest.ExitCode.USAGE_ERROR
    assert "no process recorded as 'dev_server-test_basic[maybe]'" in unknown.stderr.str()


def test_a_pattern_property_that_fails_after_the_spawn_ends_the_process(xp):
    class BadPattern(starter(SLEEPER)):  # type: ignore[misc]
        @property
        def pattern(self) -> object:
            return 42

    with pytest.raises(TypeError, match="pattern must be a str regex or None, got 42"):
        xp.ensure("badpattern", BadPattern)
    assert xp.getinfo("badpattern").pid is not None
    assert not xp.getinfo("badpattern").isrunning()


def test_a_plain_pattern_is_checked_before_anything_is_spawned(xp):
    with pytest.raises(ValueError, match="invalid pattern"):
        xp.ensure("plain", starter(SLEEPER, pattern="(unclosed"))
    assert not xp.statedir.exists()


def test_assigning_pid_none_makes_terminate_a_no_op(xp):
    pid = xp.ensure("assigned", starter(SLEEPER))[0]
    info = xp.getinfo("assigned")
    info.pid = None
    assert info.pid is None
    assert info.terminate() == 0
    assert alive(pid)
    stranger = xp.getinfo("assigned")
    stranger.pid = 1  # not the recorded pid: never signalled
    assert stranger.terminate() == 0
    assert alive(pid)
    assert xp.getinfo("assigned").terminate() == 1


def test_terminate_returns_once_the_whole_tree_is_gone(xp):
    """A server with children, as the original API's suite checks them: no pid of the tree exists
    any more when terminate() returns (the children are not left as zombies)."""
    code = """
        import subprocess, sys, time
        kids = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"]) for _ in range(3)]
        print("ready", *(k.pid for k in kids), flush=True)
        time.sleep(600)
    """
    started = xp.ensure("tree", starter(code))
    pids = [started[0], *map(int, started.match.string.split()[1:])]
    assert all(psutil.pid_exists(p) for p in pids)
    assert xp.getinfo("tree").terminate() == 1
    assert [p for p in pids if psutil.pid_exists(p)] == []


def test_a_negative_timeout_returns_minus_one_as_in_1x(xp):
    pid = xp.ensure("negative", starter(SLEEPER))[0]
    assert xp.getinfo("negative").terminate(timeout=-1) == -1
    assert alive(pid)


def test_a_failed_start_shows_the_callers_line_not_the_plugins_insides(pytester_xp):
    code = "import sys; print('boom', flush=True); sys.exit(3)"
    pytester_xp.makeconftest(conftest_source(None, code=code))
    pytester_xp.makepyfile("def test_a(srv):\n    pass\n")
    result = pytester_xp.runpytest_subprocess("--tb=long")
    result.assert_outcomes(errors=1)
    out = result.stdout.str()
    entries = re.findall(r"^(\S+\.py):\d+: ", out, re.M)
    assert entries.count("xprocess.py") <= 1, out
    assert "return xprocess.ensure('srv', Starter)" in out
    result.stdout.fnmatch_lines(["*xprocess 'srv' exited with code 3 before it was ready*", "*last line of the log:*"])
    assert len(out.splitlines()) < 60, out


def test_messages_and_xshow_quote_arguments(xp):
    args = [*py("import sys; print('boom'); sys.exit(3)"), "", "two words"]
    with pytest.raises(XProcessError) as excinfo:
        xp.ensure("quoted", starter("", args=args))
    assert "-c 'import sys; print('\"'\"'boom'\"'\"'); sys.exit(3)' '' 'two words'" in str(excinfo.value)

    xp.ensure("quoted", starter("", args=["sh", "-c", "echo ready; exec sleep 600", "", "two words"]))
    assert "    $ sh -c 'echo ready; exec sleep 600' '' 'two words'" in _show([xp.getinfo("quoted")], {})


def test_paths_are_pathlib_and_rootdir_is_the_project(pytester_xp):
    """What a 1.x suite reads: ``ensure()``'s log path, ``getinfo()``'s paths, ``XProcess.rootdir``."""
    xp = XProcess(None, pytester_xp.path)
    with xp:
        _, log = xp.ensure("paths", starter(SLEEPER))
        info = xp.getinfo("paths")
        assert log == info.logpath and log.read_text() == "ready\n"
        assert info.controldir.parent == xp.rootdir / ".xprocess"


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
