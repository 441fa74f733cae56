"""xprocess: start the long-running processes a test suite needs once, and reuse them across runs.

In a conftest fixture: ``pid, logpath = xprocess.ensure("myserver", MyStarter)``.

PYTEST_DONT_REWRITE: no asserts here, so pytest need not rewrite (re-compile) it at each start-up.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import sys
import time
import warnings
from pathlib import Path
from types import MappingProxyType
from typing import IO, TYPE_CHECKING, Any, Callable, Iterator, Mapping, NamedTuple, Sequence

import pytest

if TYPE_CHECKING:
    import subprocess

    import psutil

# psutil, subprocess, select and hashlib are imported where they are used: a pytest run that never
# starts a process should not pay for them (the plugin is loaded into every run).

__all__ = [
    "ProcessStarter",
    "XProcess",
    "XProcessInfo",
    "XProcessError",
    "ProcessExitedError",
    "StartupTimeoutError",
    "XProcessWarning",
]

# --- constants ---

STATE_DIR = ".xprocess"
LOG_NAME = "xprocess.log"
STATE_NAME = "state.jsonl"
LOCK_NAME = "lock"
KEPT_LOGS = 5  # logs of earlier starts kept beside the current one (xprocess.log.1 is the newest)
TERMINATE_TIMEOUT = 10.0  # seconds between SIGTERM and SIGKILL
STATE_VERSION = 1
MARKER_ENV = "XPROCESS_ID"  # "<project key>:<name>:<start id>" in every started process and its descendants
STOP_ENV = "XPROCESS_STOP"

_TAIL_LINES = 20  # log lines quoted in an error
_REPORT_LINES = 50  # log lines added to a failed test's report
_REPORT_BYTES = 64 * 1024
_CHUNK = 256 * 1024  # log bytes read at a time
_MAX_LINE = 1024 * 1024  # longer lines are cut to this many bytes before matching
_PAUSE = 0.1  # a last line without its newline is matched once output paused this long
_POLL = 0.01  # wake-up interval where the OS gives no event for a log write or a child's exit
_CLOCK_SLACK = 1.0  # start times may differ by the jitter of the boot time they derive from
_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,199}\Z")
# Popen arguments the plugin must own: the log redirection, no shell, its own session, the env.
_OWNED_POPEN_KWARGS = frozenset({"args", "stdout", "stderr", "shell", "env", "start_new_session", "process_group"})

_STOP_HELP = (
    "terminate, at the end of the session, every process the session started or reused "
    f"(default: keep them running for the next run; env {STOP_ENV}, ini xprocess_stop)"
)
_XPROCESS_KEY = pytest.StashKey["XProcess"]()

log = logging.getLogger("xprocess")


# --- exceptions ---


class XProcessError(RuntimeError):
    """A process could not be started or made ready; the message says why and quotes its log."""

    def __init__(
        self,
        message: str,
        *,
        name: str | None = None,
        exitcode: int | None = None,
        logpath: Path | None = None,
    ) -> None:
        super().__init__(message)
        self.name = name
        self.exitcode = exitcode
        self.logpath = logpath


class ProcessExitedError(XProcessError):
    """The process exited before it was ready."""


class StartupTimeoutError(XProcessError, TimeoutError):
    """The process did not become ready within the starter's timeout."""


class XProcessWarning(UserWarning):
    """Recorded state could not be read: the process counts as not running and the run goes on."""


# --- the library ---


class ProcessStarter:
    """Describes how to start a process and how to tell that it is ready.

    Subclass it and set the class attributes; define ``startup_check(self)`` to probe readiness.
    """

    args: Sequence[Any] = ()
    pattern: str | re.Pattern[str] | None = None
    env: Mapping[str, str] | None = None
    timeout: float = 120
    max_read_lines: int | None = None
    popen_kwargs: Mapping[str, Any] = MappingProxyType({})
    terminate_on_interrupt: bool = False

    def __init__(self, control_dir: Path, process: XProcess) -> None:
        self.control_dir = control_dir
        self.process = process


class _Launch(NamedTuple):
    """A starter's settings, checked and normalised."""

    args: list[str]
    env: dict[str, str] | None
    cwd: Path
    pattern: re.Pattern[str] | None
    check: Callable[[], Any] | None
    timeout: float
    max_read_lines: int | None
    popen_kwargs: dict[str, Any]
    terminate_on_interrupt: bool

    def fingerprint(self) -> dict[str, str]:
        """A digest per part of what was started; a changed part means a restart."""
        import hashlib

        parts = {"args": self.args, "env": self.env, "cwd": str(self.cwd)}
        return {
            key: hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]
            for key, value in parts.items()
        }


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(
            f"invalid xprocess name {name!r}: use letters, digits, '_', '-' and '.', not starting with '.' or '-'"
        )
    return name


