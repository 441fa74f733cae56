"""Section 2 of xprocess.py, the starter read once: names, args, env, popen_kwargs, patterns, the
fingerprint that decides a restart, config files (a real nginx), requires (Redis and an HTTP app
in front of it), and the port a start is given."""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

import psutil
import pytest
from conftest import (
    SLEEPER,
    Good,
    alive,
    conftest_source,
    py,
    starter,
    wait_for,
)

import xprocess
from xprocess import (
    ProcessStarter,
    XProcess,
    XProcessError,
    XProcessInfo,
)


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


def test_popen_kwargs_stdin_is_accepted(xp):
    code = "import sys; print('ready', sys.stdin.readable(), flush=True); import time; time.sleep(600)"
    started = xp.ensure("stdin", starter(code, popen_kwargs={"stdin": subprocess.PIPE}))
    assert started.match.string == "ready True\n"


@pytest.mark.parametrize(
    "attrs, error, words",
    [
        (
            {"popen_kwargs": {"cwd": "/nonexistent"}},
            FileNotFoundError,
            "working directory '/nonexistent' does not exist",
        ),
        ({"popen_kwargs": {"stdinn": None}}, TypeError, "subprocess.Popen does not take: stdinn"),
        # issue 26, case 14: values Popen refuses only once it runs, or with a traceback of its own
        ({"popen_kwargs": {"user": "no-such-user-xyz"}}, ValueError, "popen_kwargs user must be a user of this"),
        ({"popen_kwargs": {"group": "no-such-group-xyz"}}, ValueError, "popen_kwargs group must be a group of"),
        ({"popen_kwargs": {"extra_groups": ["no-such-xyz"]}}, ValueError, "popen_kwargs extra_groups must be groups"),
        ({"popen_kwargs": {"user": -5}}, ValueError, "popen_kwargs user must be a user"),
        ({"popen_kwargs": {"cwd": 5}}, ValueError, "popen_kwargs cwd must be a path"),
        (
            {"popen_kwargs": {"cwd": "a\0b"}},
            ValueError,
            "popen_kwargs cwd must be a path (str or os.PathLike) without NUL",
        ),
        ({"popen_kwargs": {"umask": "022"}}, ValueError, "popen_kwargs umask must be an int"),
        ({"popen_kwargs": {"bufsize": "x"}}, ValueError, "popen_kwargs bufsize must be an int"),
        ({"popen_kwargs": {"pass_fds": [987654]}}, ValueError, "popen_kwargs pass_fds must be open file descriptors"),
        ({"popen_kwargs": {"pass_fds": "3"}}, ValueError, "popen_kwargs pass_fds must be open file descriptors"),
        ({"popen_kwargs": {"preexec_fn": 5}}, ValueError, "popen_kwargs preexec_fn must be None or a function"),
        (
            {"popen_kwargs": {"stdin": "input.txt"}},
            ValueError,
            "popen_kwargs stdin must be None, a descriptor or a file",
        ),
        ({"popen_kwargs": {"executable": "/no/such"}}, FileNotFoundError, "'/no/such' is not an executable file"),
        ({"popen_kwargs": {"executable": 5}}, ValueError, "popen_kwargs executable must be a path"),
        ({"args": py("print('ready\0')")}, ValueError, "args items may not contain a NUL byte"),
        ({"env": {"A": "x\0y"}}, TypeError, "env must be None or a mapping of str to str (no NUL"),
        ({"config_files": ["a\0b"]}, TypeError, "config_files items must be str or os.PathLike paths (no NUL)"),
    ],
)
def test_bad_starter_values_stop_nothing(xp, attrs, error, words):
    """A changed starter with a bad value is refused with a message naming it, before the running
    process is stopped for the restart the change would have made."""
    running = xp.ensure("kw", starter(SLEEPER))[0]
    log = xp.statedir / "kw" / "xprocess.log"
    with pytest.raises(error, match=re.escape("xprocess 'kw': ") + ".*" + re.escape(words)):
        xp.ensure("kw", starter(SLEEPER, **attrs))
    assert alive(running) and XProcessInfo(xp.statedir, "kw").isrunning()
    assert log.read_text() == "ready\n" and not log.with_name("xprocess.log.1").exists()


