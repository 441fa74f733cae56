"""Suites written for pytest-xprocess 0.x and 1.x run unchanged: shaped like the ones people have,
run through pytester."""

from __future__ import annotations

import pathlib
import re
import sys
import textwrap
import warnings
from typing import Iterator

import psutil
import pytest
from conftest import SLEEPER, alive, conftest_source, py, recorded_pid, starter

import xprocess
from xprocess import ProcessExitedError, ProcessStarter, StartupTimeoutError, XProcess, XProcessError, _show

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
    result = pytester_xp.runpytest_subprocess()
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


# --- issue 31: the py.path.local methods of 1.x's paths, and its overridable wait steps ---


@pytest.fixture
def warned_afresh() -> Iterator[None]:
    """Each py.path name is warned about once per process: forget which were, for this test."""
    saved = set(xprocess._WARNED)
    xprocess._WARNED.clear()
    yield
    xprocess._WARNED |= saved


def test_a_1x_conftest_reading_its_log_with_py_path_methods(pytester_xp):
    """As one real suite does: it reads ensure()'s log path with ``size()`` and ``read()``."""
    pytester_xp.makeconftest(
        textwrap.dedent(f"""
        import sys
        import pytest
        from xprocess import ProcessStarter

        class Starter(ProcessStarter):
            pattern = "ready"
            args = [{sys.executable!r}, "-c", {SLEEPER!r}]

        @pytest.fixture
        def srv(xprocess):
            pid, logpath = xprocess.ensure("srv", Starter)
            yield logpath
            xprocess.getinfo("srv").terminate()
        """)
    )
    pytester_xp.makepyfile(
        """
        import pathlib

        def test_log(srv):
            assert isinstance(srv, pathlib.Path)
            assert srv.size() > 0 and "ready" in srv.read()

        def test_log_again(srv):
            assert srv.check(file=1) and srv.size() == len(srv.read())
        """
    )
    result = pytester_xp.runpytest_subprocess()
    result.assert_outcomes(passed=2, warnings=3)  # size(), read() and check(): each once
    out = result.stdout.str()
    assert out.count("DeprecationWarning: size() is py.path.local's") == 1, out
    assert "use path.stat().st_size" in out and "use path.read_text() or path.read_bytes()" in out


def test_an_xprocessinfo_subclass_of_a_1x_plugin_uses_py_path_methods(pytester_xp):
    """Shaped like a plugin built on pytest-xprocess 1.x: its XProcessInfo subclass keeps a file
    of its own in the control directory (``join``, ``check``, ``size``, ``read``, ``write``) and
    sets an attribute on ``logpath``, as py.path.local allowed."""
    pytester_xp.makeconftest(
        textwrap.dedent(f"""
        import sys
        from functools import partial
        import psutil, pytest
        from xprocess import ProcessStarter, XProcess, XProcessInfo

        class ProcessInfo(XProcessInfo):
            def __init__(self, path, name):
                super().__init__(path, name)
                self.stime_path = self.controldir.join("xprocess.STIME")
                self.logpath.open = partial(self.logpath.open, "rb")  # an attribute of its own
                if self.stime_path.check() and self.stime_path.size() > 0:
                    self.stime = int(self.stime_path.read())
                else:
                    self.stime = None

        class Process(XProcess):
            def getinfo(self, name):
                return ProcessInfo(super().getinfo(name).controldir.dirpath(), name)

            def ensure(self, name, preparefunc, restart=False):
                pid, log_path = super().ensure(name, preparefunc, restart)
                self.getinfo(name).stime_path.write(str(int(psutil.Process(pid).create_time())))
                return pid, log_path

        class Starter(ProcessStarter):
            pattern = "ready"
            args = [{sys.executable!r}, "-c", {SLEEPER!r}]

        @pytest.fixture
        def srv(pytestconfig):
            with Process(pytestconfig, pytestconfig.rootpath) as process:
                pid, _ = process.ensure("srv", Starter)
                yield process.getinfo("srv"), pid
                process.getinfo("srv").terminate()
        """)
    )
    pytester_xp.makepyfile(
        """
        import psutil

        def test_it(srv):
            info, pid = srv
            assert info.stime == int(psutil.Process(pid).create_time())
            assert info.logpath.open().read().startswith(b"ready")
            assert info.controldir.basename == "srv"
        """
    )
    pytester_xp.runpytest_subprocess().assert_outcomes(passed=1, warnings=7)