def _launch(name: str, starter: Any, control_dir: Path, process: XProcess) -> _Launch:
    """Turn a ``preparefunc(cwd)`` or a ``ProcessStarter`` into a checked :class:`_Launch`.

    :raises TypeError, ValueError, FileNotFoundError: naming the bad value; nothing was started.
    """
    where = f"xprocess {name!r}"
    if isinstance(starter, type) and issubclass(starter, ProcessStarter):
        s: Any = starter(control_dir, process)
    elif isinstance(starter, ProcessStarter):
        s = starter
    elif callable(starter):
        got = starter(control_dir)
        if not isinstance(got, tuple) or len(got) not in (2, 3):
            raise TypeError(
                f"{where}: preparefunc must return (pattern, args) or (pattern, args, env), it returned {got!r}"
            )
        s = ProcessStarter(control_dir, process)
        s.pattern, s.args, s.env = got if len(got) == 3 else (*got, None)
    else:
        raise TypeError(f"{where}: expected a ProcessStarter subclass or preparefunc, got {starter!r}")

    args = s.args
    if isinstance(args, (str, bytes)) or not isinstance(args, Sequence) or not args:
        raise TypeError(f"{where}: args must be a non-empty list of arguments, got {args!r}")
    for arg in args:
        if isinstance(arg, bool) or not isinstance(arg, (str, os.PathLike, int, float)):
            raise TypeError(f"{where}: args items must be str, path or number, got {arg!r}")
    argv = [os.fspath(a) if isinstance(a, os.PathLike) else str(a) for a in args]

    env = s.env
    if env is not None:
        if not isinstance(env, Mapping) or not all(
            isinstance(k, str) and k and "=" not in k and isinstance(v, str) for k, v in env.items()
        ):
            raise TypeError(f"{where}: env must be None or a mapping of str to str, got {env!r}")
        env = dict(env)

    kwargs = s.popen_kwargs
    if not isinstance(kwargs, Mapping):
        raise TypeError(f"{where}: popen_kwargs must be a mapping, got {kwargs!r}")
    owned = sorted(_OWNED_POPEN_KWARGS.intersection(kwargs))
    if owned:
        raise ValueError(f"{where}: popen_kwargs may not set {', '.join(owned)}: the plugin owns them")
    kwargs = dict(kwargs)
    cwd = Path(kwargs.pop("cwd", None) or control_dir)

    pattern = s.pattern
    if isinstance(pattern, str):
        try:
            pattern = re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"{where}: invalid pattern {s.pattern!r}: {exc}") from None
    elif pattern is not None and not (isinstance(pattern, re.Pattern) and isinstance(pattern.pattern, str)):
        raise TypeError(f"{where}: pattern must be a str regex or None, got {pattern!r}")
    check = getattr(s, "startup_check", None)
    if pattern is None and check is None:
        raise TypeError(f"{where}: the starter needs a pattern or a startup_check method to know when it is ready")

    timeout = s.timeout
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        raise ValueError(f"{where}: timeout must be a positive number of seconds, got {timeout!r}")
    max_lines = s.max_read_lines
    if max_lines is not None and (isinstance(max_lines, bool) or not isinstance(max_lines, int) or max_lines < 1):
        raise ValueError(f"{where}: max_read_lines must be None or a positive int, got {max_lines!r}")

    if "executable" not in kwargs:
        _check_executable(where, argv[0], cwd, env)
    return _Launch(argv, env, cwd, pattern, check, float(timeout), max_lines, kwargs, bool(s.terminate_on_interrupt))


def _check_executable(where: str, exe: str, cwd: Path, env: Mapping[str, str] | None) -> None:
    import shutil

    if os.sep in exe:
        path = cwd / exe  # an absolute exe replaces cwd
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise FileNotFoundError(f"{where}: {exe!r} is not an executable file")
    elif shutil.which(exe, path=os.pathsep.join(os.get_exec_path(env))) is None:
        raise FileNotFoundError(f"{where}: executable {exe!r} not found on PATH")


def _read_state(path: Path) -> dict[str, Any] | None:
    """The recorded state, or None (with a warning if it exists but cannot be used).

    The file holds JSON lines: the start record, then updates (readiness) appended to it. A last
    line without its newline is an append in progress, or cut short by a crash: it is ignored.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        problem = f"cannot be read ({exc})"
    else:
        try:
            state = json.loads(text.partition("\n")[0])
            for line in text.split("\n")[1:-1]:
                state.update(json.loads(line))
        except (ValueError, TypeError, AttributeError):
            problem = "is not valid JSON lines (empty, truncated or garbage)"
        else:
            version = state.get("version") if isinstance(state, dict) else None
            if isinstance(version, int) and version > STATE_VERSION:
                problem = f"was written by a newer xprocess (format {version})"
            elif (
                version == STATE_VERSION
                and isinstance(state.get("pid"), int)
                and isinstance(state.get("create_time"), (int, float))
                and isinstance(state.get("token"), str)
                and isinstance(state.get("fingerprint"), dict)
            ):
                return state  # type: ignore[no-any-return]
            else:
                problem = "does not hold a recorded process"
    warnings.warn(XProcessWarning(f"{path} {problem}; treating the process as not running"), stacklevel=3)
    return None


def _write_state(path: Path, state: dict[str, Any], append: bool = False) -> None:
    """Replace the state file atomically (readers see the old or the new one, never half), or
    append an update as one line (readers ignore it until it is whole).

    Appending keeps the ready transition cheap: replacing a file frees the old one's blocks,
    which costs a quarter of a millisecond on a disk mounted with ``discard``.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        if append:  # one write(2) of one line: whole, or (after a crash) ignored by readers
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
            try:
                os.write(fd, (json.dumps(state) + "\n").encode())
            finally:
                os.close(fd)
        else:
            tmp.write_text(json.dumps(state) + "\n", encoding="utf-8")
            os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise XProcessError(
            f"xprocess cannot write its state {path}: {exc.strerror or exc} (free some space or make it writable)"
        ) from exc