def test_what_popen_refuses_once_it_runs_is_the_plugins_error(xp):
    """Issue 26, case 14: a value only Popen itself refuses (a preexec_fn that raises) is an
    XProcessError naming the process and what refused it, not Popen's bare traceback."""

    def fails():
        raise RuntimeError("no")

    with pytest.raises(XProcessError, match=r"xprocess 'kw': subprocess.Popen refused its args, env or popen_kwargs"):
        xp.ensure("kw", starter(SLEEPER, popen_kwargs={"preexec_fn": fails}))
    assert not XProcessInfo(xp.statedir, "kw").isrunning()


def test_a_timeout_too_big_for_a_float_is_no_limit(xp):
    """An int timeout past a float's range (10**400) is accepted as no limit, as inf is."""
    assert alive(xp.ensure("kw", starter(SLEEPER, timeout=10**400))[0])


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
        (_sub(pattern=None), TypeError, "needs a pattern, a startup_check method or a wait"),
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


def test_popen_kwargs_reach_popen(xp):
    """``executable`` runs the real program under a name that is none; ``umask`` is the child's."""
    code = "import os, time; print('ready', oct(os.umask(0)), flush=True); time.sleep(600)"
    Named = starter(
        code, args=["no-such-program", "-c", code], popen_kwargs={"executable": sys.executable, "umask": 0o027}
    )
    assert xp.ensure("kwargs", Named).match.string == "ready 0o27\n"


def test_a_changed_env_restarts(xp):
    Env1 = starter(SLEEPER, env={**os.environ, "SETTING": "1"})
    Env2 = starter(SLEEPER, env={**os.environ, "SETTING": "2"})
    first = xp.ensure("env", Env1)[0]
    assert xp.ensure("env", Env1)[0] == first
    assert xp.ensure("env", Env2)[0] != first


def test_a_starter_instance_is_used_as_it_is(xp):
    instance = _sub()(xp.statedir / "inst", xp)
    instance.args = py("import time; print('ready from the instance', flush=True); time.sleep(600)")
    assert xp.ensure("inst", instance).match.string == "ready from the instance\n"


def test_the_patterns_flags_are_part_of_the_configuration(xp):
    first = xp.ensure("flags", starter(SLEEPER, pattern=re.compile("ready", re.I)))
    assert xp.ensure("flags", starter(SLEEPER, pattern=re.compile("ready", re.I))) == first  # same: reused
    second = xp.ensure("flags", starter(SLEEPER, pattern=re.compile("ready")))  # the same text, no re.I
    assert second[0] != first[0] and not alive(first[0])


needs_nginx = pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed")


needs_redis = pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


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
    os.mkfifo(conf)  # (a directory in its place is a tree of files: test_a_tree_...)
    with pytest.raises(XProcessError, match=r"'app\.conf'.*cannot be read: it is not a regular file"):
        xp.ensure("app", Starter)
    assert xp.getinfo("app").isrunning()


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        ("app.conf", "config_files must be a list of paths, got 'app.conf'"),
        ([b"app.conf"], "config_files items must be str or os.PathLike paths (no NUL), got b'app.conf'"),
        ([3], "got 3"),
        (None, "got None"),
    ],
)
def test_config_files_of_the_wrong_type(xp, bad, words):
    with pytest.raises(TypeError, match=re.escape(words)):
        xp.ensure("app", starter(SLEEPER, config_files=bad))
    assert not xp.getinfo("app").controldir.exists()


# An app whose code is under src/ (a package and the script that serves it), answering GET / with
# what src/app/views.py says; running it writes src/app/__pycache__, which must not restart it.
APP_SOURCES = {
    "src/serve.py": """
        import http.server, os, sys
        sys.path.insert(0, os.path.dirname(__file__))
        from app import views

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = views.page().encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        server = http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
        print("serving", flush=True)
        server.serve_forever()
    """,
    "src/app/__init__.py": "",
    "src/app/views.py": "def page():\n    return 'first page'\n",
}

APP_CONFTEST = """
import os, sys, pytest
from xprocess import ProcessStarter

class App(ProcessStarter):
    pattern = "serving"
    config_files = ["src"]  # every file under it
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}  # it writes src/app/__pycache__

    @property
    def args(self):
        return [sys.executable, self.process.rootdir / "src" / "serve.py", self.port]

@pytest.fixture
def app(xprocess):
    return xprocess.ensure("app", App).port
"""


