"""Config files, processes that require others, and crashes named by test (issue 22), against
real servers: nginx, Redis with a small HTTP app in front of it, and a child that segfaults."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import sys
import textwrap
import urllib.request
from pathlib import Path

import pytest
from conftest import SLEEPER, alive, starter, wait_for

from xprocess import ProcessStarter, XProcessError

needs_nginx = pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed")
needs_redis = pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


# --- config_files ---

NGINX_CONF = """\
daemon off;
master_process off;
pid {ctl}/nginx.pid;
error_log stderr notice;
events {{ worker_connections 32; }}
http {{
    access_log off;
    client_body_temp_path {ctl}/client_body;
    proxy_temp_path {ctl}/proxy;
    fastcgi_temp_path {ctl}/fastcgi;
    uwsgi_temp_path {ctl}/uwsgi;
    scgi_temp_path {ctl}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{ default_type text/plain; return 200 "{page}\\n"; }}
    }}
}}
"""

NGINX_CONFTEST = """
import pytest
from xprocess import ProcessStarter

@pytest.fixture
def nginx(xprocess):
    class Nginx(ProcessStarter):
        config_files = ["nginx.conf"]  # from the project directory
        @property
        def args(self):
            conf = self.process.rootdir / "nginx.conf"
            return ["nginx", "-p", self.control_dir, "-e", "stderr", "-c", conf]
        def startup_check(self):
            return self.http_ok(f"http://127.0.0.1:{PORT}/")
    return xprocess.ensure("nginx", Nginx)
"""


@needs_nginx
def test_an_edited_nginx_config_restarts_nginx_and_the_summary_names_the_file(pytester_xp):
    port = free_port()
    ctl = pytester_xp.path / ".xprocess" / "nginx"
    pytester_xp.makeconftest(NGINX_CONFTEST.replace("PORT", str(port)))
    pytester_xp.makepyfile(
        f"""
        import urllib.request
        from pathlib import Path

        def test_page(nginx):
            with urllib.request.urlopen("http://127.0.0.1:{port}/", timeout=5) as page:
                assert page.read().decode() == Path("want.txt").read_text()
        """
    )

    def run(page: str) -> pytest.RunResult:
        (pytester_xp.path / "nginx.conf").write_text(NGINX_CONF.format(ctl=ctl, port=port, page=page))
        (pytester_xp.path / "want.txt").write_text(page + "\n")
        result = pytester_xp.runpytest_subprocess()
        result.assert_outcomes(passed=1)
        return result

    run("first page").stdout.fnmatch_lines(["nginx: started in *"])
    run("first page").stdout.fnmatch_lines(["xprocess: reused nginx"])
    edited = run("second page")  # only the file changed: args, env and cwd are the same
    edited.stdout.fnmatch_lines(["nginx: restarted in * (its configuration changed (config file nginx.conf))"])
    assert get(f"http://127.0.0.1:{port}/") == "second page\n"


def test_a_config_file_is_read_from_the_project_directory_and_only_its_content_counts(xp, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path.parent)  # not the project directory
    conf = tmp_path / "app.conf"
    conf.write_text("a = 1\n")
    Starter = starter(SLEEPER, config_files=["app.conf"])
    first = xp.ensure("app", Starter)
    os.utime(conf, (0, 0))  # touched, not changed
    assert xp.ensure("app", Starter) == first
    conf.write_text("a = 2\n")
    second = xp.ensure("app", Starter)
    assert second[0] != first[0] and not alive(first[0])
    assert xp.ensure("app", Starter) == second


def test_a_missing_config_file_is_an_error_before_anything_is_stopped(xp, tmp_path):
    conf = tmp_path / "app.conf"
    conf.write_text("a = 1\n")
    Starter = starter(SLEEPER, config_files=[Path("app.conf")])
    pid, _ = xp.ensure("app", Starter)
    conf.unlink()
    with pytest.raises(XProcessError, match=r"xprocess 'app': its config file 'app.conf' .* cannot be read"):
        xp.ensure("app", Starter)
    assert xp.getinfo("app").isrunning() and xp.getinfo("app").pid == pid
    conf.mkdir()
    with pytest.raises(XProcessError, match=r"'app\.conf'.*cannot be read: Is a directory"):
        xp.ensure("app", Starter)
    assert xp.getinfo("app").isrunning()


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        ("app.conf", "config_files must be a list of paths, got 'app.conf'"),
        ([b"app.conf"], "config_files items must be str or os.PathLike paths, got b'app.conf'"),
        ([3], "got 3"),
        (None, "got None"),
    ],
)
def test_config_files_of_the_wrong_type(xp, bad, words):
    with pytest.raises(TypeError, match=words.replace(".", r"\.")):
        xp.ensure("app", starter(SLEEPER, config_files=bad))
    assert not xp.getinfo("app").controldir.exists()


def test_a_starter_without_config_files_or_requires_keeps_its_fingerprint(xp):
    # states recorded before these attributes existed must not all restart once
    xp.ensure("app", starter(SLEEPER))
    state = xp.getinfo("app")._state()
    assert state is not None
    assert set(state.fingerprint) == {"args", "env", "cwd", "popen_kwargs", "pattern"}


# --- requires ---

# An HTTP app with one Redis connection, opened at its start (a pool): GET / answers INCR hits.
APP = """
import http.server, socket, sys