def _recorded(state: dict[str, Any]) -> tuple[psutil.Process | None, bool]:
    """The recorded process if it still runs, and whether its pid now belongs to another one."""
    import psutil

    try:
        proc = psutil.Process(state["pid"])
        same = abs(proc.create_time() - state["create_time"]) < _CLOCK_SLACK
    except psutil.Error:
        return None, False
    return (proc, False) if same else (None, True)


def _alive(proc: psutil.Process) -> bool:
    import psutil

    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _find_ours(states: Mapping[str, dict[str, Any] | None], tree: bool) -> dict[str, list[psutil.Process]]:
    """Every live process that belongs to each recorded state.

    Ours are: the recorded process, if pid and start time still match; with ``tree``, its
    descendants, the members of the session it leads (it was started in a new one) and any
    process carrying its marker in the environment (a daemon that left the session). A state
    of just ``{"token": "<project key>:<name>:"}`` finds every process of that name and
    project: what earlier starts left when their state was lost. Never this process or its
    ancestors.
    """
    import psutil

    found: dict[str, dict[int, psutil.Process]] = {name: {} for name in states}
    sessions: dict[int, str] = {}
    tokens: dict[str, str] = {}
    for name, state in states.items():
        if state is None:
            continue
        proc = _recorded(state)[0] if "pid" in state else None
        if proc is not None:
            found[name][proc.pid] = proc
            if tree:
                sessions[proc.pid] = name
                with contextlib.suppress(psutil.Error):
                    found[name].update((c.pid, c) for c in proc.children(recursive=True))
        if tree:
            tokens[state["token"]] = name
    if tokens:
        me = psutil.Process()
        exempt = {me.pid, *(p.pid for p in me.parents())}
        for proc in psutil.process_iter():
            if proc.pid in exempt:
                continue
            try:
                owner = sessions.get(os.getsid(proc.pid))
                if owner is None:
                    marker = proc.environ().get(MARKER_ENV, "")
                    owner = tokens.get(marker) or tokens.get(marker[: marker.rfind(":") + 1])
            except (OSError, psutil.Error):
                continue
            if owner is not None:
                found[owner][proc.pid] = proc
    return {name: [p for p in procs.values() if _alive(p)] for name, procs in found.items()}


def _terminate(states: Mapping[str, dict[str, Any] | None], timeout: float, tree: bool = True) -> dict[str, int]:
    """SIGTERM the processes of every recorded state at once, SIGKILL what outlives ``timeout``.

    :returns: per name 1 (terminated), 0 (nothing to do) or -1 (something survived).
    """
    import psutil

    targets = _find_ours(states, tree)
    failed: set[str] = set()
    owner = {p.pid: name for name, procs in targets.items() for p in procs}
    pending = [p for procs in targets.values() for p in procs]
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 2.0)):
        for proc in pending:
            try:
                proc.send_signal(sig)
            except psutil.NoSuchProcess:
                pass
            except psutil.Error:  # not ours to signal after all (permissions)
                failed.add(owner[proc.pid])
        pending = _wait_gone(pending, wait)
        if not pending:
            break
    failed.update(owner[p.pid] for p in pending)
    for pid in owner:  # reap the ones that are this process's children
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
    return {name: (-1 if name in failed else 1 if procs else 0) for name, procs in targets.items()}


