from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Iterator, Sequence

import psutil
import pytest

import xprocess
from xprocess import ProcessStarter, XProcess, XProcessInfo

pytest_plugins = ["pytester"]


def py(code: str) -> list[str]:
    """The args of a tiny Python child running ``code``."""
    return [sys.executable, "-c", textwrap.dedent(code)]


def starter(code: str, pattern: str | None = "ready", **attrs: object) -> type[xprocess.ProcessStarter]:
    """A ProcessStarter running the Python ``code``."""
    return type("Starter", (xprocess.ProcessStarter,), {"args": py(code), "pattern": pattern, **attrs})


SLEEPER = "import time; print('ready', flush=True); time.sleep(600)"


def conftest_source(
    starts: object, names: Sequence[str] = ("srv",), extra: str = "", code: str | None = None, ensure_args: str = ""
) -> str:
    """A conftest with one fixture per name, each a server (``code``, by default one that counts
    its starts in ``starts``) ensured with ``ensure_args`` (say ``", restart=True"``)."""
    code = code or f"import time; open({str(starts)!r}, 'a').write('x'); print('ready', flush=True); time.sleep(600)"
    fixtures = "".join(
        f"""
@pytest.fixture
def {name}(xprocess):
    return xprocess.ensure({name!r}, Starter{ensure_args})
"""
        for name in names
    )
    return f"""
import sys, pytest
from xprocess import ProcessStarter

class Starter(ProcessStarter):
    pattern = "ready"
    args = [sys.executable, "-c", {code!r}]
{textwrap.indent(textwrap.dedent(extra), "    ")}
{fixtures}
"""


def terminate_all(statedir: Path, names: Sequence[str] = ()) -> None:
    """Terminate, through the public API, what runs under each name with a directory in
    ``statedir`` (a test's finalizer) and under each of ``names``, whose state may be lost:
    ``XProcessInfo.terminate()`` finds it by its log or marker then, as the next start would.
    One name after another, each given 2 s before SIGKILL; entries that are no directory, or
    whose name ``getinfo`` refuses, are skipped."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # some tests leave garbage state on purpose
        xp = XProcess(None, statedir.parent)
        found = []
        with contextlib.suppress(OSError):  # no state directory: nothing recorded
            found = sorted(e.name for e in os.scandir(statedir) if e.is_dir(follow_symlinks=False))
        for name in dict.fromkeys([*found, *names]):
            try:
                info = xp.getinfo(name)
            except ValueError:  # no name xprocess takes (a directory a test planted)
                continue
            info.terminate(timeout=2.0)


@pytest.fixture
def xp(tmp_path: Path) -> Iterator[XProcess]:
    """An XProcess rooted in a fresh directory; what it started is terminated afterwards."""
    with XProcess(None, tmp_path) as xp:
        yield xp
        terminate_all(xp.statedir)


@pytest.fixture
def pytester_xp(pytester: pytest.Pytester) -> Iterator[pytest.Pytester]:
    """A pytester project (with a pytest.ini, so it is the rootdir); its processes end afterwards."""
    pytester.makeini("[pytest]\n")
    yield pytester
    terminate_all(pytester.path / ".xprocess")


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs: a real disk that fills up or turns read-only (mounting needs root)."""
    import subprocess

    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], check=True)
    yield disk
    terminate_all(disk / ".xprocess")
    subprocess.run(["umount", "-l", str(disk)], check=True)


def writes_under(pid: int, root: Path) -> bool:
    """Whether ``pid``'s stdout is a file under ``root`` (removed or not): a log of the plugin's."""
    try:
        return os.readlink(f"/proc/{pid}/fd/1").startswith(str(root.resolve()) + os.sep)
    except OSError:
        return False


def ours_still_running(root: Path) -> list[psutil.Process]:
    """Processes started by the plugin (marked in their environment, or writing to a log under
    ``root``: servers that wipe their environment) whose cwd is under ``root``."""
    leaked = []
    for proc in psutil.process_iter():
        try:
            if proc.pid != os.getpid() and proc.status() != psutil.STATUS_ZOMBIE:
                cwd = proc.cwd().removesuffix(" (deleted)")
                if Path(cwd).is_relative_to(root) and (
                    xprocess.MARKER_ENV in proc.environ() or writes_under(proc.pid, root)
                ):
                    leaked.append(proc)
        except (psutil.Error, OSError, AttributeError):
            continue
    return leaked


