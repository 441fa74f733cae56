from __future__ import annotations

import contextlib
import os
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Iterator, Sequence

import psutil
import pytest

import xprocess
from xprocess import XProcess

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