def write_tree(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(textwrap.dedent(text))


def test_an_edit_under_src_restarts_the_app_and_the_summary_names_the_file(pytester_xp):
    """Issue 30: a web app started from src/ was reused after src/app/views.py changed."""
    write_tree(pytester_xp.path, APP_SOURCES)
    pytester_xp.makeconftest(APP_CONFTEST)
    pytester_xp.makepyfile(
        """
        import urllib.request
        from pathlib import Path

        def test_page(app):
            with urllib.request.urlopen(f"http://127.0.0.1:{app}/", timeout=5) as page:
                assert page.read().decode() == Path("want.txt").read_text()
        """
    )

    def run(page: str) -> pytest.RunResult:
        (pytester_xp.path / "want.txt").write_text(page)
        result = pytester_xp.runpytest_subprocess()
        result.assert_outcomes(passed=1)
        return result

    run("first page").stdout.fnmatch_lines(["app: started in *"])
    assert (pytester_xp.path / "src" / "app" / "__pycache__").is_dir()  # written by the app's import
    run("first page").stdout.fnmatch_lines(["xprocess: reused app"])
    (pytester_xp.path / "src" / "app" / "views.py").write_text("def page():\n    return 'second page'\n")
    run("second page").stdout.fnmatch_lines(["app: restarted in * s (src/app/views.py changed)"])
    run("second page").stdout.fnmatch_lines(["xprocess: reused app"])


def restarted(xp, caplog, Starter) -> str | None:
    """Why ``ensure()`` restarted "app" (as logged), or None: it reused it."""
    pid = xp.getinfo("app").pid
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="xprocess"):
        assert xp.ensure("app", Starter)[0] > 0
    if xp.getinfo("app").pid == pid:
        return None
    [why] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("xprocess 'app' restarted: ")]
    return why.split(": ", 1)[1]


@pytest.mark.parametrize("racy", [xprocess._RACY_NS, 0], ids=["walked", "stamped"])
def test_a_tree_restarts_on_an_added_a_removed_and_an_edited_file_not_on_a_touch(
    xp, tmp_path, caplog, monkeypatch, racy
):
    """Walked: every file was changed just now, so each reuse walks the tree again. Stamped:
    every stat vouches for its file, so a reuse stats each directory and file it found, no walk."""
    monkeypatch.setattr(xprocess, "_RACY_NS", racy)
    write_tree(tmp_path, {"src/a.py": "a = 1\n", "src/pkg/b.py": "b = 1\n"})
    Starter = starter(SLEEPER, config_files=["src"])
    xp.ensure("app", Starter)
    assert restarted(xp, caplog, Starter) is None
    os.utime(tmp_path / "src" / "a.py", (0, 0))  # touched, rewritten the same: the contents decide
    (tmp_path / "src" / "pkg" / "b.py").write_text("b = 1\n")
    assert restarted(xp, caplog, Starter) is None
    (tmp_path / "src" / "pkg" / "c.py").write_text("")  # an empty file is a file too
    assert restarted(xp, caplog, Starter) == "src/pkg/c.py added"
    (tmp_path / "src" / "a.py").unlink()
    assert restarted(xp, caplog, Starter) == "src/a.py removed"
    (tmp_path / "src" / "pkg" / "b.py").write_text("b = 2\n")
    (tmp_path / "src" / "pkg" / "c.py").write_text("c = 2\n")
    assert restarted(xp, caplog, Starter) == "src/pkg/b.py changed, and 1 more file"
    assert restarted(xp, caplog, Starter) is None


def test_a_glob_takes_the_files_it_matches_and_may_match_none(xp, tmp_path, caplog):
    Starter = starter(SLEEPER, config_files=["src/**/*.py", str(tmp_path / "etc" / "*.conf")])
    xp.ensure("app", Starter)  # nothing matches either: no error
    write_tree(tmp_path, {"src/notes.txt": "", "src/.hidden/x.py": "", "etc/sub/a.conf": "", "src.py": ""})
    assert restarted(xp, caplog, Starter) is None  # what matches neither pattern
    (tmp_path / "src" / "app.py").write_text("")  # ** matches no directory too
    assert restarted(xp, caplog, Starter) == "src/app.py added"
    (tmp_path / "etc" / "b.conf").write_text("")  # absolute
    assert restarted(xp, caplog, Starter) == f"{tmp_path}/etc/b.conf added"
    (tmp_path / "src" / "deep" / "er").mkdir(parents=True)
    (tmp_path / "src" / "deep" / "er" / "c.py").write_text("")
    assert restarted(xp, caplog, Starter) == "src/deep/er/c.py added"


