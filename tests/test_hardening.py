""".xprocess against odd files, umask and other accounts; one deadline per ensure() (issue 19).

Other accounts are real ones (``nobody``), so these need root; each test says what it checks.
"""

from __future__ import annotations

import fcntl
import os
import stat
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from conftest import SLEEPER, alive, conftest_source, py, starter

import xprocess
from xprocess import StartupTimeoutError, XProcess, XProcessError

ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="another account's files need root to make")
NOBODY = 65534


def as_nobody(code: str) -> subprocess.CompletedProcess[str]:
    """Run Python ``code`` as the nobody account (with the system's Python: a virtualenv's may
    live where nobody may not read, as under /root)."""
    import shutil

    python = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
    return subprocess.run(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", python, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
    )


def modes(statedir: Path) -> dict[str, int]:
    """Every path under ``statedir`` (itself included) and its permission bits."""
    found = {".": stat.S_IMODE(os.lstat(statedir).st_mode)}
    for path in statedir.rglob("*"):
        found[str(path.relative_to(statedir))] = stat.S_IMODE(os.lstat(path).st_mode)
    return found


def test_dirs_are_0700_and_files_0600_whatever_the_umask(tmp_path):
    """Item 2: under umask 000 nothing the plugin creates is open to other accounts (the port,
    the session records, logs of earlier starts, the .gitignore included)."""
    code = textwrap.dedent(f"""
        import os, sys
        os.umask(0)
        sys.path.insert(0, {str(Path(xprocess.__file__).parent)!r})
        from xprocess import XProcess, ProcessStarter
        class S(ProcessStarter):
            pattern = "ready"
            @property
            def args(self):
                return {py(SLEEPER)!r} + [str(self.port)]
        with XProcess(None, {str(tmp_path)!r}) as xp:
            xp._session.id = "s1"
            xp.ensure("srv", S)
            xp.ensure("srv", S, restart=True)  # an earlier log kept
            xp._session._append({{"name": "srv", "kind": "reused"}})
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    try:
        assert done.returncode == 0, done.stderr
        found = modes(tmp_path / ".xprocess")
        assert {"srv/xprocess.log.1", "srv/port", "srv/lock", ".gitignore", ".session-s1.jsonl"} <= set(found)
        for path, mode in found.items():
            is_dir = (tmp_path / ".xprocess" / path).is_dir()
            assert mode == (0o700 if is_dir else 0o600), (path, oct(mode))
    finally:
        with XProcess(None, tmp_path) as xp:
            xp.getinfo("srv").terminate()


@ROOT
def test_another_account_cannot_lock_or_read_anything():
    """Item 1: another account cannot flock the start lock (which would fail every start) or the
    log the leases live on, nor read the state, even where it may pass through the directories
    (a starter that runs its server as that account makes them 0711)."""
    import shutil
    import tempfile

    project = Path(tempfile.mkdtemp(prefix=f"xprocess-it-{os.getpid()}-"))  # pytest's tmp_path is 0700: not reachable
    project.chmod(0o755)
    try:
        with XProcess(None, project) as xp:
            xp.ensure("srv", starter(SLEEPER))
            control = xp.getinfo("srv").controldir
            os.chmod(xp.statedir, 0o711)
            os.chmod(control, 0o711)
            reach = as_nobody(f"import os; os.stat({str(control / 'lock')!r})")
            assert reach.returncode == 0, reach.stderr  # it does get there
            for name in ("lock", "xprocess.log", "state.jsonl"):
                tried = as_nobody(f"import fcntl; fcntl.flock(open({str(control / name)!r}), fcntl.LOCK_EX)")
                assert tried.returncode != 0 and "PermissionError" in tried.stderr, (name, tried.stderr)
            xp.getinfo("srv").terminate()
    finally:
        shutil.rmtree(project)


@ROOT
@pytest.mark.parametrize("which", ["state directory", "control directory"])
def test_a_directory_of_another_account_is_refused_saying_whose(xp, which):
    """Item 3: another user created .xprocess (or a control directory) first, as they can where
    the rootdir is writable by others: it is refused, naming the owner and the fix, and nothing is
    written through it."""
    path = xp.statedir if which == "state directory" else xp.getinfo("srv").controldir
    path.parent.mkdir(exist_ok=True)
    path.mkdir(mode=0o700)
    os.chown(path, NOBODY, NOBODY)
    with pytest.raises(XProcessError, match=r"belongs to uid 65534 \(nobody\).*Remove it \(rm -rf"):
        xp.ensure("srv", starter(SLEEPER))
    assert list(path.iterdir()) == []


@ROOT
def test_a_lock_file_of_another_account_is_refused(xp):
    """A start lock that another account owns (it could hold the lock and so block every start)
    is not used: the error names its owner and says to remove it; the running server stays."""
    pid = xp.ensure("srv", starter(SLEEPER))[0]
    os.chown(xp.getinfo("srv").controldir / "lock", NOBODY, NOBODY)
    with pytest.raises(XProcessError, match=r"cannot open its lock .*belongs to uid 65534 \(nobody\).*remove it"):
        xp.ensure("srv", starter(SLEEPER))
    assert alive(pid)


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o757])
def test_a_directory_others_may_write_to_is_refused(xp, mode):
    """Items 2, 3: a .xprocess writable by group or others (a team directory, umask 000 from an
    older version) would let them replace its files: refused, with the mode and what to do."""
    xp.statedir.mkdir(parents=True)
    os.chmod(xp.statedir, mode)
    with pytest.raises(XProcessError, match=rf"may be written by other users \(mode {mode:o}\).*chmod 700"):
        xp.ensure("srv", starter(SLEEPER))


def test_files_planted_through_links_are_not_written_through(xp, tmp_path):
    """Item 3: a symbolic link planted as the session file or .gitignore is never written through."""
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    xp.statedir.mkdir(mode=0o700)
    (xp.statedir / ".gitignore").symlink_to(victim)
    xp._session.id = "s1"
    (xp.statedir / ".session-s1.jsonl").symlink_to(victim)
    xp.ensure("srv", starter(SLEEPER))
    assert victim.read_text() == "precious\n"
    assert xp._session.records  # the record is kept in memory (the summary has it) though the file was refused


@pytest.mark.parametrize("planted", ["lock", "port", "state.jsonl"])
def test_a_fifo_in_the_control_directory_never_hangs_a_start(xp, planted):
    """Item 4: a FIFO in place of a file is never opened in a way that blocks: the lock is
    refused with an error saying what it is, the others are ignored (a warning for the state)."""
    control = xp.getinfo("srv").controldir
    control.mkdir(parents=True)
    os.chmod(xp.statedir, 0o700)
    os.mkfifo(control / planted, 0o600)

    class Server(xprocess.ProcessStarter):
        pattern = "ready"

        @property
        def args(self):
            return [*py(SLEEPER), str(self.port)]  # reads the port file

    if planted == "lock":
        with pytest.raises(XProcessError, match=r"lock.*not a regular file"):
            xp.ensure("srv", Server)
        return
    with pytest.warns(xprocess.XProcessWarning) if planted == "state.jsonl" else _nothing():
        pid = xp.ensure("srv", Server)[0]
    assert alive(pid)


def test_a_log_replaced_by_a_fifo_or_device_is_not_read_for_a_report(pytester_xp):
    """Item 4: the log replaced (by a FIFO, or a character device such as /dev/zero, endless)
    while the process runs: a failing test's report skips it instead of hanging or reading
    without bound (INTERNALERROR MemoryError)."""
    pytester_xp.makeconftest(conftest_source(pytester_xp.path / "starts"))
    pytester_xp.makepyfile(
        """
        import os
        def test_fails(srv):
            log = srv[1]
            os.unlink(log)
            os.mkfifo(log)
            assert False, "boom"
        """
    )
    result = pytester_xp.runpytest_subprocess("--timeout=60")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*AssertionError: boom*"])
    assert "INTERNALERROR" not in result.stdout.str()


def test_a_function_in_popen_kwargs_does_not_restart_every_run(pytester_xp):
    """Item 5: a function's repr holds its memory address, different in every run; the
    configuration names it by module and qualified name instead."""
    pytester_xp.makeconftest(
        conftest_source(pytester_xp.path / "starts", extra='popen_kwargs = {"preexec_fn": lambda: os.nice(1)}')
        .replace("import sys, pytest", "import os, sys, pytest")
    )
    pytester_xp.makepyfile("def test_a(srv):\n    pass\n")
    assert pytester_xp.runpytest_subprocess().ret == 0
    second = pytester_xp.runpytest_subprocess()
    assert second.ret == 0
    second.stdout.fnmatch_lines(["xprocess: reused srv"])
    assert (pytester_xp.path / "starts").read_text() == "x"


@pytest.mark.skipif(
    not (sys.platform.startswith("linux") and hasattr(os, "pidfd_open")),
    reason="the evented wait is Linux's (inotify, pidfd); elsewhere waits poll",
)
def test_a_nested_ensure_leaves_the_outer_wait_and_later_waits_evented(xp):
    """Item 6: ensure() called from a startup_check: the inner wait has watches of its own, the
    outer ones come back, and no pidfd is left registered: once the inner server exits, a later
    wait still sleeps on its events instead of waking at once (a spin at 100 % CPU)."""
    import resource

    inner = starter(SLEEPER)

    class Outer(xprocess.ProcessStarter):
        pattern = "ready"
        args = py(SLEEPER)

        def startup_check(self) -> bool:
            xp.ensure("inner", inner)
            return True

    xp.ensure("outer", Outer)
    assert xp.getinfo("inner").terminate() == 1
    slow = "import time; time.sleep(1); print('ready', flush=True); time.sleep(600)"
    before = resource.getrusage(resource.RUSAGE_THREAD)
    xp.ensure("later", starter(slow))
    after = resource.getrusage(resource.RUSAGE_THREAD)
    switches = after.ru_nvcsw - before.ru_nvcsw
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    assert switches < 40, f"{switches} voluntary context switches during a 1 s wait: a leaked watch?"
    assert cpu < 0.5, f"{cpu:.2f} s of CPU during a 1 s wait: it spins on a leaked watch"  # counted, not timed


def test_a_failed_first_start_keeps_the_gitignore(xp):
    """Item 7: a starter that created files (PostgreSQL's makes data/) then fails: .xprocess
    stays, and so does its .gitignore (git would see logs, state and a cluster)."""

    class Fails(xprocess.ProcessStarter):
        pattern = "ready"

        @property
        def args(self):
            (self.control_dir / "data").mkdir()
            return ["no-such-program-xyz"]

    with pytest.raises(FileNotFoundError):
        xp.ensure("db", Fails)
    assert (xp.statedir / "db" / "data").is_dir()
    assert (xp.statedir / ".gitignore").read_text() == "*\n"


def test_a_removed_gitignore_comes_back(xp):
    """Item 7: whenever .xprocess exists, it has its .gitignore."""
    xp.ensure("srv", starter(SLEEPER))
    (xp.statedir / ".gitignore").unlink()
    xp.ensure("srv", starter(SLEEPER))
    assert (xp.statedir / ".gitignore").read_text() == "*\n"


def test_the_lock_wait_and_the_start_share_one_deadline(xp):
    """Item 9: the timeout is the whole wait. Another session holds the start lock for 1.5 s and
    the process needs 1 s more to be ready: with a timeout of 2 s that is a timeout, where a full
    timeout for each would have succeeded."""
    control = xp.getinfo("srv").controldir
    control.mkdir(parents=True)
    os.chmod(xp.statedir, 0o700)
    lock = os.open(control / "lock", os.O_RDONLY | os.O_CREAT, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX)
    release = threading.Timer(1.5, lambda: os.close(lock))
    release.start()
    slow = "import time; time.sleep(1); print('ready', flush=True); time.sleep(600)"
    try:
        with pytest.raises(StartupTimeoutError):
            xp.ensure("srv", starter(slow, timeout=2))
    finally:
        release.join()


def test_a_waiting_restart_does_not_block_plain_reuse(pytester_xp):
    """Item 10: B holds srv; A asks for a restart and waits for B; meanwhile C, whose
    configuration matches the running server, reuses it at once instead of waiting for A."""
    from test_leases import CONFTEST, LONG_TEST, finish_b, pytest_cmd, start_b

    project = pytester_xp.path
    pytester_xp.makeconftest(textwrap.dedent(CONFTEST))
    pytester_xp.makepyfile(test_long=textwrap.dedent(LONG_TEST), test_quick="def test_quick(srv):\n    pass\n")
    b, pid = start_b(project)
    a = subprocess.Popen(
        pytest_cmd("test_quick.py"),
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "RESTART": "1", "STARTER_TIMEOUT": "60"},
    )
    try:
        c = subprocess.run(pytest_cmd("test_quick.py"), cwd=project, capture_output=True, text=True, timeout=50)
        assert a.poll() is None  # A still waits for B: C did not wait for A
        assert c.returncode == 0, c.stdout
        assert "xprocess: reused srv" in c.stdout
        assert alive(pid)
    finally:
        code, out = finish_b(project, b)
        a.communicate(timeout=60)
    assert code == 0, out
    assert a.returncode == 0


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