def test_each_py_path_method_answers_as_py_path_did_and_warns_once(tmp_path, warned_afresh):
    root = xprocess._Path1x(tmp_path)
    with pytest.warns(DeprecationWarning, match=r"^ensure\(\) is py.path.local's .* use path.mkdir"):
        made = root.ensure("a", "b.txt")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second use warns no more
        assert made == tmp_path / "a" / "b.txt" and made.is_file() and isinstance(made, xprocess._Path1x)
        assert root.ensure("d", dir=True).is_dir()
    with pytest.warns(DeprecationWarning):
        made.write("one\ntwo\n")
    with pytest.warns(DeprecationWarning):
        assert made.readlines() == ["one\n", "two\n"]
    assert made.readlines(cr=False) == ["one", "two"]
    with pytest.warns(DeprecationWarning):
        assert made.read("rb") == b"one\ntwo\n"
    with pytest.warns(DeprecationWarning):
        made.write_binary(b"x", ensure=True)
    with pytest.warns(DeprecationWarning):
        assert made.read_binary() == b"x"
    with pytest.warns(DeprecationWarning):
        assert made.mtime() == made.stat().st_mtime
    with pytest.warns(DeprecationWarning):
        assert made.check() and made.check(file=1, dir=0) and not made.check(dir=1) and not made.check(link=1)
    with pytest.warns(DeprecationWarning, match="^join"):
        assert not root.join("none").check() and root.join("none").check(exists=0)
    with pytest.raises(TypeError, match="check\\(\\) takes exists, file, dir, link, got fnmatch"):
        made.check(fnmatch="*.txt")
    for name, expected in [
        ("strpath", str(made)), ("basename", "b.txt"), ("purebasename", "b"), ("ext", ".txt"),
        ("dirname", str(tmp_path / "a")),
    ]:  # fmt: skip
        with pytest.warns(DeprecationWarning, match=f"^{name} is py.path.local's"):
            assert getattr(made, name) == expected
    with pytest.warns(DeprecationWarning):
        assert made.dirpath() == tmp_path / "a" and made.dirpath("c") == tmp_path / "a" / "c"
    with pytest.warns(DeprecationWarning):
        assert root.listdir() == [tmp_path / "a", tmp_path / "d"]
    with pytest.warns(DeprecationWarning):
        assert root.isdir() and not made.isdir()
    with pytest.warns(DeprecationWarning):
        assert made.isfile() and not root.isfile()
    with pytest.warns(DeprecationWarning):
        assert not made.islink()
    with pytest.warns(DeprecationWarning):
        assert made.relto(tmp_path) == "a/b.txt" and root.relto(made) == ""
    with pytest.warns(DeprecationWarning):
        assert root.join("a", "..", "a").realpath() == (tmp_path / "a").resolve()
    with pytest.warns(DeprecationWarning):
        made.remove()
    assert not made.exists()
    root.join("d").remove()
    (tmp_path / "a" / "e").mkdir()
    with pytest.raises(OSError):
        root.join("a").remove(rec=False)  # not empty
    root.join("a").remove()
    assert root.listdir() == []


def test_the_paths_handed_out_are_pathlib_paths_with_py_path_methods(xp, warned_afresh):
    _, log = xp.ensure("paths", starter(SLEEPER))
    info = xp.getinfo("paths")
    for path in (log, info.logpath, info.controldir, xp.rootdir):
        assert isinstance(path, pathlib.Path) and hasattr(path, "join")
    assert log == pathlib.Path(str(log)) and hash(log) == hash(pathlib.Path(str(log)))
    seen = []

    def preparefunc(cwd):
        seen.append(cwd)
        return "ready", py(SLEEPER)

    xp.ensure("cwd", preparefunc)
    with pytest.warns(DeprecationWarning, match="^join"):
        assert seen[0].join("x") == xp.getinfo("cwd").controldir / "x"