def test_a_tree_leaves_out_pycache_and_hidden_directories(xp, tmp_path, caplog):
    """Python writes __pycache__ as the app runs: it would restart it every run. The project
    directory itself as a tree: .xprocess, written by every ensure(), is left out too."""
    write_tree(tmp_path, {"src/a.py": "", "src/__pycache__/a.cpython-311.pyc": "1"})
    Starter = starter(SLEEPER, config_files=["src", "."])
    xp.ensure("app", Starter)
    (tmp_path / "src" / "__pycache__" / "a.cpython-311.pyc").write_text("2")
    (tmp_path / "src" / "__pycache__" / "b.cpython-311.pyc").write_text("")
    write_tree(tmp_path, {".git/index": "", ".venv/lib/x.py": ""})
    assert restarted(xp, caplog, Starter) is None
    (tmp_path / ".env").write_text("")  # a hidden file is a file
    assert restarted(xp, caplog, Starter) == "./.env added"


def test_a_corrupt_digest_cache_means_hashing_again(xp, tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(xprocess, "_RACY_NS", 0)  # every stat vouches for its file: a reuse reads the first line only
    write_tree(tmp_path, {"src/a.py": "a = 1\n", "src/b.py": "b = 1\n"})
    Starter = starter(SLEEPER, config_files=["src"])
    xp.ensure("app", Starter)
    cache = xp.getinfo("app").controldir / xprocess.DIGESTS_NAME
    assert restarted(xp, caplog, Starter) is None
    (tmp_path / "src" / "a.py").write_text("a = 22\n")  # a stamp held: the stats must be in it
    assert restarted(xp, caplog, Starter) == "src/a.py changed"
    head = cache.read_bytes().split(b"\n")[0]
    for garbage in (b"\0garbage", b"[1]\n", b'{"version": 1, "stamps": {"src": [1, 2]}}\n[]', head + b"\n{\n"):
        cache.write_bytes(garbage)
        assert restarted(xp, caplog, Starter) is None
    cache.unlink()
    cache.symlink_to(tmp_path / "src" / "a.py")  # never followed, nor written through
    assert restarted(xp, caplog, Starter) is None
    assert (tmp_path / "src" / "a.py").read_text() == "a = 22\n"
    cache.unlink()
    (tmp_path / "src" / "b.py").write_text("b = 2\n")  # no cache: which file changed is not known
    assert restarted(xp, caplog, Starter) == "its configuration changed (config file src)"


def test_links_in_a_tree_files_followed_directories_not(xp, tmp_path, caplog):
    """A link loop does not hang the walk; a link to a file outside counts with its content."""
    write_tree(tmp_path, {"src/a.py": "", "outside/conf.py": "x = 1\n", "outside/deep/d.py": ""})
    (tmp_path / "src" / "loop").symlink_to(tmp_path / "src")
    (tmp_path / "src" / "outer").symlink_to(tmp_path / "outside")
    (tmp_path / "src" / "self").symlink_to(tmp_path / "src" / "self")
    (tmp_path / "src" / "dangling").symlink_to(tmp_path / "missing")
    (tmp_path / "src" / "conf.py").symlink_to(tmp_path / "outside" / "conf.py")
    Starter = starter(SLEEPER, config_files=["src", "src/**/*.py"])
    xp.ensure("app", Starter)
    (tmp_path / "outside" / "deep" / "d.py").write_text("not under src/")
    assert restarted(xp, caplog, Starter) is None
    (tmp_path / "outside" / "conf.py").write_text("x = 2\n")
    assert restarted(xp, caplog, Starter) == "src/conf.py changed"


@pytest.mark.parametrize(
    "pattern",
    ["src/*.py", "src/**/*.py", "src/**", "**/*.conf", "src/?.py", "src/[ab].py", "src/[!ab].py", "src/.*",
     "src/*/x[0-9].txt", "src/**/b/*", "*/*/*.py", "src/.hidden/*"],
)  # fmt: skip
def test_a_pattern_matches_the_files_glob_does(tmp_path, monkeypatch, pattern):
    import glob

    write_tree(tmp_path, {name: "" for name in [
        "a.conf", "src/a.py", "src/b.py", "src/c.py", "src/ab.py", "src/.d.py", "src/.e", "src/x.conf",
        "src/p/q.py", "src/p/x1.txt", "src/p/x12.txt", "src/p/b/r.py", "src/b/s.txt", "src/.hidden/t.py",
        "src/.hidden/u/v.py", "etc/y.conf", "etc/z/w.conf",
    ]})  # fmt: skip
    monkeypatch.chdir(tmp_path)
    files, _ = xprocess._tree_files("app", pattern, tmp_path / pattern, tmp_path)
    assert [path for path, _, _ in files] == sorted(p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))