def _wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait until no process of ``procs`` runs (zombies count as gone); return the rest."""
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        procs = [p for p in procs if _alive(p)]
        if not procs or time.monotonic() >= deadline:
            return procs
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


class XProcessInfo:
    """What is recorded about the process named ``name`` under the state directory ``path``."""

    def __init__(self, path: Path | str, name: str) -> None:
        self.name = _check_name(name)
        self.controldir = Path(path) / name
        self.logpath = self.controldir / LOG_NAME
        self.statepath = self.controldir / STATE_NAME

    @property
    def _marker(self) -> str:
        """The start of the marker of every process started under this name in this project."""
        import hashlib

        project = hashlib.sha256(os.fsencode(self.controldir.parent.resolve())).hexdigest()[:12]
        return f"{project}:{self.name}:"

    def __repr__(self) -> str:
        return f"<XProcessInfo {self.name!r} pid={self.pid}>"

    def _state(self) -> dict[str, Any] | None:
        return _read_state(self.statepath)

    @property
    def pid(self) -> int | None:
        """The recorded pid, whether or not it still runs."""
        state = self._state()
        return state["pid"] if state else None

    def isrunning(self, ignore_zombies: bool = True) -> bool:
        """Whether the recorded process is alive and is the very one recorded (not a recycled pid)."""
        state = self._state()
        proc = _recorded(state)[0] if state else None
        return proc is not None and (not ignore_zombies or _alive(proc))

    def terminate(self, *, kill_proc_tree: bool = True, timeout: float = TERMINATE_TIMEOUT) -> int:
        """Terminate the recorded process and, with ``kill_proc_tree``, everything it started.

        :returns: 1 terminated, 0 nothing to do, -1 something could not be terminated.
        """
        return _terminate({self.name: self._state()}, timeout, kill_proc_tree)[self.name]

    def kill(self) -> int:
        """The same as :meth:`terminate` (the original API's name)."""
        return self.terminate()


class _Ensured(tuple):  # type: ignore[type-arg]
    """``(pid, logpath)`` with ``.match`` and a ``.logfile`` opened on first use."""

    match: re.Match[str] | None
    _offset: int
    _xp: XProcess
    _logfile: IO[str] | None

    def __new__(cls, pid: int, logpath: Path, match: re.Match[str] | None, offset: int, xp: XProcess) -> _Ensured:
        self = super().__new__(cls, (pid, logpath))
        self.match = match
        self._offset = offset
        self._xp = xp
        self._logfile = None
        return self

    @property
    def logfile(self) -> IO[str]:
        """The log as an open text file, just past the ready line (or at its end when reused)."""
        if self._logfile is None:
            self._logfile = self._xp._open_log(self[1], self._offset)
        return self._logfile


class XProcess:
    """Starts, reuses and stops the processes recorded under ``<rootdir>/.xprocess``."""

    def __init__(self, config: pytest.Config | None, rootdir: Path | str) -> None:
        self.config = config
        self.rootdir = Path(rootdir)
        self.statedir = self.rootdir / STATE_DIR
        self._session = ""  # id shared by the xdist controller and its workers; "" records nothing
        self._children: list[subprocess.Popen[bytes]] = []
        self._logfiles: list[IO[str]] = []
        self._used: dict[str, list[Any]] = {}  # name -> [logpath, log offset at the current test's start]
        self._waker: _Waker | None = None

    def __enter__(self) -> XProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def getinfo(self, name: str) -> XProcessInfo:
        """The :class:`XProcessInfo` of ``name``; creates nothing on disk."""
        return XProcessInfo(self.statedir, name)

    def ensure(self, name: str, starter: Any, restart: bool = False, persist_logs: bool = True) -> _Ensured:
        """Return ``(pid, logpath)`` of the running, ready process ``name``, starting it if needed.

        :param starter: a ``ProcessStarter`` subclass, or ``preparefunc(cwd)`` returning
            ``(pattern, args)`` or ``(pattern, args, env)``.
        :param restart: terminate and start it even if it runs.
        :param persist_logs: keep the logs of earlier starts (the last :data:`KEPT_LOGS`).
        :raises XProcessError: it exited, timed out or missed its pattern; the message says which.
        """
        info = self.getinfo(name)
        created = self._make_dirs(info)
        try:
            launch = _launch(name, starter, info.controldir, self)
        except Exception:
            for path in reversed(created):  # bad input changes nothing
                with contextlib.suppress(OSError):
                    path.rmdir() if path.is_dir() else path.unlink()
            raise
        deadline = time.monotonic() + launch.timeout
        # Under the lock, a caller that finds another session starting the process waits for it.
        with _locked(info.controldir / LOCK_NAME, deadline, name):
            state = info._state()
            if not restart:
                found = self._reuse(info, launch, state)
                if found is not None:
                    return found
            why = _why_start(state, launch, restart)
            if why:
                log.warning("xprocess %r %s", name, why)
            # Nothing recorded (first start, or its state was deleted): end what earlier starts
            # may have left running, found by their marker, before it holds the port twice.
            if _terminate({name: state or {"token": info._marker}}, TERMINATE_TIMEOUT)[name] and not why:
                log.warning("xprocess %r: ended processes left by a start whose state was lost", name)
            return self._start(info, launch, persist_logs, deadline, why)

    def _make_dirs(self, info: XProcessInfo) -> list[Path]:
        """Create the state and control directories as needed; return what was created."""
        created = []
        try:
            if not self.statedir.is_dir():
                self.statedir.mkdir(parents=True, exist_ok=True)
                created.append(self.statedir)
                (self.statedir / ".gitignore").write_text("*\n")
                created.append(self.statedir / ".gitignore")
            if not info.controldir.is_dir():
                info.controldir.mkdir(exist_ok=True)
                created.append(info.controldir)
            return created
        except OSError as exc:
            raise XProcessError(
                f"xprocess cannot create {exc.filename or info.controldir}: {exc.strerror or exc} "
                "(free some space or make it writable)"
            ) from exc

    def _reuse(self, info: XProcessInfo, launch: _Launch, state: dict[str, Any] | None) -> _Ensured | None:
        """The running process if it is the recorded one, became ready and has this configuration."""
        if not state or not state.get("ready") or state["fingerprint"] != launch.fingerprint():
            return None
        proc, _ = _recorded(state)
        if proc is None or not _alive(proc):
            return None
        line = state.get("match")
        match = launch.pattern.search(line) if launch.pattern and isinstance(line, str) else None
        try:
            size = info.logpath.stat().st_size
        except OSError:
            size = 0
        self._note_use(info, "reused", launch, offset=size)
        return _Ensured(proc.pid, info.logpath, match, size, self)

    def _start(self, info: XProcessInfo, launch: _Launch, persist_logs: bool, deadline: float, why: str) -> _Ensured:
        import subprocess
        import uuid

        import psutil

        _rotate_logs(info.logpath, KEPT_LOGS if persist_logs else 0)
        token = info._marker + uuid.uuid4().hex
        env = dict(os.environ if launch.env is None else launch.env)
        if launch.env is None:
            env.setdefault("PYTHONUNBUFFERED", "1")  # the commonest "it hangs": a Python child buffering
        env[MARKER_ENV] = token
        started = time.monotonic()
        if self._waker is None:
            self._waker = _Waker()
        events = self._waker
        logfile = open(info.logpath, "wb")  # noqa: SIM115 - it must exist before it can be watched
        with events.watching(info.logpath):
            with logfile:
                popen = subprocess.Popen(
                    launch.args,
                    cwd=launch.cwd,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=logfile,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # a Ctrl-C in the terminal does not reach it
                    **launch.popen_kwargs,
                )
            self._children.append(popen)
            events.watch_exit(popen.pid)
            log.debug("started %r pid %d: %s", info.name, popen.pid, launch.args)
            state: dict[str, Any] = {
                "version": STATE_VERSION,
                "pid": popen.pid,
                "create_time": psutil.Process(popen.pid).create_time(),
                "token": token,
                "fingerprint": launch.fingerprint(),
                "args": launch.args,
                "ready": False,
                "started": time.time(),
            }
            try:
                _write_state(info.statepath, state)
                match, offset = _wait_ready(info, launch, popen.pid, events, started, deadline)
                _write_state(info.statepath, {"ready": True, "match": match.string if match else None}, append=True)
            except BaseException:
                if info.statepath.exists():
                    info.terminate(timeout=2.0)
                else:  # the state never got written: the child is all we know of
                    popen.kill()
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        popen.wait(5)  # reaped now, not left a zombie until the session ends
                popen.poll()
                raise
        self._note_use(info, why or "started", launch, offset=0, seconds=time.monotonic() - started)
        return _Ensured(popen.pid, info.logpath, match, offset, self)

    def _note_use(self, info: XProcessInfo, event: str, launch: _Launch, offset: int, seconds: float = 0.0) -> None:
        """Remember that this session uses ``info``: for reports, the summary and stopping at the end."""
        if info.name in self._used:
            return
        self._used[info.name] = [info.logpath, offset]
        if event != "reused":
            log.info("xprocess %r %s in %.2f s", info.name, event, seconds)
        if self._session:
            record = {
                "name": info.name,
                "event": event,
                "seconds": round(seconds, 3),
                "terminate_on_interrupt": launch.terminate_on_interrupt,
            }
            with contextlib.suppress(OSError), open(self._session_path(), "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")  # one short append: whole lines even from many workers

    def _session_path(self) -> Path:
        return self.statedir / f".session-{self._session}.jsonl"

    def _session_uses(self) -> dict[str, dict[str, Any]]:
        """What every process of this session (xdist workers included) did, per name."""
        uses: dict[str, dict[str, Any]] = {}
        try:
            lines = self._session_path().read_text(encoding="utf-8").splitlines()
        except OSError:
            return uses
        for line in lines:
            with contextlib.suppress(ValueError, KeyError, TypeError, AttributeError):
                record = json.loads(line)
                use = uses.setdefault(record["name"], {})
                if "terminated" in record:
                    use["terminated"] = record["terminated"]
                elif use.get("event", "reused") == "reused":  # a start outranks other workers' reuses
                    use.update(record)
        return uses

    def _open_log(self, path: Path, offset: int) -> IO[str]:
        import io

        raw = open(path, "rb")  # noqa: SIM115 - closed by close()
        raw.seek(offset)
        text = io.TextIOWrapper(raw, encoding="utf-8", errors="replace")
        self._logfiles.append(text)
        return text

    def _infos(self, names: Sequence[str]) -> list[XProcessInfo]:
        """The recorded processes (those named, or all); unknown names raise ``LookupError``."""
        if names:
            infos = [self.getinfo(name) for name in names]
            unknown = [i.name for i in infos if not i.controldir.is_dir()]
            if unknown:
                raise LookupError(f"no process recorded as {', '.join(map(repr, unknown))} in {self.statedir}")
            return infos
        with contextlib.suppress(OSError):
            return [
                self.getinfo(p.name) for p in sorted(self.statedir.iterdir()) if _NAME_RE.match(p.name) and p.is_dir()
            ]
        return []

    def _mark_test_start(self) -> None:
        for entry in self._used.values():
            with contextlib.suppress(OSError):
                entry[1] = entry[0].stat().st_size

    def _report_sections(self) -> Iterator[tuple[str, str]]:
        """The log lines each process wrote since the current test started (the last ones)."""
        for name, (path, offset) in self._used.items():
            try:
                with open(path, "rb") as f:
                    start = max(offset, f.seek(0, os.SEEK_END) - _REPORT_BYTES)
                    f.seek(start)
                    data = f.read()
            except OSError:
                continue
            lines = data.decode("utf-8", "replace").splitlines()[-_REPORT_LINES:]
            if lines:
                yield f"xprocess {name} log", "\n".join(lines)

    def close(self) -> None:
        """Close the log files handed out; leave the processes running for the next run."""
        for f in self._logfiles:
            f.close()
        self._logfiles.clear()
        for popen in self._children:
            if popen.poll() is None:
                # It is meant to outlive this session: a returncode stops subprocess from
                # warning, when the Popen object is collected, that it "is still running".
                popen.returncode = 0
        self._children.clear()
        if self._waker is not None:
            self._waker.close()
            self._waker = None


def _why_start(state: dict[str, Any] | None, launch: _Launch, restart: bool) -> str:
    """Why a recorded process is started again ("" when nothing was recorded)."""
    if state is None:
        return ""
    if restart:
        return "restarted: restart=True"
    if not state.get("ready"):
        return "restarted: it never became ready"
    proc, stranger = _recorded(state)
    if stranger:
        return f"restarted: its pid {state['pid']} now belongs to another process"
    if proc is None or not _alive(proc):
        return "restarted: it had stopped"
    changed = [k for k, v in launch.fingerprint().items() if state["fingerprint"].get(k) != v]
    return f"restarted: its configuration changed ({', '.join(changed)})"


@contextlib.contextmanager
def _locked(path: Path, deadline: float, name: str) -> Iterator[None]:
    """Hold the per-name lock so that concurrent sessions start a process once.

    The OS releases it when its holder dies, so a crashed session never blocks the next.
    """
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        delay = 0.001
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise StartupTimeoutError(
                        f"xprocess {name!r}: another session held {path} (starting it) until the timeout",
                        name=name,
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.05)
        yield
    finally:
        os.close(fd)  # releases the lock


def _rotate_logs(logpath: Path, keep: int) -> None:
    """Shift the current log to ``.1``, ``.1`` to ``.2``, ... the oldest past ``keep`` drops out."""
    if not keep:
        for old in [logpath, *logpath.parent.glob(f"{logpath.name}.*")]:
            with contextlib.suppress(FileNotFoundError):
                old.unlink()
        return
    names = [logpath, *(logpath.with_name(f"{logpath.name}.{i}") for i in range(1, keep + 1))]
    for older, newer in reversed(list(zip(names, names[1:]))):
        with contextlib.suppress(FileNotFoundError):
            os.replace(older, newer)


class _Waker:
    """Wakes the wait loop when a log grows (inotify) or a child exits (pidfd), both on Linux;
    elsewhere waits are cut to short sleeps.

    One per session: closing an inotify instance waits for an RCU grace period (up to ~16 ms
    seen here), so it lives until the session ends, while watches come and go cheaply.
    """

    def __init__(self) -> None:
        import select

        self._poll = select.poll()
        self._inotify: int | None = None
        self._watch: int | None = None
        self._pidfd: int | None = None
        if sys.platform.startswith("linux"):
            import ctypes

            with contextlib.suppress(OSError, AttributeError):
                self._libc = ctypes.CDLL(None, use_errno=True)
                fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
                if fd >= 0:
                    self._inotify = fd
                    self._poll.register(fd, select.POLLIN)

    @contextlib.contextmanager
    def watching(self, logpath: Path) -> Iterator[None]:
        """Watch ``logpath`` (before the child can write to it) and, once known, the child."""
        if self._inotify is not None:
            wd = self._libc.inotify_add_watch(self._inotify, os.fsencode(logpath), 0x2)  # IN_MODIFY
            self._watch = wd if wd >= 0 else None
            self._drain()  # events of earlier watches would only wake us for nothing
        try:
            yield
        finally:
            if self._watch is not None:
                self._libc.inotify_rm_watch(self._inotify, self._watch)
                self._watch = None
            if self._pidfd is not None:
                self._poll.unregister(self._pidfd)
                os.close(self._pidfd)
                self._pidfd = None

    def watch_exit(self, pid: int) -> None:
        import select

        with contextlib.suppress(AttributeError, OSError):
            self._pidfd = os.pidfd_open(pid)  # type: ignore[attr-defined,unused-ignore]
            self._poll.register(self._pidfd, select.POLLIN)

    def wait(self, timeout: float) -> None:
        if self._watch is None or self._pidfd is None:  # a write or an exit would go unnoticed
            timeout = min(timeout, _POLL)
        for fd, _ in self._poll.poll(max(0.0, timeout) * 1000 + 0.5):
            if fd == self._inotify:
                self._drain()

    def _drain(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._inotify, 65536):  # type: ignore[arg-type]
                pass

    def close(self) -> None:
        if self._inotify is not None:
            os.close(self._inotify)
            self._inotify = None


class _LogReader:
    """Yields each complete line appended to a log, decoded, with its end offset.

    Lines end at ``\\n``, ``\\r\\n`` or ``\\r`` and are yielded ending in ``\\n``; a line longer
    than :data:`_MAX_LINE` bytes is cut to that length, so memory stays bounded.
    """

    def __init__(self, path: Path) -> None:
        self._file = open(path, "rb")  # noqa: SIM115 - closed by close()
        self._buf = b""  # the incomplete last line
        self._dropped = 0  # bytes cut from the incomplete last line
        self.offset = 0  # end of the last complete line
        self.last_data = time.monotonic()
        self.partial_checked = True

    def lines(self) -> Iterator[tuple[str, int]]:
        while True:
            data = self._file.read(_CHUNK)
            if not data:
                return
            self.last_data = time.monotonic()
            self.partial_checked = False
            if self._dropped:  # inside an overlong line: skip to its end
                ends = [i for i in (data.find(b"\n"), data.find(b"\r")) if i >= 0]
                if not ends:
                    self._dropped += len(data)
                    continue
                self._dropped += min(ends)
                data = data[min(ends) :]
            parts = (self._buf + data).splitlines(keepends=True)
            # the last part is incomplete without a newline; a "\r" may be half of "\r\n"
            self._buf = parts.pop() if parts and not parts[-1].endswith(b"\n") else b""
            for raw in parts:
                self.offset += len(raw) + self._dropped
                self._dropped = 0
                yield raw.rstrip(b"\r\n").decode("utf-8", "replace") + "\n", self.offset
            if len(self._buf) > _MAX_LINE:
                self._dropped += len(self._buf) - _MAX_LINE
                self._buf = self._buf[:_MAX_LINE]

    def partial(self) -> tuple[str, int]:
        """The incomplete last line, as text, and the offset of its end."""
        self.partial_checked = True
        end = self.offset + self._dropped + len(self._buf)
        if self._buf.endswith(b"\r"):  # no "\n" came to make it "\r\n": a whole line after all
            return self._buf[:-1].decode("utf-8", "replace") + "\n", end
        return self._buf.decode("utf-8", "replace"), end

    def close(self) -> None:
        self._file.close()


def _exit_status(pid: int) -> int | None:
    """The child's exit code (negative: the signal that killed it), or None while it runs.

    The child is not reaped, so its pid (and the session it leads) stays ours until terminated.
    """
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return 0  # already reaped elsewhere
    if info is None:
        return None
    return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status


def _wait_ready(
    info: XProcessInfo, launch: _Launch, pid: int, events: _Waker, started: float, deadline: float
) -> tuple[re.Match[str] | None, int]:
    """Wait until the new process is ready: its pattern in a whole line and its check true.

    :returns: the match (None without a pattern) and the log offset just past its line.
    :raises XProcessError: exit, timeout or max_read_lines, after which the caller terminates it.
    """
    reader = _LogReader(info.logpath)
    match = None
    seen = end = 0
    checked = launch.check is None
    delay, next_check = 0.01, 0.0

    def failure(cls: type[XProcessError], reason: str, exitcode: int | None = None) -> XProcessError:
        return _failure(cls, info, launch, reason, exitcode, time.monotonic() - started)

    try:
        while True:
            exitcode = _exit_status(pid)  # before reading: nothing written before the exit is missed
            wait = deadline - time.monotonic()
            if launch.pattern is not None and match is None:
                for line, line_end in reader.lines():
                    match = launch.pattern.search(line)
                    if match:
                        end = line_end
                        break
                    if launch.max_read_lines and line.strip():
                        seen += 1
                        if seen >= launch.max_read_lines:
                            raise failure(XProcessError, f"its pattern was not in its first {seen} lines")
                if match is None and not reader.partial_checked:
                    idle = time.monotonic() - reader.last_data
                    if idle >= _PAUSE or exitcode is not None:
                        line, end = reader.partial()
                        match = launch.pattern.search(line)
                    else:
                        wait = min(wait, _PAUSE - idle)
            if (match or launch.pattern is None) and not checked:
                now = time.monotonic()
                if now >= next_check:
                    try:
                        checked = bool(launch.check())  # type: ignore[misc]
                    except OSError:  # typically "connection refused": not yet
                        checked = False
                    delay, next_check = min(delay * 1.5, 0.5), now + delay
                wait = min(wait, next_check - time.monotonic())
            if checked and (match or launch.pattern is None):
                if launch.pattern is None:
                    end = info.logpath.stat().st_size
                return match, end
            if exitcode is not None:
                raise failure(ProcessExitedError, f"exited with code {exitcode} before it was ready", exitcode)
            if time.monotonic() >= deadline:
                raise failure(StartupTimeoutError, f"was not ready after its timeout of {launch.timeout:g} s")
            events.wait(wait)
    finally:
        reader.close()


def _failure(
    cls: type[XProcessError],
    info: XProcessInfo,
    launch: _Launch,
    reason: str,
    exitcode: int | None,
    waited: float,
) -> XProcessError:
    """An error that says what happened and quotes the end of the log."""
    pattern = launch.pattern.pattern if launch.pattern else None
    lines = [
        f"xprocess {info.name!r} {reason}",
        f"  command: {' '.join(launch.args)}",
        f"  pattern: {pattern!r}" + ("  (and startup_check)" if launch.check else ""),
        f"  waited:  {waited:.2f} s",
        f"  log:     {info.logpath}",
    ]
    tail = _log_tail(info.logpath, _TAIL_LINES)
    if tail:
        lines.append(f"  last {len(tail)} lines of the log:")
        lines.extend("    " + line for line in tail)
    else:
        lines.append(
            "  the log is empty: if the process does print its ready line, it may be buffering its "
            "output (Python: PYTHONUNBUFFERED=1 or print(..., flush=True); C programs: stdbuf -oL)"
        )
    return cls("\n".join(lines), name=info.name, exitcode=exitcode, logpath=info.logpath)


def _log_tail(path: Path, count: int) -> list[str]:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 16 * 1024))
            data = f.read()
    except OSError:
        return []
    return [line[:500] for line in data.decode("utf-8", "replace").splitlines()[-count:]]


