"""Section 3, files under .xprocess: modes whatever the umask, other accounts (real ones:
``nobody``, so these need root), links, fifos and devices planted there, the name lock, the
.gitignore, earlier logs, a full or read-only disk (a tmpfs: root)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import (
    SLEEPER,
    Good,
    alive,
    conftest_source,
    ours_still_running,
    py,
    starter,
    terminate_all,
    wait_for,
)

import xprocess
from xprocess import StartupTimeoutError, XProcess, XProcessError


def test_earlier_logs_are_bounded_and_persist_logs_false_keeps_none(xp):
    for _ in range(xprocess.KEPT_LOGS + 2):
        xp.ensure("logs", starter(SLEEPER), restart=True)
    control = xp.statedir / "logs"
    kept = sorted(p.name for p in control.glob("xprocess.log*"))
    assert kept == ["xprocess.log"] + [f"xprocess.log.{i}" for i in range(1, xprocess.KEPT_LOGS + 1)]
    xp.ensure("logs", starter(SLEEPER), restart=True, persist_logs=False)
    assert sorted(p.name for p in control.glob("xprocess.log*")) == ["xprocess.log"]


def test_getinfo_creates_nothing(xp):
    info = xp.getinfo("nothing")
    assert info.pid is None and not info.isrunning() and info.terminate() == 0
    assert not xp.statedir.exists()


def test_state_dir_has_a_gitignore(xp):
    xp.ensure("gi", starter(SLEEPER))
    assert (xp.statedir / ".gitignore").read_text() == "*\n"


def test_unwritable_state_dir_is_a_clear_error(tmp_path):
    # a file where the state directory should be: the same error a read-only disk gives
    (tmp_path / ".xprocess").write_text("")
    with XProcess(None, tmp_path) as xp, pytest.raises(XProcessError, match=re.escape(str(tmp_path / ".xprocess"))):
        xp.ensure("ro", Good)


def test_different_names_do_not_wait_for_each_other(tmp_path):
    """'first' gets ready only after 'second' started: with one lock for both, this would time out."""
    flag = tmp_path / "second-started"
    first = (
        "import os, sys, time\n"
        f"while not os.path.exists({str(flag)!r}): time.sleep(0.01)\n"
        "print('ready', flush=True); time.sleep(600)"
    )
    session = (
        "import sys; from xprocess import XProcess, ProcessStarter\n"
        f"S = type('S', (ProcessStarter,), dict(args=[sys.executable, '-c', {first!r}], pattern='ready', timeout=30))\n"
        f"with XProcess(None, {str(tmp_path)!r}) as xp: xp.ensure('first', S)\n"
    )
    other = subprocess.Popen([sys.executable, "-c", session])
    try:
        assert wait_for((tmp_path / ".xprocess" / "first" / "state.jsonl").exists, 30)
        with XProcess(None, tmp_path) as xp:
            second = f"import time; open({str(flag)!r}, 'w').close(); print('ready', flush=True); time.sleep(600)"
            xp.ensure("second", starter(second, timeout=30))
        assert other.wait(60) == 0
    finally:
        other.kill()
        other.wait()

        terminate_all(tmp_path / ".xprocess")


def test_full_disk_is_a_clear_error_and_leaves_no_state(tiny_disk):
    with XProcess(None, tiny_disk) as xp:
        xp.ensure("warmup", Good)  # the state directory exists; now fill the disk
        xp.getinfo("warmup").terminate()
        fd = os.open(tiny_disk / "filler", os.O_WRONLY | os.O_CREAT)
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"x" * 4096)
        os.close(fd)
        with pytest.raises(XProcessError, match=re.escape(str(tiny_disk / ".xprocess"))) as excinfo:
            xp.ensure("full", Good)
        assert "No space left" in str(excinfo.value)
        control = tiny_disk / ".xprocess" / "full"
        assert not any(p.name.startswith(("state", ".state")) for p in control.iterdir())
        assert ours_still_running(tiny_disk) == []


def test_a_first_start_on_a_full_disk_leaves_a_gitignore_that_works_once_space_is_back(tiny_disk):
    """Issue 26, case 13: the first ensure() on a full disk fails; once space is back, the next
    one writes a whole .gitignore (it was left empty, and git offered the logs for commit)."""
    filler = tiny_disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    with contextlib.suppress(OSError):
        while True:
            os.write(fd, b"x" * 4096)
    os.close(fd)
    with XProcess(None, tiny_disk) as xp:
        with pytest.raises(XProcessError, match="No space left"):
            xp.ensure("srv", Good)
        assert [p.name for p in (tiny_disk / ".xprocess").iterdir() if p.name.startswith(".git")] == []
        filler.unlink()
        xp.ensure("srv", Good)
        assert (tiny_disk / ".xprocess" / ".gitignore").read_text() == "*\n"


def test_read_only_state_dir_is_a_clear_error(tiny_disk):
    with XProcess(None, tiny_disk) as xp:
        xp.ensure("warmup", Good)
        xp.getinfo("warmup").terminate()
        subprocess.run(["mount", "-o", "remount,ro", str(tiny_disk)], check=True)
        with pytest.raises(XProcessError, match=re.escape(str(tiny_disk / ".xprocess" / "ro"))) as excinfo:
            xp.ensure("ro", Good)
        assert "Read-only file system" in str(excinfo.value)


def test_the_lock_wait_times_out_while_another_session_starts_it(xp):
    control = xp.statedir / "locked"
    control.mkdir(parents=True)
    holder = subprocess.Popen(
        py(f"""
            import fcntl, os, sys, time
            fd = os.open({str(control / "lock")!r}, os.O_RDONLY | os.O_CREAT)
            fcntl.flock(fd, fcntl.LOCK_EX)
            print("held", flush=True)
            time.sleep(600)
        """),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline() == "held\n"
        held = r"another session held .*lock \(starting it\) for the whole timeout of 1 s: that start is slow or failed"
        with pytest.raises(StartupTimeoutError, match=held):
            xp.ensure("locked", starter(SLEEPER, timeout=1))
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()


ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="another account's files need root to make")


NOBODY = 65534


def as_nobody(code: str) -> subprocess.CompletedProcess[str]:
    """Run Python ``code`` as the nobody account (with the system's Python: a virtualenv's may
    live where nobody may not read, as under /root)."""

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


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def test_planted_symlinks_are_not_followed(xp, tmp_path):
    target = tmp_path / "target"
    control = xp.statedir / "planted"
    control.mkdir(parents=True)
    (control / "lock").symlink_to(target)  # a lock planted as a link: replaced, not created
    xp.ensure("planted", starter(SLEEPER))
    assert not target.exists()
    assert not (control / "lock").is_symlink()

    target.write_text("precious\n")

    class SwapsItsState(xprocess.ProcessStarter):
        args = py(SLEEPER)
        pattern = "ready"

        def startup_check(self) -> bool:  # during the start, state.jsonl becomes a link
            state = self.control_dir / "state.jsonl"
            state.unlink()
            state.symlink_to(target)
            return True

    xp.ensure("planted", SwapsItsState, restart=True)
    assert target.read_text() == "precious\n"
    assert xp.getinfo("planted").isrunning()  # its state was replaced by a whole, trusted one

    log = control / "xprocess.log"
    log.unlink()
    log.symlink_to(target)  # a log link: a read never follows it
    with pytest.raises(OSError):
        xp.ensure("planted", SwapsItsState).logfile.read()


def test_a_symlinked_control_directory_is_refused(xp, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    xp.statedir.mkdir()
    (xp.statedir / "linked").symlink_to(elsewhere)
    with pytest.raises(xprocess.XProcessError, match=r"symbolic link.*Remove it"):
        xp.ensure("linked", starter(SLEEPER))
    assert list(elsewhere.iterdir()) == []


def test_one_logfile_per_name_however_often_it_is_ensured(xp):
    Starter = starter(SLEEPER)
    xp.ensure("many", Starter).logfile  # noqa: B018 - the first opens it
    before = len(os.listdir("/proc/self/fd"))
    files = {id(xp.ensure("many", Starter).logfile) for _ in range(200)}
    assert len(os.listdir("/proc/self/fd")) == before
    assert len(files) == 1


def test_reuse_in_a_read_only_project(tiny_disk):
    with XProcess(None, tiny_disk) as xp:
        first = xp.ensure("ro", starter(SLEEPER))[0]
    ro = tiny_disk / ".xprocess"
    subprocess.run(["mount", "--bind", str(ro), str(ro)], check=True)  # the same path, now read-only
    subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)], check=True)
    try:
        with XProcess(None, tiny_disk) as xp:
            assert xp.ensure("ro", starter(SLEEPER))[0] == first
            with pytest.raises(xprocess.XProcessError, match="Read-only file system"):
                xp.ensure("ro", starter(SLEEPER), restart=True)
    finally:
        subprocess.run(["umount", str(ro)], check=True)