def test_a_tree_of_too_many_files_is_an_error_before_anything_is_stopped(xp, tmp_path, monkeypatch):
    write_tree(tmp_path, {f"src/{i}.py": "" for i in range(11)})
    xp.ensure("app", starter(SLEEPER))
    pid = xp.getinfo("app").pid
    monkeypatch.setattr(xprocess, "_MAX_TREE", 10)
    with pytest.raises(XProcessError, match=r"^xprocess 'app': its config_files entry 'src' walks more than 10 files"):
        xp.ensure("app", starter(SLEEPER, config_files=["src"]))
    assert xp.getinfo("app").pid == pid and xp.getinfo("app").isrunning()


def test_a_starter_without_config_files_or_requires_keeps_its_fingerprint(xp):
    # states recorded before these attributes existed must not all restart once
    xp.ensure("app", starter(SLEEPER))
    state = xp.getinfo("app")._state()
    assert state is not None
    assert set(state.fingerprint) == {"args", "env", "cwd", "popen_kwargs", "pattern"}


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
    second.stdout.fnmatch_lines(["app: restarted in * (redis restarted)", "redis: started in *"])  # stopped on purpose
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


def test_a_function_in_popen_kwargs_does_not_restart_every_run(pytester_xp):
    """Item 5: a function's repr holds its memory address, different in every run; the
    configuration names it by module and qualified name instead."""
    pytester_xp.makeconftest(
        conftest_source(pytester_xp.path / "starts", extra='popen_kwargs = {"preexec_fn": lambda: os.nice(1)}').replace(
            "import sys, pytest", "import os, sys, pytest"
        )
    )
    pytester_xp.makepyfile("def test_a(srv):\n    pass\n")
    assert pytester_xp.runpytest_subprocess().ret == 0
    second = pytester_xp.runpytest_subprocess()
    assert second.ret == 0
    second.stdout.fnmatch_lines(["xprocess: reused srv"])
    assert (pytester_xp.path / "starts").read_text() == "x"


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