# --- pytest glue ---


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("xprocess", "managing external processes across test runs")
    group.addoption(
        "--xshow", nargs="*", metavar="NAME", help="show the recorded processes (all, or those named) and exit"
    )
    group.addoption(
        "--xkill", nargs="*", metavar="NAME", help="terminate the recorded processes (all, or those named) and exit"
    )
    group.addoption("--xstop", action="store_true", dest="xprocess_stop", default=None, help=_STOP_HELP)
    group.addoption(
        "--no-xstop", action="store_false", dest="xprocess_stop", help="keep the processes running (the default)"
    )
    parser.addini("xprocess_stop", _STOP_HELP, type="bool", default=False)


def _stop_at_end(config: pytest.Config) -> bool:
    """The stop switch: command line, then the environment, then the ini file."""
    option = config.getoption("xprocess_stop")
    if option is not None:
        return bool(option)
    value = os.environ.get(STOP_ENV, "").strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    if value:
        raise pytest.UsageError(f"{STOP_ENV}={os.environ[STOP_ENV]!r}: use 1/0, true/false, yes/no or on/off")
    return bool(config.getini("xprocess_stop"))


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> int | None:
    show, kill = config.option.xshow, config.option.xkill
    if show is None and kill is None:
        return None
    xp = XProcess(config, config.rootpath)
    try:
        infos = xp._infos(kill if kill is not None else show)
    except (ValueError, LookupError) as exc:
        print(f"xprocess: {exc}", file=sys.stderr)
        return pytest.ExitCode.USAGE_ERROR
    if not infos:
        print(f"no processes recorded in {xp.statedir}")
    if kill is not None:
        # unreadable state: what the name left running is still found by its marker
        states = {info.name: info._state() or {"token": info._marker} for info in infos}
        results = _terminate(states, TERMINATE_TIMEOUT)
        words = {1: "TERMINATED", 0: "NO PROCESS FOUND", -1: "FAILED TO TERMINATE"}
        for name, state in states.items():
            print(f"{state.get('pid', '-')} {name} {words[results[name]]}")
        return 1 if -1 in results.values() else 0
    for info in infos:
        print(_show_line(info))
    return 0