# 1.x's steps, each overridable: wait(log_file) -> wait_pattern(log_file) -> get_lines(log_file),
# filter_lines(lines), log_line(line); wait_callback() polling startup_check.
SLOW_READY = """
import time
print("DEBUG: ready is what I say when I am", flush=True)
time.sleep(0.3)
open("between", "w").close()
print("ready", flush=True)
time.sleep(600)
"""


def test_a_starter_overriding_filter_lines_and_log_line_has_them_honoured(xp):
    searched = []

    class Starter(ProcessStarter):
        pattern = "ready"
        args = py(SLOW_READY)

        def filter_lines(self, lines):
            return (line for line in super().filter_lines(lines) if not line.startswith("DEBUG"))

        def log_line(self, line):
            searched.append(line)
            return line

    pid, _ = xp.ensure("filtered", Starter)
    assert (xp.getinfo("filtered").controldir / "between").exists()  # not ready at the DEBUG line
    assert searched == ["ready\n"]
    assert xp.ensure("filtered", Starter).pid == pid  # reused


def test_a_starter_whose_only_readiness_is_its_own_wait_is_accepted(xp):
    """As 1.x conftests write it: a loop of their own over the log, with 1.x's ``_max_time``."""

    class Starter(ProcessStarter):
        args = py(SLOW_READY)

        def wait(self, log_file):
            import datetime
            import time

            while datetime.datetime.now() < self._max_time:
                line = log_file.readline()
                if line == "ready\n":
                    return True
                time.sleep(0.01)
            return False

    info = xp.getinfo("own")
    xp.ensure("own", Starter)
    assert (info.controldir / "between").exists()
    assert xprocess._read_starter("own", Starter, info, xp).steps == ("wait",)
    plain = xp.ensure("plain", starter(SLEEPER))
    assert xprocess._read_starter("plain", starter(SLEEPER), xp.getinfo("plain"), xp).steps == ()  # the fast wait
    assert plain.match is not None  # (the steps give no match)


def test_a_starters_wait_step_saying_no_or_the_child_exiting_is_a_failed_start(xp):
    class No(ProcessStarter):
        args = py(SLEEPER)

        def wait(self, log_file):
            return False

    with pytest.raises(XProcessError, match="was not ready: the starter's wait\\(\\) returned False"):
        xp.ensure("no", No)
    assert not alive(xp.getinfo("no").pid)

    class Exits(ProcessStarter):  # the default steps notice the exit: no wait for the timeout
        pattern = "never"
        args = py("print('bye'); raise SystemExit(4)")

        def log_line(self, line):
            return line.upper()

    with pytest.raises(ProcessExitedError, match="exited with code 4 before it was ready"):
        xp.ensure("exits", Exits)

    class Slow(ProcessStarter):
        pattern = "never"
        args = py(SLEEPER)
        timeout = 0.3

        def log_line(self, line):
            return line

    with pytest.raises(StartupTimeoutError, match=r"was not ready after its timeout of 0\.3 s"):
        xp.ensure("slow", Slow)
    assert not alive(xp.getinfo("slow").pid)


def test_a_starter_overriding_wait_callback_and_checking_after_its_pattern(xp, tmp_path):
    calls = []

    class Checked(ProcessStarter):
        pattern = "ready"
        args = py(SLEEPER)

        def startup_check(self):
            calls.append("check")
            return len(calls) > 2

        def wait_callback(self):
            calls.append("callback")
            return super().wait_callback()

    xp.ensure("checked", Checked)
    assert calls == ["callback", "check", "check"]  # after the pattern, until it passed