class Http(ProcessStarter):
    """Python's http.server on the starter's port, ready when it answers."""

    @property
    def args(self) -> list[object]:
        return [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", self.port]

    def startup_check(self) -> bool:
        return self.http_ok("/")


def test_a_port_is_chosen_kept_and_reported(xp):
    first = xp.ensure("http", Http)
    assert isinstance(first.port, int)
    assert xp.getinfo("http").port == first.port
    assert (xp.statedir / "http" / "port").read_text() == str(first.port)
    with socket.create_connection(("127.0.0.1", first.port), timeout=5):
        pass
    again = xp.ensure("http", Http)  # reused: the same process, found at the same port
    assert again == first and again.port == first.port
    restarted = xp.ensure("http", Http, restart=True)  # the kept port is free again once it ended
    assert restarted[0] != first[0] and restarted.port == first.port


def test_a_starter_that_never_reads_its_port_has_none(xp):
    from conftest import SLEEPER, starter

    started = xp.ensure("noport", starter(SLEEPER))
    assert started.port is None and xp.getinfo("noport").port is None


def test_a_kept_port_taken_by_someone_else_is_replaced_at_the_next_start_and_told(xp, caplog):
    """The move is told (issue 28): a daemon an earlier start left keeps its port, silently."""
    first = xp.ensure("http", Http)
    xp.getinfo("http").terminate()
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # the probes left TIME_WAITs
        squatter.bind(("127.0.0.1", first.port))
        squatter.listen()
        second = xp.ensure("http", Http)
    assert second.port != first.port
    assert xp.getinfo("http").port == second.port
    [told] = [r.getMessage() for r in caplog.records if "kept for" in r.getMessage()]
    assert told.startswith(f"xprocess: port {first.port}, kept for 'http', is in use (pid {os.getpid()}: ")
    assert told.endswith(f"): it gets port {second.port}")


def test_port_outside_a_start_is_a_free_port(tmp_path):
    with XProcess(None, tmp_path) as xp:
        port = Http(tmp_path / "nowhere", xp).port
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # free
    assert not (tmp_path / "nowhere").exists()


# a conftest's http.server on its port (fixtures follow)
HTTP_CONFTEST = textwrap.dedent("""
    import sys, pytest
    from xprocess import ProcessStarter

    class Http(ProcessStarter):
        @property
        def args(self):
            return [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", self.port]

        def startup_check(self):
            return self.http_ok("/")
""")


def test_workers_agree_on_one_port(pytester_xp):
    pytester_xp.makeconftest(
        HTTP_CONFTEST
        + textwrap.dedent("""
        @pytest.fixture
        def http(xprocess):
            return xprocess.ensure("http", Http)
    """)
    )
    pytester_xp.makepyfile(
        "".join(
            f"def test_{i}(http):\n    print('PORT', http.port)\n    import urllib.request\n"
            "    assert urllib.request.urlopen(f'http://127.0.0.1:{http.port}/').status == 200\n\n"
            for i in range(8)
        )
    )
    result = pytester_xp.runpytest_subprocess("-n", "2")
    result.assert_outcomes(passed=8)
    result.stdout.fnmatch_lines(["http: started in *"])


def time_waits(port: int) -> list[object]:
    import psutil

    return [c for c in psutil.net_connections("tcp4") if c.laddr.port == port and c.status == psutil.CONN_TIME_WAIT]


def test_a_kept_port_with_connections_in_time_wait_is_kept(xp):
    """http.server closes each connection first, so its port keeps TIME_WAIT entries for a minute
    after it stopped: a server can listen there again (SO_REUSEADDR), so the port stays the same."""
    first = xp.ensure("http", Http)
    with socket.create_connection(("127.0.0.1", first.port), timeout=10) as client:
        client.sendall(b"GET / HTTP/1.0\r\n\r\n")
        while client.recv(65536):  # read to the end: the server closed first (a TIME_WAIT on its side)
            pass
    assert xp.getinfo("http").terminate() == 1
    assert wait_for(lambda: time_waits(first.port)), "no TIME_WAIT left on the port: the test means nothing"
    second = xp.ensure("http", Http)
    assert second[0] != first[0] and second.port == first.port


def ephemeral_range() -> tuple[int, int]:
    """The kernel's, read here as a user would (``sysctl net.ipv4.ip_local_port_range``)."""
    path = Path("/proc/sys/net/ipv4/ip_local_port_range")
    if not path.exists():
        return 49152, 65535
    low, high = map(int, path.read_text().split())
    return low, high


def outside_ephemeral(port: int) -> bool:
    low, high = ephemeral_range()
    return 1024 < port < 65536 and not low <= port <= high


def test_a_chosen_port_is_outside_the_ephemeral_range(xp, tmp_path):
    """A port there may be taken by any outgoing connection between runs, or by port 0 binds; one
    choice in a start and forty outside one (each random: enough to catch a range let in)."""
    started = xp.ensure("http", Http)
    assert outside_ephemeral(started.port), (started.port, ephemeral_range())
    ports = [Http(tmp_path / "nowhere", xp).port for _ in range(40)]
    assert all(map(outside_ephemeral, ports)), (sorted(ports), ephemeral_range())


def test_a_port_kept_by_another_name_is_not_given_even_when_it_is_not_running(xp, monkeypatch):
    """The search for a port starts at a random offset; here, forced to start at the port that
    ``a`` keeps, while ``a`` is stopped and its port free, ``b`` must still look further."""
    import random

    a = xp.ensure("a", Http)
    assert xp.getinfo("a").terminate() == 1
    low, high = ephemeral_range()
    offset = a.port - 1025 - (high - low + 1 if a.port > high else 0)  # the search's offset of that port
    monkeypatch.setattr(random, "randrange", lambda count: offset)
    b = xp.ensure("b", Http)
    assert b.port != a.port and outside_ephemeral(b.port)
    assert xp.ensure("a", Http).port == a.port  # and a still gets its own at its next start


def test_a_name_choosing_its_port_waits_for_another_names_choice(xp, monkeypatch):
    """The test holds the project's port lock as a name choosing port P would, then keeps P for
    it: ``b``, whose search starts at P, waits for the lock and so sees P taken. (Without the
    lock, ``b`` takes P in the second it is given here: a pause for a mutant, no assert of time.)"""
    import random
    import threading

    low, high = ephemeral_range()
    port = xprocess._new_port(set())
    monkeypatch.setattr(random, "randrange", lambda count: port - 1025 - (high - low + 1 if port > high else 0))
    (xp.statedir / "a").mkdir(mode=0o700, parents=True)
    os.chmod(xp.statedir, 0o700)
    lock = os.open(xp.statedir / xprocess._PORT_LOCK, os.O_RDONLY | os.O_CREAT, 0o600)
    started: list[object] = []
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        b = threading.Thread(target=lambda: started.append(xp.ensure("b", Http)))
        b.start()
        wait_for((xp.statedir / "b" / "port").exists, timeout=1.0)
        (xp.statedir / "a" / "port").write_text(str(port))  # a's choice, made under the lock
    finally:
        os.close(lock)
    b.join(60)
    [ensured] = started
    assert ensured.port != port  # type: ignore[attr-defined]


def test_a_kept_port_in_the_ephemeral_range_is_replaced_at_the_next_start_and_told(xp, caplog):
    """One an earlier version chose (it bound port 0): kept while its server runs, moved when it starts."""
    low, high = ephemeral_range()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # free, and in the range (the kernel's own choice)
        old = sock.getsockname()[1]
    assert low <= old <= high
    control = xp.statedir / "http"
    control.mkdir(mode=0o700, parents=True)
    os.chmod(xp.statedir, 0o700)
    (control / "port").write_text(str(old))
    started = xp.ensure("http", Http)
    assert started.port != old and outside_ephemeral(started.port)
    assert (control / "port").read_text() == str(started.port)
    [told] = [r.getMessage() for r in caplog.records if "kept for" in r.getMessage()]
    assert told == (
        f"xprocess: port {old}, kept for 'http', is in the ephemeral range ({low}-{high}), which outgoing "
        f"connections take ports from: it gets port {started.port}"
    )


def test_a_starter_that_reads_its_port_and_fails_leaves_nothing(xp):
    """The port lock of the state directory and the name's port file go with a failed first start."""

    class Missing(Http):
        @property
        def args(self) -> list[object]:
            return ["no-such-program-xyz", self.port]

    with pytest.raises(FileNotFoundError, match="'no-such-program-xyz' not found on PATH"):
        xp.ensure("bad", Missing)
    assert not xp.statedir.exists()


SIXTEEN = 16


def test_sixteen_names_started_together_under_xdist_get_sixteen_ports_kept_across_runs(pytester_xp):
    """Each worker starts names at the same moment (the name locks keep only one name's starts
    apart): every server must listen on a port of its own, the same one at the next cold start."""
    pytester_xp.makeconftest(
        HTTP_CONFTEST
        + textwrap.dedent(f"""
        @pytest.fixture(params=range({SIXTEEN}))
        def http(request, xprocess):
            return xprocess.ensure(f"http{{request.param}}", Http)
    """)
    )
    pytester_xp.makepyfile(
        textwrap.dedent("""
        import urllib.request

        def test_serves(http):
            print("PORT", http.port)
            assert urllib.request.urlopen(f"http://127.0.0.1:{http.port}/", timeout=10).status == 200
    """)
    )

    def ports() -> dict[str, int]:
        statedir = pytester_xp.path / ".xprocess"
        return {f"http{i}": XProcessInfo(statedir, f"http{i}").port for i in range(SIXTEEN)}  # type: ignore[misc]

    result = pytester_xp.runpytest_subprocess("-n", "4")
    result.assert_outcomes(passed=SIXTEEN)
    first = ports()
    assert len(set(first.values())) == SIXTEEN, first
    assert all(map(outside_ephemeral, first.values())), first
    for name, port in first.items():  # each really listens there, as its own
        [holder] = [pid for pid, _ in xprocess._port_holders(port)]
        assert holder == XProcessInfo(pytester_xp.path / ".xprocess", name).pid
    assert pytester_xp.runpytest_subprocess("--xkill").ret == 0
    again = pytester_xp.runpytest_subprocess("-n", "4")
    again.assert_outcomes(passed=SIXTEEN)
    again.stdout.no_fnmatch_line("*it gets port*")
    assert ports() == first