def _show_line(info: XProcessInfo) -> str:
    state = info._state()
    if state is None:
        return f"- {info.name} DEAD {info.logpath}"
    proc, _ = _recorded(state)
    running = proc is not None and _alive(proc)
    line = f"{state['pid']} {info.name} {'LIVE' if running else 'DEAD'} {info.logpath}"
    if running and proc is not None:
        up = int(time.time() - proc.create_time())
        line += f" up {up // 3600}h{up // 60 % 60:02d}m{up % 60:02d}s"
    if isinstance(state.get("args"), list):
        line += " $ " + " ".join(map(str, state["args"]))[:200]
    return line


def pytest_configure(config: pytest.Config) -> None:
    import uuid

    xp = XProcess(config, config.rootpath)
    workerinput = getattr(config, "workerinput", None)
    xp._session = workerinput.get("xprocess_session", "") if workerinput else uuid.uuid4().hex
    config.stash[_XPROCESS_KEY] = xp
    if workerinput is None:
        _stop_at_end(config)  # a bad XPROCESS_STOP is a usage error now, not at the end


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """pytest-xdist: workers record their uses under the controller's session id."""
    node.workerinput["xprocess_session"] = node.config.stash[_XPROCESS_KEY]._session


@pytest.fixture(scope="session")
def xprocess(pytestconfig: pytest.Config) -> Iterator[XProcess]:
    """Starts or reuses the external processes the tests need (see ``XProcess.ensure``)."""
    xp = pytestconfig.stash[_XPROCESS_KEY]
    yield xp
    xp.close()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    item.config.stash[_XPROCESS_KEY]._mark_test_start()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome: Any = yield
    report = outcome.get_result()
    if report.failed:
        report.sections.extend(item.config.stash[_XPROCESS_KEY]._report_sections())


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    xp = config.stash.get(_XPROCESS_KEY, None)
    if xp is None or not xp._session:
        return
    worker = hasattr(config, "workerinput")
    uses = xp._session_uses()
    if not worker and _stop_at_end(config):  # only the controller: workers may still share them
        wanted = list(uses)
    elif exitstatus in (pytest.ExitCode.INTERRUPTED, pytest.ExitCode.INTERNAL_ERROR):
        wanted = [name for name, use in uses.items() if use.get("terminate_on_interrupt")]
    else:
        return
    if not wanted:
        return
    results = _terminate({n: xp.getinfo(n)._state() for n in wanted}, TERMINATE_TIMEOUT)
    if not worker:
        with contextlib.suppress(OSError), open(xp._session_path(), "a", encoding="utf-8") as f:
            for name, result in results.items():
                f.write(json.dumps({"name": name, "terminated": result}) + "\n")


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    xp = config.stash.get(_XPROCESS_KEY, None)
    if xp is None or not xp._session or hasattr(config, "workerinput"):
        return
    uses = xp._session_uses()
    if not uses:
        return
    terminalreporter.section("xprocess")
    for name, use in sorted(uses.items()):
        event = use.get("event", "reused")
        if event == "reused":
            line = f"{name}: reused"
        else:
            head, _, why = event.partition(": ")
            line = f"{name}: {head} in {use['seconds']:.2f} s" + (f" ({why})" if why else "")
        done = use.get("terminated")
        if done is not None:
            line += {1: ", terminated at end", 0: ", already gone at end", -1: ", FAILED to terminate at end"}[done]
        terminalreporter.write_line(line)


def pytest_unconfigure(config: pytest.Config) -> None:
    xp = config.stash.get(_XPROCESS_KEY, None)
    if xp is None:
        return
    xp.close()
    if xp._session and not hasattr(config, "workerinput"):
        with contextlib.suppress(OSError):
            xp._session_path().unlink()