def kill_writing_under(root: Path) -> None:
    """Kill what writes to a log under ``root``: the cleanup of tests that may find the plugin
    broken on purpose (tests/mutate.py), where the plugin cannot be asked to stop it."""
    for proc in psutil.process_iter():
        if proc.pid != os.getpid() and writes_under(proc.pid, root):
            with contextlib.suppress(psutil.Error):
                proc.kill()


@pytest.fixture(scope="session", autouse=True)
def no_process_left_behind(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The suite ends with no process of its own still running."""
    yield
    import tempfile

    # pytest's temporary directory, and the integration tests' projects (/tmp/xprocess-it-<pid>-*):
    # this process's only, as another xdist worker's may be running a test right now
    leaked = ours_still_running(tmp_path_factory.getbasetemp())
    for project in Path(tempfile.gettempdir()).glob(f"xprocess-it-{os.getpid()}-*"):
        leaked += ours_still_running(project)
    for proc in leaked:
        proc.kill()
    assert not leaked, f"tests left these processes running: {leaked}"


def wait_for(predicate: object, timeout: float = 10.0) -> bool:
    """Poll ``predicate()`` until it is true (for conditions another process brings about)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.01)
    return False


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# --- shared by several test files ---


class Good(ProcessStarter):
    args = py(SLEEPER)
    pattern = "ready"


def sleeper_project(pytester, code=SLEEPER, extra="", ensure_args=""):
    pytester.makeconftest(conftest_source(None, code=code, extra=extra, ensure_args=ensure_args))
    pytester.makepyfile("def test_a(srv):\n    pass\n")
    return pytester


SERVER_CONFTEST = """
    import json, os, pathlib, sys

    import pytest
    import xprocess
    from xprocess import ProcessStarter

    def start_of(pid):  # as the plugin records it (from /proc on Linux, else through psutil)
        return xprocess._OS.proc(pid).start

    # FORGE rewrites the recorded state of srv before the plugin reads it, as a hostile or careless
    # hand would: naming init, this pytest, its parent shell or a stranger, or with an empty marker.
    FORGE = os.environ.get("FORGE")
    STATE = pathlib.Path(__file__).parent / ".xprocess" / "srv" / "state.jsonl"
    if FORGE:
        record = {}
        for line in STATE.read_text().splitlines():
            record.update(json.loads(line))
        if FORGE == "thread-of-self":  # a thread id resolves in /proc like a pid: os.kill(tid) hits pytest
            import threading, time
            thread = threading.Thread(target=time.sleep, args=(600,), daemon=True)
            thread.start()
        pid = {"init": 1, "self": os.getpid(), "parent": os.getppid()}.get(FORGE) or int(
            thread.native_id if FORGE == "thread-of-self" else os.environ["STRANGER"]
        )
        record.update(pid=pid, start=start_of(pid))
        if FORGE == "empty-marker":
            record["token"] = ""
        STATE.write_text(json.dumps(record) + "\\n")

    @pytest.fixture
    def srv(xprocess):
        class Server(ProcessStarter):
            args = [sys.executable, "-c", "import time; print('ready', flush=True); time.sleep(600)"]
            pattern = "ready"
            popen_kwargs = {"preexec_fn": lambda: os.kill(os.getppid(), 9)} if os.environ.get("KILL_AT_SPAWN") else {}
        return xprocess.ensure("srv", Server)
"""


def make_project(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "pytest.ini").write_text("[pytest]\n")
    (path / "conftest.py").write_text(textwrap.dedent(SERVER_CONFTEST))
    (path / "test_srv.py").write_text("def test_a(srv):\n    print('PID', srv[0])\n")
    return path


@pytest.fixture
def project(pytester_xp):
    pytester_xp.makeconftest(conftest_source(pytester_xp.path / "starts"))
    pytester_xp.makepyfile("def test_a(srv):\n    assert srv[0] > 0\n")
    return pytester_xp


def recorded_pid(pytester, name="srv"):
    return XProcessInfo(pytester.path / ".xprocess", name).pid


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


@pytest.fixture
def probe(tmp_path: Path) -> Iterator[ProcessStarter]:
    with XProcess(None, tmp_path) as xp:
        yield ProcessStarter(tmp_path, xp)