redis = socket.create_connection(("127.0.0.1", int(sys.argv[2])), timeout=5)
replies = redis.makefile("rb")

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        redis.sendall(b"INCR hits\\r\\n")
        body = replies.readline()[1:].strip()
        self.send_response(200)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

server = http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
print("app ready", flush=True)
server.serve_forever()
"""


class Redis(ProcessStarter):
    pattern = "Ready to accept connections"
    timeout = 30

    @property
    def args(self) -> list[object]:
        return ["redis-server", "--port", self.port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]


class App(ProcessStarter):
    pattern = "app ready"
    requires = ("redis",)

    @property
    def args(self) -> list[object]:
        redis_port = self.process.getinfo("redis").port
        return [sys.executable, "-c", APP, self.port, redis_port]


@needs_redis
def test_an_app_restarts_when_the_redis_it_requires_restarted(xp, caplog):
    redis = xp.ensure("redis", Redis)
    app = xp.ensure("app", App)
    url = f"http://127.0.0.1:{app.port}/"
    assert get(url) == "1"
    assert xp.ensure("app", App) == app  # redis is the same: reused
    new_redis = xp.ensure("redis", Redis, restart=True)
    assert new_redis[0] != redis[0] and new_redis.port == redis.port  # the same args: only its start changed
    with caplog.at_level(logging.WARNING, logger="xprocess"):
        new_app = xp.ensure("app", App)
    assert new_app[0] != app[0] and not alive(app[0])
    assert "xprocess 'app' restarted: redis restarted" in caplog.text
    assert get(url) == "1"  # the new app talks to the new, empty redis
    assert xp.ensure("app", App) == new_app


@needs_redis
def test_the_summary_says_which_required_process_restarted(pytester_xp):
    pytester_xp.makeconftest(
        textwrap.dedent(
            f"""
            import sys, pytest
            from xprocess import ProcessStarter

            APP = {APP!r}

            class Redis(ProcessStarter):
                pattern = "Ready to accept connections"
                @property
                def args(self):
                    return ["redis-server", "--port", self.port, "--save", "", "--appendonly", "no"]

            class App(ProcessStarter):
                pattern = "app ready"
                requires = ["redis"]
                @property
                def args(self):
                    return [sys.executable, "-c", APP, self.port, self.process.getinfo("redis").port]

            @pytest.fixture
            def redis(xprocess):
                return xprocess.ensure("redis", Redis)

            @pytest.fixture
            def app(xprocess, redis):
                return xprocess.ensure("app", App)
            """
        )
    )
    pytester_xp.makepyfile(
        """
        import urllib.request

        def test_hit(app):
            with urllib.request.urlopen(f"http://127.0.0.1:{app.port}/", timeout=5) as page:
                assert int(page.read()) >= 1
        """
    )
    first = pytester_xp.runpytest_subprocess()
    first.assert_outcomes(passed=1)
    first.stdout.fnmatch_lines(["app: started in *", "redis: started in *"])
    assert pytester_xp.runpytest_subprocess("--xkill", "redis").ret == 0
    second = pytester_xp.runpytest_subprocess()
    second.assert_outcomes(passed=1)
    second.stdout.fnmatch_lines(["app: restarted in * (redis restarted)", "redis: restarted in * (it had stopped)"])
    third = pytester_xp.runpytest_subprocess()
    third.stdout.fnmatch_lines(["xprocess: reused app, redis"])


def test_a_required_process_that_is_not_running_is_an_error(xp):
    App = starter(SLEEPER, requires=["postgres"])
    with pytest.raises(XProcessError) as raised:
        xp.ensure("app", App)
    assert str(raised.value) == (
        "xprocess 'app' requires 'postgres', which is not running: ensure it first "
        "(e.g. make the app fixture depend on the postgres fixture)"
    )
    xp.ensure("postgres", starter(SLEEPER))
    app_pid, _ = xp.ensure("app", App)
    xp.getinfo("postgres").terminate()
    with pytest.raises(XProcessError, match="requires 'postgres', which is not running"):
        xp.ensure("app", App)
    assert xp.getinfo("app").pid == app_pid and alive(app_pid)  # nothing was stopped


@pytest.mark.parametrize(
    ("bad", "error", "words"),
    [
        ("redis", TypeError, "requires must be a list of process names, got 'redis'"),
        ([3], TypeError, "requires items must be process names \\(str\\), got 3"),
        (["app"], ValueError, "requires names the process itself"),
        (["../redis"], ValueError, "invalid xprocess name '../redis'"),
    ],
)
def test_requires_of_the_wrong_kind(xp, bad, error, words):
    with pytest.raises(error, match=words):
        xp.ensure("app", starter(SLEEPER, requires=bad))


# --- crashes during a session ---

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
    titles = [title for title, _ in sections(pytester_xp)["test_a.py::test_x"]]
    assert titles == ["xprocess crashy log", "xprocess 'crashy' was killed by signal 11 (SIGSEGV) during this test"]
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
