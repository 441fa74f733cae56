"""xprocess: start the long-running processes a test suite needs once, and reuse them across runs.

In a conftest fixture: ``pid, logpath = xprocess.ensure("myserver", MyStarter)``.

PYTEST_DONT_REWRITE: there are no asserts here, so pytest skips its assertion pass when it compiles
this module (it loads the cached code either way).
"""

# Sections, in the order the data flows:
#   1 constants, exceptions, the deadline   5 the record: state.jsonl     9 XProcessInfo, _Ensured
#   2 the starter, read once into a _Spec   6 the process table           10 the session
#   3 files under .xprocess                 7 ownership                   11 XProcess
#   4 spawning and waiting for readiness    8 stopping and leases         12 the pytest glue
# Words: a *marker* is XPROCESS_ID=<marker prefix>:<start id> in the environment of what was
# spawned (the state's "token"); a process's *start* is the kernel's start time (with the pid, it
# names one process); ``spawned_at`` (the state's "started") is the wall-clock time of the spawn;
# a *lease* is a shared lock a session holds on the log of a process it uses.

from __future__ import annotations

import contextlib
import errno
import functools
import inspect
import io
import itertools
import json
import logging
import operator
import os
import re
import select
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import urllib.parse
import warnings
from pathlib import Path
from types import MappingProxyType, SimpleNamespace
from typing import IO, Any, Callable, Collection, Iterable, Iterator, Mapping, Sequence

try:  # imported here, not when first needed: at the descriptor limit that import fails (3.9: a .so)
    import fcntl
except ImportError:  # Windows: the plugin loads, and ensure() says it is not supported
    fcntl = None  # type: ignore[assignment]

import pytest

# pytest 7.0 to 9.2 load the modules above before any plugin. Imported where they are used:
# psutil (about 12 ms: the process table off Linux, the port-holder hint), hashlib (pytest 7 does
# not load it), ctypes (inotify, prctl), http.client and ssl (the HTTP probe), pwd (a message),
# fcntl (not on Windows, where the plugin loads but refuses to start).

__all__ = ["ProcessStarter", "XProcess", "XProcessInfo", "XProcessError", "ProcessExitedError"]
__all__ += ["StartupTimeoutError", "XProcessWarning"]


# pytest and pluggy examine every name a plugin module lists at each start-up (a third of this
# plugin's start-up cost went there): the private helpers are not listed.
def __dir__() -> list[str]:
    return [*__all__, "xprocess", *(name for name in globals() if name.startswith("pytest_"))]


# --- 1. constants, exceptions, the deadline ---
# The files' names and limits, the closed sets of words (record kinds, reasons, stop policies),
# the exceptions, and two primitives every section uses: one deadline per call, escaped text.

STATE_DIR = ".xprocess"
LOG_NAME = "xprocess.log"
STATE_NAME = "state.jsonl"
LOCK_NAME = "lock"
PORT_NAME = "port"  # the port a starter read, kept for the next start
DIGESTS_NAME = "config-digests"  # the digests of config_files' directories and patterns, by their files' stats
KEPT_LOGS = 5  # logs of earlier starts kept beside the current one (xprocess.log.1 is the newest)
TERMINATE_TIMEOUT = 10.0  # seconds between SIGTERM and SIGKILL
STATE_VERSION = 3  # 3: the log file (device, inode) is recorded: the proof of ownership
MARKER_ENV = "XPROCESS_ID"  # "<marker prefix>:<start id>" in every started process and its descendants
STOP_ENV = "XPROCESS_STOP"

_TAIL_LINES, _TAIL_BYTES, _TAIL_WIDTH = 20, 16 * 1024, 500  # the log's end quoted in an error
_REPORT_LINES, _REPORT_BYTES = 50, 64 * 1024  # log lines added to a failed test's report
_CHUNK = 256 * 1024  # log bytes read at a time
_MAX_LINE = 1024 * 1024  # longer lines are cut to this many bytes before matching
_KILL_WAIT = 2.0  # after SIGKILL, how long to wait for the end
_ZOMBIE_WAIT = 0.2  # after terminating, how long to wait for zombies that are not ours to reap
_MEMBERS_WAIT = 30.0  # after a session died, how long its watchdog waits for its xdist workers to end
_IDLE_LOOK = 5.0  # how long at most the idle keeper goes without looking at a process
_IDLE_LOCK = ".idle-keeper.lock"  # held by the project's idle keeper while it runs
_IDLE_LOG = ".idle-keeper.log"  # its stderr: its warnings and errors
_PROBE_TIMEOUT = 1.0  # connect/read timeout of listening() and http_ok()
_REUSE_CHECK_TIMEOUT = 5.0  # startup_check before a reuse: longer counts as failed
_SLOW_STOP = 1.0  # a stop before a start, or a starter's own work (initdb), this long is named in the summary
_PROBED = 64  # pids handed out since a mark, up to which each is probed rather than /proc listed
_PAUSE = 0.1  # a last line without its newline is matched once output paused this long
_POLL = 0.01  # wake-up interval where the OS gives no event for a log write or a child's exit
# A state file is a few hundred bytes, but its ready line may be _MAX_LINE bytes, each one up to
# six characters as JSON ("\u0001"), and its args as long as the kernel takes: more is garbage.
_MAX_STATE = 32 * 1024 * 1024
_MAX_CONFIG = 16 * 1024 * 1024  # a config file is read whole for its digest: a bigger one is no config
_MAX_TREE = 100_000  # entries a config_files directory or pattern may walk: more is the wrong directory
# A file changed this recently may change again within its timestamp's tick, with the same stat:
# its stat vouches for nothing yet, so it is hashed again next time (git's "racily clean").
_RACY_NS = 2 * 10**9
# Never walked for config_files: Python writes __pycache__ as the app runs (a restart each run).
_SKIPPED_DIRS = frozenset({"__pycache__", STATE_DIR})
_GLOB_MAGIC = re.compile(r"[*?[]")
_INFINITE = (float("inf"), float("-inf"))
_TOKEN_RE = re.compile(r"[0-9a-f]{16}:[0-9a-f]{16}\Z")  # a marker: its prefix (project and name), start id
_MARKER_BYTES = MARKER_ENV.encode() + b"="
_PROC_FS = sys.platform.startswith("linux") and os.path.isdir("/proc/self")
# How every file under .xprocess is opened (0 where the OS lacks a flag: Windows, which is refused).
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_SAFE_OPEN = _NOFOLLOW | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
_PR_SET_CHILD_SUBREAPER, _PR_GET_CHILD_SUBREAPER = 36, 37  # prctl(2)
_IN_MODIFY = 0x2  # inotify(7)
# Popen arguments the plugin must own: the log redirection, no shell, its own session, the env.
_OWNED_POPEN_KWARGS = frozenset({"args", "stdout", "stderr", "shell", "env", "start_new_session", "process_group"})

# The kinds of record a session keeps of each name it uses (§10).
_REUSED, _STARTING, _STARTED, _RESTARTED = "reused", "starting", "started", "restarted"
_FAILED, _INTERRUPTED, _DIED, _TERMINATED = "failed", "interrupted", "died", "terminated"
_STOPPED_BY = "stopped by"  # another session or command stopped it on purpose, during a test of this one
_MEMBER = "member"  # an xdist worker of a session in stop mode: its leases are the session's own
# Why a recorded process is not ours (any more): what _owned answers besides the process.
_NOTHING = "nothing was recorded"
_STOPPED = "it had stopped"
_RECYCLED = "its pid {pid} now belongs to another process"
_COPIED = "its state was recorded by another project directory (a copy?): its process is not this project's"
_FOREIGN = "its state names pid {pid}, which is not ours (it does not write to the log recorded for it)"
# Why a running process is started again.
_RESTART_ASKED = "restart=True"
_NEVER_READY = "it never became ready"
_LOST_LEFT = "its record was gone: what it left running was found and stopped"
_SIGSTOPPED = "it was stopped (SIGSTOP), so it answers nothing"
_CHECK_FAILED = "its startup_check failed on reuse"
# How far a stop may go (§8), and the result of one that spared a process another session holds.
_FOR_START, _AT_SESSION_END, _FOR_XKILL = "for a start", "at session end", "for --xkill"
_AFTER_DEATH, _WHEN_IDLE = "after its session died", "when idle"
_IN_USE = "in use"

_STOP_HELP = (
    "terminate, at the end of the session, every process the session started or reused "
    f"(default: keep them running for the next run; env {STOP_ENV}, ini xprocess_stop)"
)
_IDLE_HELP = (
    "seconds after which a process no session holds is stopped, for starters that set no "
    "idle_timeout of their own (default: none)"
)
_XPROCESS_KEY = pytest.StashKey["XProcess"]()
_logger = logging.getLogger("xprocess")


class XProcessError(RuntimeError):
    """A process could not be started or made ready; the message says why and quotes its log.
    ``reason`` is the summary's words for it ("exited with code 1 before it was ready")."""

    def __init__(
        self, message: str, *, name: str | None = None, exitcode: int | None = None, logpath: Path | None = None,
        reason: str = "",
    ) -> None:  # fmt: skip
        super().__init__(message)
        self.name, self.exitcode, self.logpath, self.reason = name, exitcode, logpath, reason


class ProcessExitedError(XProcessError):
    """The process exited before it was ready."""


class StartupTimeoutError(XProcessError, TimeoutError):
    """The process did not become ready within the starter's timeout."""


class XProcessWarning(UserWarning):
    """Recorded state could not be read: the process counts as not running and the run goes on."""


class _Scarce(XProcessError):
    """This process ran out of descriptors (or memory): what it tried to read is unknown, not gone."""


def _scarce(exc: OSError) -> _Scarce | None:
    """``_Scarce`` for an error of this process's own limits, else None: read as "no such process",
    "bad state" or "no lease", it would have a server restarted or stopped under another session."""
    if exc.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOMEM):
        return None
    return _Scarce(
        f"xprocess: {exc.strerror}{f' ({exc.filename})' if exc.filename else ''}: this pytest ran out of file "
        "descriptors (or memory), and what xprocess could not read it does not guess. Close the files and "
        "sockets the tests leave open, or raise the limit (ulimit -n)"
    )


def _raise_if_scarce(exc: OSError) -> None:
    scarce = _scarce(exc)
    if scarce is not None:
        raise scarce from exc


class _InUse(Exception):
    """Another session holds the process, or is starting it (``holders``): not to be stopped now."""

    def __init__(self, holders: str) -> None:
        super().__init__(holders)
        self.holders = holders


class _Deadline:
    """One end time for a whole call, threaded through each of its waits."""

    __slots__ = ("at", "began")

    def __init__(self, seconds: float) -> None:
        if seconds != seconds:  # NaN: no time is ever past it
            raise ValueError("xprocess: a timeout of NaN seconds never ends; give a number")
        self.began = time.monotonic()
        self.at = self.began + seconds

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def expired(self) -> bool:
        return time.monotonic() >= self.at

    def elapsed(self) -> float:
        return time.monotonic() - self.began

    def sleep(self, delay: float) -> float:
        """Sleep ``delay`` seconds, never past the end; return the next delay (doubled, up to 50 ms)."""
        time.sleep(max(0.0, min(delay, self.remaining())))
        return min(delay * 2, 0.05)


_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _escape(text: str) -> str:
    """``text`` with control characters escaped: what other processes wrote never reaches a terminal raw."""
    return _CONTROL_RE.sub(lambda m: repr(m.group())[1:-1], text)


def _digest(value: object) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(value, sort_keys=True, default=_stable_repr).encode()).hexdigest()[:16]


# --- 2. the starter, read once into a _Spec ---
# Whatever the user passed (a ProcessStarter, a preparefunc) checked under the name's lock, before
# anything is stopped or spawned, with errors in the user's terms. Forward references: the kept
# port's file (§3), and required or port-keeping processes looked up through §7's _Recorded.


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
    check_on_reuse: bool = True  # run startup_check once before a running process is reused
    config_files: Sequence[str | os.PathLike[str]] = ()  # files, directories, glob patterns: part of the configuration
    requires: Sequence[str] = ()  # names of processes that must run first; a restart of one restarts this
    idle_timeout: float | None = None  # stop it once no session held it this long (None here: the ini's)

    def __init__(self, control_dir: Path, process: XProcess) -> None:
        self.control_dir = control_dir
        self.process = process

    @property
    def port(self) -> int:
        """A TCP port on 127.0.0.1 for the process: chosen on the first read, free then, and kept
        in the control directory, so a reused process is found where it listens and the
        configuration stays the same. A new start keeps it while it is free, else picks another."""
        port = self.__dict__.get("_port")
        if port is None:
            port = self.__dict__["_port"] = _choose_port(self.control_dir, self.process)
        return port

    # pytest-xprocess 1.x's wait, in the steps its starters override: a starter that overrides
    # one is waited for through them (``_wait_steps``), one that overrides none by ``_wait_ready``.
    # While a start waits, ``_waiting`` holds its child, wake-ups and deadline, and ``_max_time``
    # (what 1.x's own steps read) its deadline.
    _waiting: tuple[subprocess.Popen[bytes], _Wakeups, _Deadline] | None = None

    def wait(self, log_file: IO[str]) -> bool:
        """Whether the process became ready: its pattern is in the log (``wait_pattern``), then
        ``startup_check`` passes (``wait_callback``); False with neither."""
        check = getattr(self, "startup_check", None)
        if self.pattern is None and check is None:
            return False
        if self.pattern is not None and not self.wait_pattern(log_file):
            return False
        return check is None or bool(self.wait_callback())

    def wait_pattern(self, log_file: IO[str]) -> bool:
        """Whether a line of the log, as ``filter_lines`` lets them through, matches the pattern."""
        lines = map(self.log_line, self.filter_lines(self.get_lines(log_file)))
        return any(re.search(self.pattern, line) for line in lines)  # type: ignore[arg-type]

    def wait_callback(self) -> bool:
        """Whether ``startup_check`` passes before the deadline (``TimeoutError`` after it); False
        once the process has exited."""
        popen, wake, deadline = self._waiting or (None, None, _Deadline(self.timeout))
        delay = 0.01
        while True:
            with contextlib.suppress(OSError):
                if self.startup_check():  # type: ignore[attr-defined]
                    return True
            if popen is not None and _exit_status(popen) is not None:
                return False
            if deadline.expired():
                raise TimeoutError(f"startup_check did not pass within {self.timeout:g} s")
            wake.wait(min(delay, deadline.remaining())) if wake is not None else time.sleep(delay)
            delay = min(delay * 1.5, 0.5)

    def filter_lines(self, lines: Iterable[str]) -> Iterable[str]:
        """The lines to search: those not blank, the first ``max_read_lines`` of them (None: all)."""
        return itertools.islice((line for line in lines if line.strip()), self.max_read_lines)

    def log_line(self, line: str) -> str:
        """Each line searched, logged at debug level (``XProcess.log``)."""
        self.process.log.debug(line)
        return line

    def get_lines(self, log_file: IO[str]) -> Iterator[str]:
        """The log's lines as they are written, each whole (the last one also once the process
        exited); they end with the process's exit, or with ``TimeoutError`` at the deadline."""
        popen, wake, deadline = self._waiting or (None, None, _Deadline(self.timeout))
        line = ""
        while True:
            line += log_file.readline()
            if line.endswith("\n"):
                yield line
                line = ""
                continue
            if popen is not None and _exit_status(popen) is not None:
                line += log_file.read()  # what it wrote before it exited
                yield from (whole for whole in line.splitlines(keepends=True) if whole)
                return
            if deadline.expired():
                raise TimeoutError(f"the pattern {self.pattern!r} was not in the log within {self.timeout:g} s")
            wake.wait(deadline.remaining()) if wake is not None else time.sleep(0.01)

    def listening(self, port: int | None = None, host: str = "127.0.0.1") -> bool:
        """Whether ``port`` (default :attr:`port`) on ``host`` accepts a TCP connection now."""
        port = self.port if port is None else port
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise ValueError(f"listening(): port must be an int from 1 to 65535, got {port!r}")
        try:
            socket.create_connection((host, port), timeout=_PROBE_TIMEOUT).close()
        except OSError:
            return False
        return True

    def http_ok(self, url: str) -> bool:
        """Whether an HTTP GET of ``url`` answers with a status below 400 now (a ``url`` starting
        with ``/`` is on 127.0.0.1 at :attr:`port`; https is not verified: it is a probe)."""
        import http.client
        import ssl

        if isinstance(url, str) and url.startswith("/"):
            url = f"http://127.0.0.1:{self.port}{url}"
        parts = urllib.parse.urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"http_ok(): url must be http(s)://host[:port]/path or /path, got {url!r}")
        try:
            if parts.scheme == "https":
                context = ssl.create_default_context()
                context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
                conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                    parts.hostname, parts.port, timeout=_PROBE_TIMEOUT, context=context
                )
            else:
                conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=_PROBE_TIMEOUT)
            try:
                conn.request("GET", urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, "")))
                return conn.getresponse().status < 400
            finally:
                conn.close()
        except (OSError, http.client.HTTPException, ValueError):
            return False


_STEPS = ("wait", "wait_pattern", "wait_callback", "filter_lines", "log_line", "get_lines")  # 1.x's


# Not a NamedTuple: building one at import compiles each field's annotation, a fifth of this
# module's import time.
class _Spec(SimpleNamespace):
    """A starter's settings, read once and checked."""

    args: list[str]
    env: dict[str, str] | None
    cwd: Path
    pattern: re.Pattern[str] | None
    deferred: Any  # the starter, when its pattern is a property read after the spawn
    starter: ProcessStarter  # where the port it reads is kept
    check: Callable[[], Any] | None
    steps: tuple[str, ...]  # the 1.x wait steps the starter overrides: waited for through them
    check_on_reuse: bool
    timeout: float
    max_read_lines: int | None
    popen_kwargs: dict[str, Any]
    terminate_on_interrupt: bool
    config_files: dict[str, str]  # each entry, as the starter names it: a digest of its content (a tree's: its files')
    config_changed: dict[str, tuple[str, str]]  # each tree changed since the cache's: (its digest then, what changed)
    requires: dict[str, str]  # each required name: the marker of its running process
    idle: float | None  # idle_timeout: not part of the fingerprint (a change alone restarts nothing)

    def port(self) -> int | None:
        """The port the starter read (:attr:`ProcessStarter.port`), if it read one yet."""
        port = self.starter.__dict__.get("_port")
        return port if type(port) is int else None

    # Config files and required processes have a key each (none when there are none: older states
    # stay equal), so that the reason for a restart can name the one that changed.
    @functools.cached_property
    def fingerprint(self) -> dict[str, str]:
        """A digest per part of what was started; a changed part means a restart."""
        pattern = (self.pattern.pattern, self.pattern.flags) if self.pattern else None
        parts = {
            "args": self.args,
            "env": self.env,
            "cwd": str(self.cwd),
            "popen_kwargs": self.popen_kwargs,
            "pattern": "(a property)" if self.deferred is not None else pattern,
            **{f"config file {path}": digest for path, digest in self.config_files.items()},
            **{f"requires {name}": marker for name, marker in self.requires.items()},
        }
        return {key: _digest(value) for key, value in parts.items()}

    def with_pattern(self, name: str) -> _Spec:
        """With the pattern a property, read it now (the process runs) and check it."""
        __tracebackhide__ = True
        if self.deferred is None:
            return self
        pattern = _checked_pattern(f"xprocess {name!r}", self.deferred.pattern)
        if pattern is None and self.check is None and "wait" not in self.steps:
            raise TypeError(f"xprocess {name!r}: the starter needs a pattern, a startup_check method or a wait method")
        return _Spec(**{**vars(self), "pattern": pattern})


# Called under the name's lock, once per ensure(), before anything is spawned or a running process
# stopped (what a dead start left is stopped first): a starter whose properties do work (create a
# cluster, pick a port) does it in one session at a time. The checks run in a fixed order, so the
# first error a user sees does not change.
def _read_starter(name: str, starter: Any, info: XProcessInfo, process: XProcess) -> _Spec:
    """A ``preparefunc`` or ``ProcessStarter`` as a checked :class:`_Spec`, else ``TypeError``,
    ``ValueError`` or ``FileNotFoundError`` naming the bad value, or ``XProcessError`` (a config
    file cannot be read, a required process does not run)."""
    __tracebackhide__ = True  # a bad starter's error shows the caller's line, not the plugin's
    where = f"xprocess {name!r}"
    s = _starter_instance(where, starter, info.controldir, process)
    args = s.args
    if isinstance(args, (str, bytes)) or not isinstance(args, Sequence) or not args:
        raise TypeError(f"{where}: args must be a non-empty list of arguments, got {args!r}")
    for arg in args:
        if isinstance(arg, bool) or not isinstance(arg, (str, os.PathLike, int, float)):
            raise TypeError(f"{where}: args items must be str, path or number, got {arg!r}")
    argv = [os.fspath(a) if isinstance(a, os.PathLike) else str(a) for a in args]
    if any("\0" in arg for arg in argv):
        raise ValueError(f"{where}: args items may not contain a NUL byte, got {argv!r}")
    env = s.env
    if env is not None:
        if not isinstance(env, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) and k and "=" not in k and "\0" not in k + v
            for k, v in env.items()
        ):
            raise TypeError(
                f"{where}: env must be None or a mapping of str to str (no NUL, no '=' in a name), got {env!r}"
            )
        env = dict(env)
    kwargs, cwd = _checked_popen_kwargs(where, s.popen_kwargs, info.controldir)
    # A property (pytest-xprocess 0.x read it once the process ran) is read after the spawn.
    value = inspect.getattr_static(type(s), "pattern", None)
    deferred = hasattr(type(value), "__get__") and not isinstance(value, (str, re.Pattern, type(None)))
    pattern = None if deferred else _checked_pattern(where, s.pattern)
    check = getattr(s, "startup_check", None)
    steps = tuple(n for n in _STEPS if getattr(type(s), n) is not getattr(ProcessStarter, n))
    if pattern is None and not deferred and check is None and "wait" not in steps:
        raise TypeError(
            f"{where}: the starter needs a pattern, a startup_check method or a wait method to know when it is ready"
        )
    timeout, max_lines = s.timeout, s.max_read_lines
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ValueError(f"{where}: timeout must be a positive number of seconds, got {timeout!r}")
    timeout = _seconds(timeout)
    if max_lines is not None and (isinstance(max_lines, bool) or not isinstance(max_lines, int) or max_lines < 1):
        raise ValueError(f"{where}: max_read_lines must be None or a positive int, got {max_lines!r}")
    _check_executable(where, kwargs.get("executable", argv[0]), cwd, env)
    files, changed = _config_digests(name, s.config_files, process.rootdir, info.controldir)
    return _Spec(
        args=argv, env=env, cwd=cwd, pattern=pattern, deferred=s if deferred else None, starter=s,
        check=check, steps=steps, check_on_reuse=bool(getattr(s, "check_on_reuse", True)), timeout=timeout,
        max_read_lines=max_lines, popen_kwargs=kwargs, terminate_on_interrupt=bool(s.terminate_on_interrupt),
        config_files=files, config_changed=changed,
        requires=_required_starts(name, s.requires, process), idle=_idle_timeout(where, s, process),
    )  # fmt: skip


# A plain function is called as its signature allows: with two positional arguments as
# pytest-xprocess 1.x called it, preparefunc(control_dir, process), else as the original API did,
# preparefunc(cwd). It returns (pattern, args), (pattern, args, env) or (1.x) a ProcessStarter.
def _starter_instance(where: str, starter: Any, control_dir: Path, process: XProcess) -> ProcessStarter:
    __tracebackhide__ = True
    if callable(starter) and not isinstance(starter, (type, ProcessStarter)):
        try:
            inspect.signature(starter).bind(None, None)
            two = True
        except (TypeError, ValueError):  # ValueError: no signature to read (some builtins)
            two = False
        got = starter(control_dir, process) if two else starter(control_dir)
        if isinstance(got, tuple) and len(got) in (2, 3):
            s = ProcessStarter(control_dir, process)
            s.pattern, s.args, s.env = got if len(got) == 3 else (*got, None)
            return s
        if not (isinstance(got, ProcessStarter) or (isinstance(got, type) and issubclass(got, ProcessStarter))):
            raise TypeError(
                f"{where}: preparefunc must return (pattern, args), (pattern, args, env) or a ProcessStarter, "
                f"it returned {got!r}"
            )
        starter = got
    if isinstance(starter, type) and issubclass(starter, ProcessStarter):
        return starter(control_dir, process)
    if isinstance(starter, ProcessStarter):
        return starter
    raise TypeError(f"{where}: expected a ProcessStarter subclass or preparefunc, got {starter!r}")


def _checked_popen_kwargs(where: str, kwargs: object, control_dir: Path) -> tuple[dict[str, Any], Path]:
    """The arguments for ``Popen`` (``stdin`` from /dev/null unless given) and the working directory."""
    __tracebackhide__ = True
    if not isinstance(kwargs, Mapping):
        raise TypeError(f"{where}: popen_kwargs must be a mapping, got {kwargs!r}")
    owned = sorted(_OWNED_POPEN_KWARGS.intersection(kwargs))
    if owned:
        raise ValueError(f"{where}: popen_kwargs may not set {', '.join(owned)}: the plugin owns them")
    unknown = sorted(set(kwargs) - set(inspect.signature(subprocess.Popen).parameters))
    if unknown:  # fails here, not in Popen after the old process was stopped
        raise TypeError(f"{where}: popen_kwargs has arguments subprocess.Popen does not take: {', '.join(unknown)}")
    for key, value in kwargs.items():
        _check_popen_value(where, key, value)
    checked = {"stdin": subprocess.DEVNULL, **kwargs}
    cwd = checked.pop("cwd", None)
    # a relative cwd is from the current directory, as Popen would have it
    cwd = _resolved(control_dir.parent) / control_dir.name if cwd is None else Path(os.fspath(cwd)).resolve()
    if not cwd.is_dir():
        raise FileNotFoundError(f"{where}: its working directory {str(cwd)!r} does not exist")
    return checked, cwd


# What Popen would refuse only once it runs, after the running process was stopped for a restart.
def _check_popen_value(where: str, key: str, value: Any) -> None:
    __tracebackhide__ = True
    if key in ("cwd", "executable"):
        ok = isinstance(value, (str, os.PathLike)) and "\0" not in str(os.fspath(value))
        wanted = "a path (str or os.PathLike) without NUL"
    elif key in ("user", "group", "extra_groups"):
        import grp
        import pwd

        lookup = pwd.getpwnam if key == "user" else grp.getgrnam
        ids = value if key == "extra_groups" and isinstance(value, (list, tuple)) else [value]
        ok = value is None or all(_known_id(lookup, one) for one in ids)
        wanted = f"{'a user' if key == 'user' else 'groups' if key == 'extra_groups' else 'a group'} of this machine"
    elif key in ("bufsize", "umask"):
        ok, wanted = isinstance(value, int) and not isinstance(value, bool), "an int"
    elif key == "pass_fds":
        ok = isinstance(value, (list, tuple, set, frozenset)) and all(
            isinstance(fd, int) and not isinstance(fd, bool) and _is_fd(fd) for fd in value
        )
        wanted = "open file descriptors (ints) of this process"
    elif key == "preexec_fn":
        ok, wanted = value is None or callable(value), "None or a function"
    elif key == "stdin":
        ok, wanted = value is None or isinstance(value, int) or hasattr(value, "fileno"), "None, a descriptor or a file"
    else:
        return
    if not ok:
        raise ValueError(f"{where}: popen_kwargs {key} must be {wanted}, got {value!r}")


def _is_fd(fd: int) -> bool:
    try:
        os.fstat(fd)
    except (OSError, OverflowError):
        return False
    return True


def _known_id(lookup: Callable[[str], Any], one: object) -> bool:
    if isinstance(one, int) and not isinstance(one, bool):
        return one >= 0
    try:
        return isinstance(one, str) and bool(lookup(one))
    except KeyError:
        return False


def _checked_pattern(where: str, pattern: object) -> re.Pattern[str] | None:
    __tracebackhide__ = True
    if isinstance(pattern, str):
        try:
            return re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"{where}: invalid pattern {pattern!r}: {exc}") from None
    if pattern is None or (isinstance(pattern, re.Pattern) and isinstance(pattern.pattern, str)):
        return pattern
    raise TypeError(f"{where}: pattern must be a str regex or None, got {pattern!r}")


def _check_executable(where: str, exe: str, cwd: Path, env: Mapping[str, str] | None) -> None:
    __tracebackhide__ = True
    if os.sep in exe:
        path = cwd / exe  # an absolute exe replaces cwd
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise FileNotFoundError(f"{where}: {exe!r} is not an executable file")
    elif shutil.which(exe, path=os.pathsep.join(os.get_exec_path(env))) is None:
        raise FileNotFoundError(f"{where}: executable {exe!r} not found on PATH")


def _check_name(name: object) -> str:
    """``name`` if it can be one directory name under ``.xprocess/``, else ``ValueError``."""
    try:
        raw = os.fsencode(name) if isinstance(name, str) else b""
    except UnicodeError:
        raw = b""
    if not 0 < len(raw) <= 200 or raw[:1] in (b".", b"-") or any(c in raw for c in b"/\\\0"):
        raise ValueError(
            f"invalid xprocess name {name!r}: it must be one directory name: not empty, at most 200 bytes "
            "in UTF-8, without '/', '\\' or NUL, not starting with '.' or '-'"
        )
    return name  # type: ignore[return-value]


def _stable_repr(value: object) -> str:
    """A value JSON cannot hold, in a fingerprint, as the same text in every run (not its address)."""
    if isinstance(value, functools.partial):
        return f"functools.partial({_stable_repr(value.func)}, {value.args!r}, {value.keywords!r})"
    if callable(value) and hasattr(value, "__qualname__"):
        return f"{getattr(value, '__module__', '?')}.{value.__qualname__}"
    return repr(value)


@functools.lru_cache(maxsize=64)
def _resolved(path: Path) -> Path:
    """``path.resolve()``, once per path (a reuse resolves the project directory each time)."""
    return path.resolve()


def _config_digests(
    name: str, paths: object, rootdir: Path, controldir: Path
) -> tuple[dict[str, str], dict[str, tuple[str, str]]]:
    """A digest of each ``config_files`` entry, keyed by the path as given (relative: to the
    project): of a file's content (a link is followed); of a directory's or a glob pattern's
    files, paths and contents (:func:`_tree_files`), through the digest cache of ``controldir``.
    Also, for each tree whose digest changed since the cache's, (that digest, the first file
    added, removed or changed). ``XProcessError`` if a file is missing, unreadable, not a regular
    file or too big, or a tree too big; a pattern matching nothing is no error."""
    __tracebackhide__ = True
    where = f"xprocess {name!r}"
    if isinstance(paths, (str, bytes, os.PathLike)) or not isinstance(paths, Sequence):
        raise TypeError(f"{where}: config_files must be a list of paths, got {paths!r}")
    digests, changed, cache = {}, {}, None  # (read only for a tree: most starters have none)
    for path in paths:
        given = os.fspath(path) if isinstance(path, (str, os.PathLike)) else None
        if not isinstance(given, str) or not given or "\0" in given:
            raise TypeError(f"{where}: config_files items must be str or os.PathLike paths (no NUL), got {path!r}")
        full = rootdir / given  # an absolute path replaces rootdir
        if full.is_dir() or (_GLOB_MAGIC.search(given) and not os.path.lexists(full)):  # a file named so is a file
            cache = cache or _DigestCache(controldir / DIGESTS_NAME)
            digest = cache.unchanged(given, rootdir)
            if digest is None:
                digest, change = cache.digest(name, given, *_tree_files(name, given, full, rootdir))
                if change is not None:
                    changed[given] = change
            digests[given] = digest
        else:
            digests[given] = _file_digest(name, given, full)
    if cache is not None:
        cache.save()
    return digests, changed


def _file_digest(name: str, given: str, full: Path | str) -> str:
    """The digest of one config file's content, else ``XProcessError`` naming it."""
    __tracebackhide__ = True
    import hashlib

    digest = hashlib.sha256()
    try:
        with open(_open_checked(full, follow=True), "rb") as f:
            for chunk in iter(lambda: f.read(_CHUNK), b""):
                if f.tell() > _MAX_CONFIG:
                    raise OSError(errno.EFBIG, f"it is bigger than {_MAX_CONFIG >> 20} MiB")
                digest.update(chunk)
    except OSError as exc:
        raise XProcessError(
            f"xprocess {name!r}: its config file {given!r} ({full}) cannot be read: {exc.strerror or exc}", name=name
        ) from None
    return digest.hexdigest()[:16]


def _tree_files(
    name: str, given: str, full: Path, rootdir: Path
) -> tuple[list[tuple[str, str, os.stat_result]], list[tuple[str, os.stat_result | None]]]:
    """The regular files a ``config_files`` directory or glob pattern names, sorted, as (path as
    named from the entry, full path, stat), and the directories listed to find them (path as
    named, ending in "/", and stat). A directory: every file under it. A pattern: ``**``
    any directories, ``*``, ``?`` and ``[...]`` within a name, as ``glob.glob(recursive=True)``:
    a wildcard does not match a leading dot. A link to a file is followed; a link to a directory
    is not (a loop cannot hang the walk); ``__pycache__`` and ``.xprocess`` are never entered, nor,
    unless a pattern names one, any directory starting with a dot (.git, .venv, caches)."""
    __tracebackhide__ = True
    match, depth, dots, prefix = None, None, False, given.rstrip("/") + "/"
    if not full.is_dir():
        parts = given.split("/")
        first = next(i for i, part in enumerate(parts) if _GLOB_MAGIC.search(part))
        base, rest = "/".join(parts[:first]) or ("/" if given.startswith("/") else ""), parts[first:]
        full, prefix = rootdir / base, base.rstrip("/") + "/" if base else ""
        match = re.compile(re.escape(prefix) + _glob_regex(rest)).fullmatch
        depth = None if "**" in rest else len(rest)
        dots = any(part.startswith(".") for part in rest)
    found: list[tuple[str, str, os.stat_result]] = []
    listed: list[tuple[str, os.stat_result | None]] = []
    seen, stack = 0, [(str(full), prefix, 1)]
    while stack:
        top, named, level = stack.pop()
        try:
            listed.append((named or ".", os.stat(top)))  # entries added, removed or renamed change it
            with os.scandir(top) as listing:
                entries = list(listing)
        except (FileNotFoundError, NotADirectoryError):  # removed meanwhile; a pattern's base that is not there
            listed.append((named or ".", None))  # (nothing says when it is made: the tree is walked each time)
            continue
        except OSError as exc:
            raise XProcessError(
                f"xprocess {name!r}: its config_files entry {given!r} cannot be read: {top}: {exc.strerror or exc}",
                name=name,
            ) from None
        seen += len(entries)
        if seen > _MAX_TREE:
            raise XProcessError(
                f"xprocess {name!r}: its config_files entry {given!r} walks more than {_MAX_TREE:,} files: "
                "name fewer (a pattern such as 'src/**/*.py')",
                name=name,
            )
        for entry in entries:  # (a reuse's loop: one stat per file)
            if entry.is_dir(follow_symlinks=False):
                if entry.name not in _SKIPPED_DIRS and (dots or entry.name[0] != ".") and level != depth:
                    stack.append((entry.path, f"{named}{entry.name}/", level + 1))
                continue
            path = named + entry.name
            if match is not None and not match(path):
                continue
            try:
                st = entry.stat()  # a link to a file is followed
            except OSError:  # a dangling link, a link loop, removed meanwhile
                continue
            if stat.S_ISREG(st.st_mode):
                found.append((path, entry.path, st))
    found.sort()  # (paths are unique: the stats are never compared)
    return found, listed


def _glob_regex(parts: list[str]) -> str:
    """The regular expression of a glob pattern's ``/``-separated ``parts`` (see :func:`_tree_files`)."""
    out = []
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part == "**":
            out.append(r"(?:(?!\.)[^/]+/)*" + (r"(?!\.)[^/]+" if last else ""))
            continue
        out.append("" if part.startswith(".") else r"(?!\.)")
        for token in re.findall(r"\[!?\]?[^]]*\]|.", part):
            if token == "*":
                out.append("[^/]*")
            elif token == "?":
                out.append("[^/]")
            elif len(token) > 2 and token[0] == "[":
                out.append("[" + ("^" + token[2:-1] if token[1] == "!" else token[1:-1]).replace("\\", "\\\\") + "]")
            else:
                out.append(re.escape(token))
        out.append("" if last else "/")
    return "".join(out)


class _DigestCache:
    """What a stat can vouch for, kept in the control directory between runs (``DIGESTS_NAME``).
    The first line, all a reuse with nothing changed reads: of each directory or pattern of
    ``config_files``, its digest, the paths of the directories listed and the files found (one
    string), and a stamp of their stats (None while one changed too recently to vouch for it): a stat of each, and no
    walk, tells it unchanged. The second: each file's stat and digest, read once a stamp differs:
    the tree is walked again, and only files whose stat changed are hashed. A file that cannot
    be read or holds anything else is an empty cache (every file is hashed); one that cannot be
    written is no error."""

    def __init__(self, path: Path) -> None:
        self.path, self.dirty = path, False
        self.stamps: dict[str, Any] = {}
        self.used: set[str] = set()
        self._rest, self._files = b"", None  # type: tuple[bytes, dict[str, Any] | None]
        with contextlib.suppress(OSError, ValueError, RecursionError):
            with open(_open_checked(path, owned=True), "rb") as f:
                size = os.fstat(f.fileno()).st_size
                head, _, self._rest = f.read(size if size <= _MAX_STATE else 0).partition(b"\n")
            record = json.loads(head)
            if isinstance(record, dict) and record.get("version") == 2 and isinstance(record.get("stamps"), dict):
                self.stamps = record["stamps"]

    def files(self) -> dict[str, Any]:
        """The second line: each tree's files, each as [st_mtime_ns, st_size, st_ino, st_ctime_ns, digest]."""
        if self._files is None:
            self._files = {}
            with contextlib.suppress(ValueError, RecursionError):
                files = json.loads(self._rest.partition(b"\n")[0])
                self._files = files if isinstance(files, dict) else {}
        return self._files

    def unchanged(self, given: str, rootdir: Path) -> str | None:
        """The cached digest of the tree ``given`` if a stat of each directory listed and of each
        file found then vouches for it, without a walk; else None."""
        held = self.stamps.get(given)
        with contextlib.suppress(OSError, TypeError, ValueError):  # a tree not held, or a file gone since
            stamp, digest, paths = held  # type: ignore[misc]
            if not (isinstance(stamp, str) and isinstance(digest, str)):
                return None
            fd = os.open(rootdir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:  # (paths relative to an open directory: half the cost of each stat)
                if stamp == _stamp([os.stat(path, dir_fd=fd) for path in paths.split("\n")]):
                    self.used.add(given)
                    return digest
            finally:
                os.close(fd)
        return None

    def digest(
        self,
        name: str,
        given: str,
        files: list[tuple[str, str, os.stat_result]],
        dirs: list[tuple[str, os.stat_result | None]],
    ) -> tuple[str, tuple[str, str] | None]:
        """The digest of the tree ``given`` (its ``files`` and ``dirs``, from :func:`_tree_files`),
        hashing the files whose stat changed, and if it changed since the cache's: (the cache's
        digest, what changed first)."""
        __tracebackhide__ = True
        import hashlib

        self.used.add(given)
        old = self.stamps.get(given)
        old = old if isinstance(old, list) and len(old) == 3 and isinstance(old[1], str) else None
        before = self.files().get(given)
        before = before if isinstance(before, dict) else {}
        entries: dict[str, list[Any]] = {}
        racy = time.time_ns() - _RACY_NS
        for path, full, st in files:
            key = [st.st_mtime_ns, st.st_size, st.st_ino, st.st_ctime_ns]
            was = before.get(path)
            if isinstance(was, list) and len(was) == 5 and was[:4] == key and isinstance(was[4], str):
                digest = was[4]
            else:
                digest = _file_digest(name, path, full)
            entries[path] = [*key, digest] if max(key[0], key[3]) < racy else [None, None, None, None, digest]
        digest = hashlib.sha256("\n".join(f"{p}\0{e[4]}" for p, e in entries.items()).encode()).hexdigest()[:16]
        fresh = all(st is not None and max(st.st_mtime_ns, st.st_ctime_ns) < racy for _, st in dirs) and all(
            e[0] is not None for e in entries.values()
        )
        stats = [st for _, st in dirs if st is not None] + [st for _, _, st in files]
        stamp = _stamp(stats) if fresh else None  # (one string of the paths: a quarter of the JSON's cost)
        self.stamps[given] = [stamp, digest, "\n".join([*(d for d, _ in dirs), *entries])]
        self.files()[given], self.dirty = entries, True
        if old is None or old[1] == digest:
            return digest, None
        then = {p: e[4] for p, e in before.items() if isinstance(e, list) and e}
        return digest, (old[1], _first_change(then, {p: e[4] for p, e in entries.items()}))

    def save(self) -> None:
        """Write the cache of the trees used, if one changed (a file this big is not written)."""
        if not self.dirty:
            return
        files = self.files()
        head = {"version": 2, "stamps": {k: self.stamps[k] for k in self.used}}
        data = f"{json.dumps(head)}\n{json.dumps({k: files.get(k, {}) for k in self.used})}\n".encode()
        if len(data) <= _MAX_STATE:
            with contextlib.suppress(OSError):
                _write_private(self.path, data)


def _stamp(stats: Iterable[os.stat_result]) -> str:
    """What a stat says of a tree's directories and files (hash() of ints is the same in every
    process): a change of content, of the entries of a directory, of mtime, changes ctime."""
    return f"{hash(tuple(map(_STAMPED, stats))) & 2**64 - 1:x}"


_STAMPED = operator.attrgetter("st_ctime_ns", "st_size", "st_ino")


def _first_change(before: dict[str, str], after: dict[str, str]) -> str:
    """The first file, by path, added, removed or changed from ``before`` to ``after``, and how many more."""
    changed = sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p))
    if not changed:
        return ""
    first = changed[0]
    how = "added" if first not in before else "removed" if first not in after else "changed"
    more = f", and {len(changed) - 1} more file{'s' if len(changed) > 2 else ''}" if len(changed) > 1 else ""
    return f"{first} {how}{more}"


def _required_starts(name: str, names: object, process: XProcess) -> dict[str, str]:
    """The marker of each process ``name`` requires, all of which must be running."""
    __tracebackhide__ = True
    where = f"xprocess {name!r}"
    if isinstance(names, (str, bytes)) or not isinstance(names, Sequence):
        raise TypeError(f"{where}: requires must be a list of process names, got {names!r}")
    starts = {}
    for required in names:
        if not isinstance(required, str):
            raise TypeError(f"{where}: requires items must be process names (str), got {required!r}")
        if required == name:
            raise ValueError(f"{where}: requires names the process itself")
        recorded = _Recorded.read(process.getinfo(required))  # a bad name: ValueError, naming it
        if not recorded.running or recorded.state is None:
            raise XProcessError(
                f"{where} requires {required!r}, which is not running: ensure it first (e.g. make the "
                f"{name} fixture depend on the {required} fixture)",
                name=name,
            )
        starts[required] = recorded.state.token
    return starts


def _idle_timeout(where: str, s: ProcessStarter, process: XProcess) -> float | None:
    """The starter's ``idle_timeout``; where it sets none, the ini's ``xprocess_idle_timeout``."""
    if not any("idle_timeout" in vars(k) for k in (s, *type(s).__mro__) if k is not ProcessStarter):
        return _ini_idle_timeout(process.config)
    value = s.idle_timeout
    if value is None:
        return None
    idle = _seconds(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0
    if not 0 < idle < float("inf"):  # (NaN is neither)
        raise ValueError(f"{where}: idle_timeout must be None or a positive number of seconds, got {value!r}")
    return idle


def _ini_idle_timeout(config: Any) -> float | None:
    """``xprocess_idle_timeout`` (seconds; empty: none), ``pytest.UsageError`` if it is no number."""
    text = config.getini("xprocess_idle_timeout").strip() if hasattr(config, "getini") else ""
    if text.lower() in ("", "none"):
        return None
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise pytest.UsageError(f"xprocess_idle_timeout = {text!r}: give a positive number of seconds, or none")
    return value


def _choose_port(control_dir: Path, process: Any) -> int:
    """The kept port of ``control_dir`` if its process runs (no lock: the warm path), or, for a
    start, if it is still fit (:func:`_unfit`); else a new one (:func:`_new_port`), kept."""
    path = control_dir / PORT_NAME
    kept = _read_port(path)
    xp = process if isinstance(process, XProcess) else None
    if kept is not None and xp is not None and xp.getinfo(control_dir.name).isrunning():
        return kept
    if not control_dir.is_dir():  # read outside a start: nothing is kept, so nothing to claim
        return _new_port(set())
    with _port_claim(control_dir.parent):  # two names choosing at once see each other's choice
        taken = _ports_kept(control_dir.parent, but=control_dir.name)
        problem = _unfit(kept, taken) if kept is not None else ""
        if kept is not None and not problem:
            return kept
        port = _new_port(taken)
        with contextlib.suppress(OSError):
            _write_private(path, str(port).encode())
    if problem and xp is not None:  # a daemon an earlier start left, often
        xp._tell(f"xprocess: port {kept}, kept for {control_dir.name!r}, {problem}: it gets port {port}")
    return port


def _read_port(path: Path) -> int | None:
    try:
        with _open_private(path) as f:
            port = int(f.read(16))
    except (OSError, ValueError):
        return None
    return port if 0 < port < 65536 else None


def _unfit(kept: int, taken: Collection[int]) -> str:
    """Why a start may not keep ``kept`` ("" if it may): taken, kept for another name, or (chosen
    before version 0.3) in the ephemeral range, where any outgoing connection may take it."""
    low, high = _ephemeral_range()
    if kept in taken:
        return "is kept for another name of this project too"
    if low <= kept <= high:
        return f"is in the ephemeral range ({low}-{high}), which outgoing connections take ports from"
    if not _port_free(kept):
        holders = "; ".join(f"pid {pid}: {cmd[:120]}" for pid, cmd in _port_holders(kept))
        return f"is in use ({holders or 'by whom, this user cannot see'})"
    return ""


_PORT_LOCK = ".port-lock"  # in the state directory: held while a name chooses its port
_PORT_CLAIM_TIMEOUT = 10.0  # a choice takes milliseconds: a holder this long is stuck
# Ports that servers a developer runs by hand often take: a port kept there would move at their next start.
_DEV_PORTS = frozenset({3000, 3306, 4200, 5000, 5432, 5672, 6379, 8000, 8080, 8443, 8888, 9000, 9200, 11211, 27017})


def _ephemeral_range() -> tuple[int, int]:
    """The ports the kernel gives outgoing connections (and a bind of port 0) from."""
    with contextlib.suppress(OSError, ValueError):
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        return low, high
    return 49152, 65535  # IANA's dynamic ports: macOS's and the BSDs' default


def _new_port(taken: Collection[int]) -> int:
    """A port above 1024 and outside the ephemeral range, free on 127.0.0.1 and ::1 now and not in
    ``taken``: from a random start (two projects rarely try the same), the next such one."""
    import random

    low, high = _ephemeral_range()
    low, high = max(low, 1025), min(max(high, low - 1), 65535)
    width = high - low + 1  # the range is skipped: offset i is port 1025 + i, or past the range
    count = 65536 - 1025 - width
    start = random.randrange(count) if count > 0 else 0
    for i in range(count):
        port = 1025 + (start + i) % count
        port += width if port >= low else 0
        if port not in taken and port not in _DEV_PORTS and _port_free(port) and _port_free(port, "::1"):
            return port
    with socket.socket() as sock:  # a range that leaves no port (or none free): the kernel's choice
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ports_kept(statedir: Path, but: str) -> set[int]:
    """The ports the project's other names keep, running or not: a new choice never takes one."""
    ports = set()
    with contextlib.suppress(OSError):
        for entry in os.scandir(statedir):
            if entry.name != but and entry.is_dir(follow_symlinks=False):
                port = _read_port(Path(entry.path, PORT_NAME))
                if port is not None:
                    ports.add(port)
    return ports


@contextlib.contextmanager
def _port_claim(statedir: Path) -> Iterator[None]:
    """Hold the project's port lock (the name locks keep only one name's starts apart)."""
    path = statedir / _PORT_LOCK
    fd = _open_lock(path)
    try:
        deadline, delay = _Deadline(_PORT_CLAIM_TIMEOUT), 0.001
        while not _flock(fd):
            if deadline.expired():
                st = os.fstat(fd)
                raise XProcessError(
                    f"xprocess: {_describe_holders((st.st_dev, st.st_ino))} held {path} for "
                    f"{_PORT_CLAIM_TIMEOUT:g} s while choosing a port (a choice takes milliseconds): is it stopped?"
                )
            delay = deadline.sleep(delay)
        yield
    finally:
        os.close(fd)


def _port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on ``port`` of ``host`` (TIME_WAIT connections do not stop it;
    nor does a host this machine lacks, ::1 without IPv6)."""
    try:
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    except OSError:
        return True
    with sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            return exc.errno == errno.EADDRNOTAVAIL
    return True


# --- 3. files under .xprocess ---
# The directories, the start lock, the logs, and the one opener and one writer of every file kept.
# Other accounts on the machine are part of the threat model: every directory is 0700 and every
# file 0600 (whatever the umask: it only takes bits away); a directory that is not this user's,
# or that others may write to, is refused; no file is followed through a symbolic link, opened in
# a way that blocks (a FIFO planted in its place), or read past a bound.


def _open_checked(
    path: Path | str, flags: int = os.O_RDONLY, *, owned: bool = False, ident: Any = None, follow: bool = False
) -> int:
    """The one ``os.open`` of kept files: no link (unless ``follow``), no blocking, a regular file
    only (``owned``: this user's; ``ident``: that (device, inode)), else ``OSError`` saying why."""
    try:
        fd = os.open(path, flags | (_SAFE_OPEN & ~_NOFOLLOW if follow else _SAFE_OPEN), 0o600)
    except OSError as exc:
        _raise_if_scarce(exc)
        raise
    st = os.fstat(fd)
    problem = ""
    if stat.S_ISDIR(st.st_mode):
        problem = os.strerror(errno.EISDIR)
    elif not stat.S_ISREG(st.st_mode):
        problem = "it is not a regular file"
    elif owned and st.st_uid != os.geteuid():
        problem = f"it belongs to {_user(st.st_uid)}, not to {_user(os.geteuid())}: remove it"
    elif ident is not None and (st.st_dev, st.st_ino) != tuple(ident):
        problem = "it is another file"
    if problem:
        os.close(fd)
        raise OSError(errno.EINVAL, problem, str(path))
    return fd


def _open_private(path: Path) -> IO[bytes]:
    return open(_open_checked(path), "rb")


def _write_private(path: Path, data: bytes, how: str = "replace") -> None:
    """Write ``data`` to ``path``, never through a link: "replace" it atomically, "append" it in one
    write(2) (readers see whole lines), or "create" it (``FileExistsError`` if something is there)."""
    if how != "replace":
        fd = _open_checked(path, os.O_WRONLY | os.O_CREAT | (os.O_APPEND if how == "append" else os.O_EXCL))
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        _write_private(tmp, data, "create")
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _check_private_dir(path: Path, name: str = "") -> None:
    """``path`` must be a directory of this user's that no one else may write to, else ``XProcessError``."""
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        problem = "is a symbolic link (two projects sharing one would mix their processes)"
    elif not stat.S_ISDIR(st.st_mode):
        problem = "is not a directory"
    elif st.st_uid != os.geteuid():
        problem = f"belongs to {_user(st.st_uid)}, not to {_user(os.geteuid())} who runs pytest"
    elif st.st_mode & 0o022:
        problem = f"may be written by other users (mode {stat.S_IMODE(st.st_mode):o})"
    else:
        return
    raise XProcessError(
        f"xprocess{f' {name!r}' if name else ''}: {path} {problem}: it is not safe to keep processes there. "
        f"Remove it (rm -rf {shlex.quote(str(path))}) or make it a directory of your own that only you can "
        "write to (chown, chmod 700)",
        name=name or None,
    )


def _user(uid: int) -> str:
    try:
        import pwd

        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except (ImportError, KeyError):
        return f"uid {uid}"


def _make_dirs(info: XProcessInfo) -> list[Path]:
    """Create the state and control directories (0700) and ``.gitignore`` as needed; return them."""
    statedir = info.controldir.parent
    created = []
    try:
        for path in (statedir, info.controldir):
            try:
                _check_private_dir(path, info.name)  # ours from an earlier run: the usual case
                continue
            except FileNotFoundError:
                pass
            if path == statedir and not statedir.parent.is_dir():
                statedir.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.mkdir(path, 0o700)
                created.append(path)
            except FileExistsError:  # another session's, made just now
                _check_private_dir(path, info.name)
        ignore = statedir / ".gitignore"
        try:
            blank = os.lstat(ignore).st_size == 0  # whenever .xprocess exists, git ignores it
        except FileNotFoundError:
            blank = True
            created.append(ignore)
        if blank:  # written whole or not at all: a full disk once left it empty for good
            _write_private(ignore, b"*\n")
        return created
    except OSError as exc:
        raise XProcessError(
            f"xprocess cannot create {exc.filename or info.controldir}: {exc.strerror or exc} "
            "(free some space or make it writable)"
        ) from exc


@contextlib.contextmanager
def _undo_on_error(created: list[Path]) -> Iterator[None]:
    """Remove what :func:`_make_dirs` created if the block fails (``.gitignore`` only with its directory)."""
    try:
        yield
    except BaseException:
        for path in reversed(created):
            with contextlib.suppress(OSError):
                if path.name == STATE_DIR and set(os.listdir(path)) <= {".gitignore", _PORT_LOCK}:
                    for made in (".gitignore", _PORT_LOCK):  # the port lock: a starter read its port
                        with contextlib.suppress(FileNotFoundError):
                            (path / made).unlink()
                if (path / DIGESTS_NAME).is_file():  # config_files read, then another check failed
                    (path / DIGESTS_NAME).unlink()
                if path.is_dir():
                    path.rmdir()
                elif path.name != ".gitignore":
                    path.unlink()
        raise


def _open_lock(path: Path) -> int:
    """Open (creating) a lock of this user's, read-only: enough for flock. A link is replaced, and
    so is a file linked elsewhere too (a copy made with ``cp -al`` would share the project's locks)."""
    try:
        for _ in range(3):
            try:
                fd = _open_checked(path, os.O_RDONLY | os.O_CREAT, owned=True)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    os.unlink(path)
                    continue
                if exc.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
                    return _open_checked(path, owned=True)
                raise
            st = os.fstat(fd)
            with contextlib.suppress(OSError):
                now = os.lstat(path)
                if st.st_nlink == 1 and (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino):
                    return fd
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                if st.st_nlink > 1:
                    os.unlink(path)  # (another session may have replaced it first: this one opens that)
        return _open_checked(path, os.O_RDONLY | os.O_CREAT, owned=True)
    except OSError as exc:
        raise XProcessError(
            f"xprocess cannot open its lock {path}: {exc.strerror or exc} (make {path.parent} writable)"
        ) from exc


def _flock(fd: int, shared: bool = False) -> bool:
    """Lock ``fd`` (exclusively, or ``shared``) without waiting: False if someone else holds it."""
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


@contextlib.contextmanager
def _name_lock(info: XProcessInfo, deadline: _Deadline, tell: Callable[[str], None]) -> Iterator[list[Path]]:
    """Hold the start lock of ``info``'s name (a file replaced while we waited is taken again),
    creating the directories; yield what was created. A wait is told at once, naming the holder."""
    __tracebackhide__ = True
    path = info.controldir / LOCK_NAME
    told = False
    while True:
        created = _make_dirs(info)
        fd = _open_lock(path)
        delay = 0.001
        try:
            while not _flock(fd):
                if not told:
                    st = os.fstat(fd)
                    holders = _describe_holders((st.st_dev, st.st_ino))
                    tell(f"xprocess: {info.name!r} is being started by {holders}: waiting, at most "
                         f"the starter's timeout of {deadline.at - deadline.began:g} s")  # fmt: skip
                    told = True
                if deadline.expired():
                    raise StartupTimeoutError(
                        f"xprocess {info.name!r}: another session held {path} (starting it) for the whole timeout "
                        f"of {deadline.at - deadline.began:g} s: that start is slow or failed (its error says which); "
                        "if the server is only slow, raise the starter's timeout",
                        name=info.name,
                    )
                delay = deadline.sleep(delay)
            try:
                same = os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
            except OSError:
                same = False
            if same:
                yield created + ([path, info.controldir / PORT_NAME] if info.controldir in created else [])
                return
        finally:
            os.close(fd)  # releases the lock


def _create_log(path: Path) -> int:
    """A new, empty log in append mode (lines the child writes through a handle of its own are kept)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    try:
        return _open_checked(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL)
    except OSError as exc:
        raise XProcessError(f"xprocess cannot create its log {path}: {exc.strerror or exc}") from exc


def _rotate_logs(logpath: Path, keep: int) -> None:
    """Shift the current log to ``.1``, ``.1`` to ``.2``, ... the oldest past ``keep`` drops out."""
    if not keep:
        for old in [logpath, *logpath.parent.glob(f"{logpath.name}.*")]:
            with contextlib.suppress(FileNotFoundError):
                old.unlink()
        return
    names = [logpath, *(logpath.with_name(f"{logpath.name}.{i}") for i in range(1, keep + 1))]
    try:
        for older, newer in reversed(list(zip(names, names[1:]))):
            with contextlib.suppress(FileNotFoundError):
                os.replace(older, newer)
    except OSError as exc:
        raise XProcessError(
            f"xprocess cannot keep the earlier logs in {logpath.parent}: {exc.strerror or exc}"
        ) from exc


def _tail(path: Path, count: int, since: int = 0, limit: int = _TAIL_BYTES) -> list[str]:
    """The last ``count`` lines of ``path`` after offset ``since``, from at most its last ``limit`` bytes."""
    try:
        with _open_private(path) as f:
            f.seek(max(since, f.seek(0, os.SEEK_END) - limit))
            data = f.read(limit)
    except OSError:
        return []
    return data.decode("utf-8", "replace").splitlines()[-count:]


# --- 4. spawning and waiting for readiness ---
# The command run with its output going to a new log, then a wait that sleeps on events (the log
# grew, the child exited) until the pattern is in a whole line and startup_check says yes, or it
# exits, or time runs out. Forward reference: a failure's hint asks §6 for markers.


@functools.lru_cache(maxsize=1)
def _libc() -> Any:
    """The C library, on Linux (for inotify and prctl), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True)
    except OSError as exc:  # the import too fails, at the descriptor limit
        _raise_if_scarce(exc)
        return None
    except AttributeError:
        return None


def _pidfd(pid: int) -> int | None:
    """A pidfd of ``pid`` (None where there are none, or it is gone); ``ValueError`` for a thread id."""
    try:
        return os.pidfd_open(pid)  # type: ignore[attr-defined,no-any-return,unused-ignore]
    except AttributeError:
        return None
    except OSError as exc:
        if exc.errno in (errno.EINVAL, errno.ENOENT):  # (Linux 6.9 and later say ENOENT)
            raise ValueError(f"{pid} is a thread id, not a process") from None
        _raise_if_scarce(exc)
        return None


def _spawn(spec: _Spec, marker: str, logfd: int) -> subprocess.Popen[bytes]:
    """Run the command without a shell, in a session of its own (a Ctrl-C does not reach it)."""
    env = dict(os.environ if spec.env is None else spec.env)
    if spec.env is None:
        env.setdefault("PYTHONUNBUFFERED", "1")  # the commonest "it hangs": a Python child buffering
    env[MARKER_ENV] = marker  # findable from the moment it runs, before its state is written
    return subprocess.Popen(
        spec.args, cwd=spec.cwd, env=env, stdout=logfd, stderr=subprocess.STDOUT, start_new_session=True,
        **spec.popen_kwargs,
    )  # fmt: skip


# One per session: closing an inotify instance waits for an RCU grace period (up to ~16 ms seen
# here), so it lives until the session ends. Removing a watch costs less (about 80 µs), but it is
# on the way from the ready line to ensure()'s return: an outermost watch is removed at the next.
class _Wakeups:
    """Wakes the readiness wait when a log grows (inotify) or a child exits (pidfd); else short sleeps."""

    def __init__(self) -> None:
        self._poll = select.poll()
        self._inotify: int | None = None
        self._watch: int | None = None
        self._spent: int | None = None  # the last outermost watch, removed when the next is added
        self._pidfd: int | None = None
        self._libc = _libc()
        init = getattr(self._libc, "inotify_init1", None)
        if init is not None:
            fd = init(os.O_NONBLOCK | os.O_CLOEXEC)
            if fd >= 0:
                self._inotify = fd
                self._poll.register(fd, select.POLLIN)

    # Watches nest: an ensure() called from a startup_check waits with watches of its own, and the
    # outer ones are back when it returns.
    @contextlib.contextmanager
    def watching(self, logpath: Path) -> Iterator[_Wakeups]:
        outer = (self._watch, self._pidfd)
        if self._pidfd is not None:  # an exit of the outer child must not keep waking this wait
            self._poll.unregister(self._pidfd)
        self._watch = self._pidfd = None
        if self._inotify is not None:
            wd = self._libc.inotify_add_watch(self._inotify, os.fsencode(logpath), _IN_MODIFY)
            self._watch = wd if wd >= 0 else None
            if self._spent is not None and self._spent != wd:  # the same file gives the same watch
                self._libc.inotify_rm_watch(self._inotify, self._spent)
            self._spent = None
            self._drain()  # events of earlier watches would only wake us for nothing
        try:
            yield self
        finally:
            if self._watch is not None and self._watch != outer[0]:
                if outer[0] is None:
                    self._spent = self._watch
                else:  # an inner watch: its server's writes would keep waking the outer wait
                    self._libc.inotify_rm_watch(self._inotify, self._watch)
            if self._pidfd is not None:
                self._poll.unregister(self._pidfd)
                os.close(self._pidfd)
            self._watch, self._pidfd = outer
            if self._pidfd is not None:
                self._poll.register(self._pidfd, select.POLLIN)

    def wake_on_exit(self, pid: int) -> None:
        self._pidfd = _pidfd(pid)
        if self._pidfd is not None:
            self._poll.register(self._pidfd, select.POLLIN)

    def wait(self, timeout: float) -> None:
        timeout = min(timeout, 3600.0)  # poll() takes no infinite timeout (``timeout = inf``)
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


class _LogLines:
    """Each whole line appended to a log (ending at ``\\n``, ``\\r\\n`` or ``\\r``; yielded ending in
    ``\\n``, cut to :data:`_MAX_LINE` bytes), decoded, with its end offset."""

    def __init__(self, path: Path, deadline: float = float("inf")) -> None:
        self._file = _open_private(path)
        self._deadline = deadline  # a log that never stops growing must not hold the wait past it
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
            if self._dropped and not self._buf.endswith(b"\r"):  # inside an overlong line: skip to its end
                ends = [i for i in (data.find(b"\n"), data.find(b"\r")) if i >= 0]
                if not ends:
                    self._dropped += len(data)
                    if self.last_data >= self._deadline:  # (a child writing one endless line)
                        return
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
            if len(self._buf) > _MAX_LINE:  # a "\r" at its end may have ended it: kept
                cr = self._buf.endswith(b"\r")
                self._dropped += len(self._buf) - _MAX_LINE - cr
                self._buf = self._buf[:_MAX_LINE] + b"\r" * cr
            if self.last_data >= self._deadline:
                return

    def partial(self) -> tuple[str, int]:
        """The incomplete last line, as text, and the offset of its end."""
        self.partial_checked = True
        end = self.offset + self._dropped + len(self._buf)
        if self._buf.endswith(b"\r"):  # no "\n" came to make it "\r\n": a whole line after all
            return self._buf[:-1].decode("utf-8", "replace") + "\n", end
        return self._buf.decode("utf-8", "replace"), end

    def close(self) -> None:
        self._file.close()


# Where os.waitid can wait without reaping (Linux, and macOS from Python 3.13) the child stays
# unreaped, so its pid (and the session it leads) stays ours until it is terminated; elsewhere it
# is reaped and its exit code kept (its tree is then found by its marker).
def _exit_status(popen: subprocess.Popen[bytes]) -> int | None:
    """The child's exit code (negative: the signal that killed it), or None while it runs."""
    if not hasattr(os, "waitid") or not hasattr(os, "WNOWAIT"):
        return popen.poll()
    try:
        info = os.waitid(os.P_PID, popen.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return popen.poll() if popen.returncode is None else popen.returncode  # reaped elsewhere
    if info is None:
        return None
    code: int = info.si_status
    return code if info.si_code == os.CLD_EXITED else -code


class _Retry:
    """A step that may say "not yet" (an ``OSError``: typically "connection refused"), tried when due:
    at once, then after 10 ms, 1.5 times longer each time, up to 0.5 s."""

    __slots__ = ("at", "delay", "step", "value")

    def __init__(self, step: Callable[[], Any]) -> None:
        self.step, self.value, self.delay, self.at = step, None, 0.01, 0.0

    def due(self) -> float:
        """Try the step if it is due; how long until the next try (0 once it gave a true value)."""
        now = time.monotonic()
        if now >= self.at:
            with contextlib.suppress(OSError):
                self.value = self.step()
            self.at, self.delay = now + self.delay, min(self.delay * 1.5, 0.5)
        return 0.0 if self.value else self.at - time.monotonic()


def _wait_ready(
    info: XProcessInfo, spec: _Spec, popen: subprocess.Popen[bytes], wake: _Wakeups, began: float, deadline: _Deadline
) -> tuple[_Spec, re.Match[str] | None, int]:
    """Wait until the process is ready: the spec (a property's pattern read), match and offset past it."""
    __tracebackhide__ = True
    lines = _LogLines(info.logpath, deadline.at)
    match, seen, end = None, 0, 0
    # a pattern that is a property is read once the process runs (werkzeug's sends the new server a
    # request and returns the line it will log for it)
    read = _Retry(lambda: spec.with_pattern(info.name)) if spec.deferred is not None else None
    check = _Retry(lambda: bool(spec.check())) if spec.check is not None else None  # type: ignore[misc]

    def failure(cls: type[XProcessError], reason: str, exitcode: int | None = None) -> XProcessError:
        __tracebackhide__ = True
        return _failure(cls, info, spec, reason, exitcode, time.monotonic() - began, popen.pid)

    try:
        while True:
            exitcode = _exit_status(popen)  # first: nothing written before an exit is missed
            sleep = deadline.remaining()
            # 1. The pattern, if it is a property, read.
            if read is not None and exitcode is None:
                sleep = min(sleep, read.due())
                if read.value:
                    spec, read = read.value, None
            # 2. Each whole line is searched; a last line without its newline once output paused.
            if spec.pattern is not None and match is None:
                for line, line_end in lines.lines():
                    match = spec.pattern.search(line)
                    if match:
                        end = line_end
                        break
                    if spec.max_read_lines and line.strip():
                        seen += 1
                        if seen >= spec.max_read_lines:
                            raise failure(XProcessError, f"its pattern was not in its first {seen} lines")
                if match is None and not lines.partial_checked:
                    idle = time.monotonic() - lines.last_data
                    if idle >= _PAUSE or exitcode is not None:
                        line, end = lines.partial()
                        match = spec.pattern.search(line)
                    else:
                        sleep = min(sleep, _PAUSE - idle)
            # 3. startup_check, once the pattern matched.
            matched = read is None and (match is not None or spec.pattern is None)
            if matched and check is not None:
                sleep = min(sleep, check.due())
                if check.value:
                    check = None
            # 4. Ready, exited, or out of time.
            if matched and check is None:
                # a check that passed once the process exited answered for another: the daemon it
                # left (which no proof finds: it writes elsewhere), or another server on its port
                exitcode = _exit_status(popen) if spec.check is not None else None
                if exitcode is None:
                    return spec, match, end if spec.pattern is not None else info.logpath.stat().st_size
                raise failure(
                    ProcessExitedError,
                    f"exited with code {exitcode}: its startup_check passed, but for another process",
                    exitcode,
                )
            if exitcode is not None:
                raise failure(ProcessExitedError, f"exited with code {exitcode} before it was ready", exitcode)
            if deadline.expired():
                raise failure(StartupTimeoutError, f"was not ready after its timeout of {spec.timeout:g} s")
            # 5. Sleep until the log grows, the child exits, or a step is due.
            wake.wait(sleep)
    finally:
        lines.close()


def _wait_steps(
    info: XProcessInfo, spec: _Spec, popen: subprocess.Popen[bytes], wake: _Wakeups, began: float, deadline: _Deadline
) -> tuple[_Spec, re.Match[str] | None, int]:
    """Wait as pytest-xprocess 1.x did, through the starter's own steps (it overrides one of
    :data:`_STEPS`): ready when its ``wait(log_file)`` returns a true value while the process runs."""
    __tracebackhide__ = True
    starter = spec.starter

    def failure(cls: type[XProcessError], reason: str, exitcode: int | None = None) -> XProcessError:
        __tracebackhide__ = True
        return _failure(cls, info, spec, reason, exitcode, time.monotonic() - began, popen.pid)

    import datetime

    starter._max_time = datetime.datetime.now() + datetime.timedelta(seconds=deadline.remaining())  # type: ignore[attr-defined]
    starter._waiting = (popen, wake, deadline)
    try:
        with open(info.logpath, errors="surrogateescape") as log_file:
            ready = starter.wait(log_file)
    except TimeoutError as exc:  # what 1.x's steps raise at their deadline
        if isinstance(exc, XProcessError):
            raise
        raise failure(StartupTimeoutError, f"was not ready after its timeout of {spec.timeout:g} s ({exc})") from exc
    finally:
        starter._waiting = None
    exitcode = _exit_status(popen)
    if exitcode is not None:
        raise failure(ProcessExitedError, f"exited with code {exitcode} before it was ready", exitcode)
    if not ready:
        raise failure(XProcessError, f"was not ready: the starter's wait() returned {ready!r}")
    return spec, None, info.logpath.stat().st_size


def _failure(
    cls: type[XProcessError],
    info: XProcessInfo,
    spec: _Spec,
    reason: str,
    exitcode: int | None,
    waited: float,
    pid: int,
) -> XProcessError:
    """An error that says what happened to the start of ``pid`` and quotes the end of the log."""
    __tracebackhide__ = True
    pattern = spec.pattern.pattern if spec.pattern else None
    lines = [
        f"xprocess {info.name!r} {reason}",
        f"  command: {shlex.join(spec.args)}",
        f"  pattern: {pattern!r}" + ("  (and startup_check)" if spec.check else ""),
        f"  waited:  {waited:.2f} s",
        f"  log:     {info.logpath}",
    ]
    tail = [line[:_TAIL_WIDTH] for line in _tail(info.logpath, _TAIL_LINES)]
    if tail:
        lines.append(f"  last {len(tail)} lines of the log:" if len(tail) > 1 else "  last line of the log:")
        lines.extend("    " + line for line in tail)
    elif exitcode is None:
        lines.append(
            "  the log is empty: if the process does print its ready line, it may be buffering its "
            "output (Python: PYTHONUNBUFFERED=1 or print(..., flush=True); C programs: stdbuf -oL)"
        )
    else:  # nothing to flush: it wrote nothing, or wrote elsewhere (a daemon's log file)
        lines.append("  the log is empty: it wrote nothing to it before it exited")
    hints = _hints(info, spec, exitcode, tail, pid)
    if cls is StartupTimeoutError:
        hints.append(f"if it is only slow to get ready, raise the starter's timeout (now {spec.timeout:g} s)")
    lines.extend("  hint: " + hint for hint in hints)
    return cls("\n".join(lines), name=info.name, exitcode=exitcode, logpath=info.logpath, reason=reason)


_IN_USE_RE = re.compile(r"address already in use|eaddrinuse", re.I)


def _hints(info: XProcessInfo, spec: _Spec, exitcode: int | None, tail: list[str], pid: int) -> list[str]:
    """What typically causes a failed start of ``pid`` like this one, where it can be told."""
    hints = []
    if exitcode == 0:
        hints.append(
            "it exited with code 0 before it was ready: it probably went into the background "
            "(daemonized); run it in the foreground (redis-server: --daemonize no; nginx: -g 'daemon off;'; "
            "PostgreSQL: postgres -D DATADIR, not pg_ctl start)"
        )
    uid = _uid_of(spec.popen_kwargs.get("user"))
    if uid not in (None, 0, os.geteuid()) and "cwd" not in spec.popen_kwargs:
        hints.append(
            f"it runs as {_user(uid)}, who may not enter its working directory {spec.cwd} (xprocess keeps "
            f"{STATE_DIR} for {_user(os.geteuid())} alone): set popen_kwargs['cwd'] to a directory that user may "
            "write to"
        )
    in_use = [line for line in tail if _IN_USE_RE.search(line)]
    port = spec.port()
    ports = [port] if port is not None else []
    for line in in_use:  # "bind() to 127.0.0.1:8080 failed", "*:6379: bind: ..."
        ports += [int(p) for p in re.findall(r":(\d{2,5})\b", line) if 0 < int(p) < 65536]
    named = False
    for p in dict.fromkeys(ports):
        for holder, command in _port_holders(p):
            if _session_of(holder) == pid:  # this start's own (its marker may be gone: redis rewrites it)
                if exitcode is None and spec.pattern is not None:
                    hints.append(
                        f"its own process (pid {holder}) listens on port {p}: it runs, but no line of its log "
                        "matched the pattern; compare the pattern with its log"
                    )
            elif (_OS.marker(holder) or "").startswith(info._marker_prefix):  # found and stopped with the start
                hints.append(f"port {p} was held by pid {holder}, started for {info.name!r} (it has its marker): "
                             "it is stopped with the rest of this start")  # fmt: skip
            elif exitcode == 0:  # the daemon it left, maybe: nothing proves it ours (redis hides its marker)
                hints.append(
                    f"port {p} is in use by pid {holder}: {command}; if that is the daemon this start left, nothing "
                    f"proves it xprocess's, so it keeps running: stop it yourself (kill {holder})"
                )
            else:
                hints.append(f"port {p} is in use by pid {holder}: {command}")
            named = True
    if in_use and not named:
        hints.append(
            "its log says an address is already in use: another process listens on its port "
            "(one this user cannot see, or one that has ended since)"
        )
    return hints


def _uid_of(user: object) -> int | None:
    """The uid ``popen_kwargs["user"]`` names (checked already: a known name or uid), or None."""
    if isinstance(user, str):
        import pwd

        return pwd.getpwnam(user).pw_uid
    return user if isinstance(user, int) else None


def _session_of(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except OSError:
        return None


def _port_holders(port: int) -> list[tuple[int, str]]:
    """Pid and command line of each process listening on TCP ``port``."""
    import psutil

    try:
        pids = {
            c.pid
            for c in psutil.net_connections("tcp")
            if c.laddr and c.laddr.port == port and c.pid and c.status == psutil.CONN_LISTEN
        }
    except (psutil.Error, OSError):
        return []
    return [(pid, _OS.cmdline(pid)[:200] or "?") for pid in sorted(pids)]


# --- 5. the record: state.jsonl ---
# What a start records, as a _State, read back only from a file of this user's that no one else
# may write and only if every field holds; anything else is "not running" with a warning.


class _State(SimpleNamespace):
    """One start, as ``state.jsonl`` records it (under these names; ``spawned_at`` is "started")."""

    pid: int
    start: str  # the kernel's start time: with the pid, the identity of the process
    token: str  # the marker in its environment
    log: tuple[int, int]  # (device, inode) of the log its output goes to: the proof that it is ours
    fingerprint: dict[str, str]
    args: list[str] | None = None
    port: int | None = None
    forks: int | None = None  # the machine's fork count just before the spawn
    ready: bool = False
    spawned_at: float | None = None
    match: str | None = None  # the line that made it ready
    pattern: list[Any] | None = None  # [pattern, flags] that matched it
    stopped: str | None = None  # how it was stopped on purpose (--xkill, terminate(), at session end)
    idle: float | None = None  # its idle_timeout, the last one a session ensured it with
    released: float | None = None  # when a session holding it last ended (time.time())

    def to_json(self) -> dict[str, Any]:
        record = {"version": STATE_VERSION, **vars(self), "log": list(self.log)}
        record["started"] = record.pop("spawned_at", None)
        return record


_STATE_EXTRAS: Any = {
    "args": list, "port": int, "forks": int, "match": str, "pattern": list, "started": (int, float), "stopped": str,
    "idle": (int, float), "released": (int, float),
}  # fmt: skip


def _read_state(path: Path) -> _State | None:
    """The recorded state, or None (with a warning if one cannot be trusted or used). JSON lines: the
    start's record, then updates; a last line without its newline is ignored (an append in progress)."""
    state: Any = None
    try:
        with open(_open_checked(path), "rb") as f:
            st = os.fstat(f.fileno())
            if st.st_uid != os.geteuid() or st.st_mode & 0o022:
                problem = f"belongs to uid {st.st_uid} or is writable by others: not trusted (remove it)"
            elif st.st_size > _MAX_STATE:
                problem = f"is bigger than {_MAX_STATE >> 20} MiB, which xprocess never writes"
            else:
                text = f.read(st.st_size).decode("utf-8")  # (a read of _MAX_STATE allocates it whole)
                problem = ""
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:  # a symbolic link: ELOOP
        problem = f"cannot be read ({getattr(exc, 'strerror', None) or exc}; a symbolic link is refused)"
    if not problem:
        with contextlib.suppress(ValueError, TypeError, AttributeError, RecursionError):
            record = json.loads(text.partition("\n")[0])
            for line in text.split("\n")[1:-1]:
                record.update(json.loads(line))
            state = record
        version = state.get("version") if isinstance(state, dict) else None
        if not isinstance(state, dict):
            problem = "is not valid JSON lines (empty, truncated or garbage)"
        elif isinstance(version, int) and version > STATE_VERSION:
            problem = f"was written by a newer xprocess (format {version})"
        elif isinstance(version, int) and version < STATE_VERSION:
            problem = f"was written by an older xprocess (format {version}); its processes are found by their marker"
        elif not (
            version == STATE_VERSION
            and type(state.get("pid")) is int
            and 1 < state["pid"] < 2**31
            and isinstance(state.get("start"), str)
            and isinstance(state.get("token"), str)
            and _TOKEN_RE.match(state["token"])
            and isinstance(state.get("fingerprint"), dict)
            and isinstance(state.get("log"), list)
            and len(state["log"]) == 2
            and all(type(n) is int and 0 <= n < 2**64 for n in state["log"])  # st_dev, st_ino: unsigned 64-bit
        ):
            problem = "does not hold a recorded process"
        else:
            extra = {
                k: v
                for k, v in state.items()
                if isinstance(v, _STATE_EXTRAS.get(k, ())) and type(v) is not bool and v == v and v not in _INFINITE
            }  # (JSON has no NaN or Infinity, but Python's parser reads them)
            return _State(
                pid=state["pid"], start=state["start"], token=state["token"], log=tuple(state["log"]),
                fingerprint=state["fingerprint"], ready=bool(state.get("ready")), spawned_at=extra.pop("started", None),
                **extra,
            )  # fmt: skip
    _warn(f"{path} {problem}; treating the process as not running")
    return None


# Appending keeps the ready transition cheap: replacing a file frees the old one's blocks, which
# costs a quarter of a millisecond on a disk mounted with ``discard``.
def _write_state(path: Path, state: _State, update: dict[str, Any] | None = None) -> None:
    """Replace the state file with ``state``, or append ``update`` (in ``state`` already) as one line."""
    try:
        if update is not None:
            try:
                return _write_private(path, (json.dumps(update) + "\n").encode(), "append")
            except OSError as exc:
                if exc.errno != errno.ELOOP:
                    raise
        _write_private(path, (json.dumps(state.to_json()) + "\n").encode())
    except OSError as exc:
        raise XProcessError(
            f"xprocess cannot write its state {path}: {exc.strerror or exc} (free some space or make it writable)"
        ) from exc
    return None


def _mark_stopped(recorded: _Recorded, how: str) -> None:
    """Note in its state that ``recorded``'s process was stopped on purpose (``how``): its next
    start is told as a start, not as a restart because "it had stopped". Only if the file still
    holds that start (one replaced since is another inode: the note goes nowhere)."""
    state = recorded.state
    if state is None:
        return
    with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
        fd = _open_checked(recorded.info.statepath, os.O_RDWR | os.O_APPEND)
        try:
            first = os.read(fd, 1 << 20).partition(b"\n")[0]  # (a longer first line: no note)
            if json.loads(first)["token"] == state.token:
                os.write(fd, (json.dumps({"stopped": how}) + "\n").encode())
                state.stopped = how
        finally:
            os.close(fd)


def _stopped_on_purpose(info: XProcessInfo, pid: int) -> str:
    """How the process ``pid`` was stopped on purpose, as its state notes (``_mark_stopped``), or ""."""
    with warnings.catch_warnings():  # a state that cannot be trusted is warned about where it is used
        warnings.simplefilter("ignore")
        state = _read_state(info.statepath)
    return state.stopped if state is not None and state.pid == pid and isinstance(state.stopped, str) else ""


def _warn(message: str) -> None:
    """Warn once, with an :class:`XProcessWarning`, at the first line outside xprocess, pytest and pluggy."""
    import _pytest
    import pluggy

    skip = (__file__, *(os.path.dirname(m.__file__) + os.sep for m in (_pytest, pluggy, pytest) if m.__file__))
    frame = sys._getframe(1)
    while frame.f_back is not None and frame.f_code.co_filename.startswith(skip):
        frame = frame.f_back
    registry = frame.f_globals.setdefault("__warningregistry__", {})
    warnings.warn_explicit(
        XProcessWarning(message),
        XProcessWarning,
        frame.f_code.co_filename,
        frame.f_lineno,
        module=frame.f_globals.get("__name__", "xprocess"),
        registry=registry,
        module_globals=frame.f_globals,
    )


# --- 6. the process table ---
# What the plugin reads of processes, through one of two readers chosen once, at import: Linux's
# /proc (a few small reads each) or psutil (macOS). A caller never asks the platform: it asks _OS.


class _Proc:
    """A snapshot of one process."""

    __slots__ = ("pid", "ppid", "sid", "since", "start", "stopped", "zombie")

    def __init__(
        self, pid: int, start: str, since: float, ppid: int, sid: int, zombie: bool, stopped: bool = False
    ) -> None:
        self.pid, self.ppid, self.sid, self.zombie = pid, ppid, sid, zombie
        self.start = start  # with the pid, the identity of a process: a recycled pid has another start
        self.since = since  # the start as a number, to order processes (clock ticks, or seconds)
        self.stopped = stopped  # SIGSTOP: the kernel still accepts its connections, it answers none

    def __repr__(self) -> str:
        return f"<process {self.pid}>"

    def now(self) -> _Proc | None:
        """This process as it is now, if its pid still names it (not a recycled pid), else None."""
        now = _OS.proc(self.pid)
        return now if now is not None and now.start == self.start else None


def _read_proc(name: str) -> bytes | None:
    """The content of ``/proc/<name>``, or None if it cannot be read."""
    try:
        fd = os.open(f"/proc/{name}", os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        _raise_if_scarce(exc)
        return None
    try:
        chunks = [os.read(fd, 65536)]
        while chunks[-1]:
            chunks.append(os.read(fd, 65536))
    except OSError:
        return None
    finally:
        os.close(fd)
    return b"".join(chunks)


@functools.lru_cache(maxsize=1)
def _boot_id() -> str:
    return (_read_proc("sys/kernel/random/boot_id") or b"").decode().strip()


class _ProcFS:
    """The process table, read from Linux's ``/proc``."""

    def proc(self, pid: int) -> _Proc | None:
        """A snapshot of process ``pid``, or None if there is none (or it cannot be seen)."""
        data = _read_proc(f"{pid}/stat") or b""
        fields = data[data.rfind(b")") + 2 :].split(None, 20)
        try:  # state, ppid, pgrp, session, ... starttime (fields 3, 4, 5, 6 and 22 of proc(5))
            ticks, state = int(fields[19]), fields[0]
            return _Proc(
                pid, f"{_boot_id()}:{ticks}", ticks, int(fields[1]), int(fields[3]), state == b"Z", state in b"Tt"
            )
        except (IndexError, ValueError):
            return None

    def pids(self) -> list[int]:
        try:
            return [int(n) for n in os.listdir("/proc") if n.isdigit()]
        except OSError as exc:
            _raise_if_scarce(exc)
            raise

    # Servers that set their process title (Redis, PostgreSQL's workers) overwrite the memory the
    # environment is read from: they show none.
    def marker(self, pid: int) -> str | None:
        """The ``XPROCESS_ID`` in ``pid``'s environment: "" when it shows none, None when unreadable."""
        data = _read_proc(f"{pid}/environ")
        if data is None:
            return None
        at = data.find(b"\0" + _MARKER_BYTES)
        if at < 0 and not data.startswith(_MARKER_BYTES):
            return ""
        value = data[at + 1 + len(_MARKER_BYTES) :] if at >= 0 else data[len(_MARKER_BYTES) :]
        return value.split(b"\0", 1)[0].decode("ascii", "replace")

    # /proc/<tid> resolves for a thread too, and a signal to a thread id reaches its whole process.
    def is_process(self, pid: int) -> bool:
        """Whether ``pid`` is a process, not one of its threads."""
        status = _read_proc(f"{pid}/status") or b""
        at = status.find(b"\nTgid:")
        return at >= 0 and status[at + 6 :].split(None, 1)[:1] == [str(pid).encode()]

    def stdout_files(self, pid: int) -> list[tuple[str, tuple[int, int], int, int]]:
        """Where ``pid``'s stdout and stderr go, if files: path (maybe "... (deleted)"), ident, owner, fd."""
        found = []
        for fd in (1, 2):
            link = f"/proc/{pid}/fd/{fd}"
            with contextlib.suppress(OSError):
                st = os.stat(link)  # the open file itself, removed or not
                if stat.S_ISREG(st.st_mode):
                    found.append((os.readlink(link), (st.st_dev, st.st_ino), st.st_uid, fd))
        return found

    # The cheap look of a sweep through every process: a readlink; the file itself is looked at
    # only for a match. It reads fd 1, and fd 2 only where fd 1 went to /dev/null: a server that
    # keeps its stderr on the log but not its stdout does that (a daemon); one that moves its
    # stderr to a file of its own (nginx's error_log) keeps its stdout.
    def output_dirs(self, pid: int) -> list[str]:
        """The control directories of the logs ``pid`` writes to."""
        try:
            out = os.readlink(f"/proc/{pid}/fd/1")
            if out == "/dev/null":
                out = os.readlink(f"/proc/{pid}/fd/2")
        except OSError:
            return []
        d = _control_dir_of(out)
        return [d] if d else []

    def held_file(self, pid: int, fd: int, path: str = "") -> str:
        """A path that opens the file ``pid`` holds as ``fd`` (it reaches it once removed, too)."""
        return f"/proc/{pid}/fd/{fd}"

    @functools.cached_property
    def lists_children(self) -> bool:
        """Whether the kernel lists each thread's children (``/proc/<pid>/task/<tid>/children``)."""
        return os.path.exists("/proc/thread-self/children")

    # Cheaper than reading every process for its parent: a sweep after a lost state walks down
    # from the few it found.
    def children(self, pid: int, exempt: frozenset[int]) -> list[_Proc]:
        """The children of ``pid`` (of all its threads), but the ``exempt``."""
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError as exc:
            _raise_if_scarce(exc)
            return []
        pids = {int(n) for tid in tids for n in (_read_proc(f"{pid}/task/{tid}/children") or b"").split()}
        return [p for p in map(self.proc, sorted(pids - exempt)) if p is not None and p.ppid == pid]

    def forks(self) -> int | None:
        """How many processes (and threads) the machine has created since boot."""
        data = _read_proc("stat") or b""
        at = data.find(b"\nprocesses ")
        return int(data[at + 11 :].split(None, 1)[0]) if at >= 0 else None

    # Pids are allocated cyclically, so the ones newer than a recorded pid lie between it and the
    # last one allocated, until that many forks could have wrapped past it. On a busy machine this
    # spares reading a thousand processes that are older than the server.
    def candidate_pids(self, states: Sequence[_State | None]) -> list[int]:
        """The pids that may be of processes started after each recorded start."""
        return self.pids_after([(s.pid, s.forks) if s and self.earliest_start(s) else None for s in states])

    def clock(self) -> float:
        """Now, as :attr:`_Proc.since` counts (clock ticks since boot), rounded down to a tick."""
        boot = time.clock_gettime(time.CLOCK_BOOTTIME)  # type: ignore[attr-defined,unused-ignore]
        return int(boot * os.sysconf("SC_CLK_TCK"))

    def mark(self) -> tuple[int, int | None] | None:
        """Where the handing out of pids stands: the last pid and the forks so far (``pids_after``)."""
        with contextlib.suppress(ValueError):
            return int(_read_proc("sys/kernel/ns_last_pid") or b""), self.forks()
        return None

    def pid_max(self) -> int | None:
        """The highest pid plus one: where handing them out wraps around."""
        with contextlib.suppress(ValueError):
            return int(_read_proc("sys/kernel/pid_max") or b"")
        return None

    def in_use(self) -> int:
        """At least how many pids are in use: every thread of the machine (``/proc/loadavg``)."""
        with contextlib.suppress(IndexError, ValueError):
            return int((_read_proc("loadavg") or b"").split()[3].partition(b"/")[2])
        return len(self.pids())

    # A stop, or a restart soon after a start, follows the few pids handed out since its mark:
    # probing them costs less than listing a busy machine's thousand processes.
    def pids_after(self, marks: Sequence[tuple[int, int | None] | None]) -> list[int]:
        """The pids that may be of processes created after each mark (a pid and the forks then);
        all of them where that cannot be told."""
        last = (self.mark() or (0, None))[0]
        lows = [mark[0] for mark in marks if mark is not None]
        few = bool(marks) and len(lows) == len(marks) and all(low <= last <= low + _PROBED for low in lows)
        # (where that cannot be told, after a wrap or without counts, every pid is new: the mark's too)
        if few and not self.handed_out(marks, self.in_use())(min(lows)):
            return [pid for pid in range(min(lows) + 1, last + 1) if self.is_process(pid)]
        pids = self.pids()
        is_new = self.handed_out(marks, len(pids))
        return [pid for pid in pids if is_new(pid)]

    def handed_out(self, marks: Sequence[tuple[int, int | None] | None], taken: int) -> Callable[[int], bool]:
        """Whether a pid may have been handed out since each of ``marks``, ``taken`` pids being in
        use: true of every pid where that cannot be told."""
        now, pid_max = self.mark(), self.pid_max()
        last, forks = now if now is not None else (0, None)
        if forks is None or pid_max is None:
            return lambda pid: True
        room = pid_max - 300 - taken  # ids to hand out before a wrap
        for mark in marks:
            if mark is None or mark[1] is None or not 0 <= forks - mark[1] < room:
                return lambda pid: True
        starts = [mark[0] for mark in marks]  # type: ignore[index]
        return lambda pid: any(p < pid <= last if p <= last else pid > p or pid <= last for p in starts)

    # Every start sweeps what earlier ones left, so no process of a name is older than its
    # recorded start; a start of another boot says nothing.
    def earliest_start(self, state: _State | None) -> float:
        """The earliest start a process of ``state``'s name can have (with nothing recorded: any)."""
        boot, _, start = state.start.rpartition(":") if state is not None else ("", "", "")
        with contextlib.suppress(ValueError):
            return float(start) if boot == _boot_id() else 0.0
        return 0.0

    def lock_holders(self, ident: tuple[int, ...]) -> list[int]:
        """The pids of other processes holding a lock on the file ``ident`` (``/proc/locks``)."""
        dev, ino = ident
        file_id = f"{os.major(dev):02x}:{os.minor(dev):02x}:{ino}".encode()
        pids = set()
        for line in (_read_proc("locks") or b"").splitlines():
            parts = line.split()  # "1: FLOCK  ADVISORY  READ 1234 fe:00:5678 0 EOF"; waiters have "->"
            if len(parts) >= 6 and parts[1] == b"FLOCK" and parts[5] == file_id and parts[4].isdigit():
                pids.add(int(parts[4]))
        return sorted(pids - {os.getpid()})

    def cmdline(self, pid: int) -> str:
        """``pid``'s command line, escaped for a terminal ("" if it cannot be read)."""
        data = (_read_proc(f"{pid}/cmdline") or b"").rstrip(b"\0").replace(b"\0", b" ")
        return _escape(data.decode("utf-8", "replace"))


class _Portable(_ProcFS):
    """The process table through psutil, where there is no ``/proc`` to read (macOS)."""

    def proc(self, pid: int) -> _Proc | None:
        import psutil

        try:
            p = psutil.Process(pid)
            with p.oneshot():
                status, created = p.status(), p.create_time()
                zombie = status == psutil.STATUS_ZOMBIE
                stopped = status in (psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP)
                return _Proc(pid, repr(created), created, p.ppid(), 0 if zombie else os.getsid(pid), zombie, stopped)
        except psutil.Error:
            return None
        except OSError as exc:
            _raise_if_scarce(exc)
            return None

    def pids(self) -> list[int]:
        import psutil

        return psutil.pids()

    def marker(self, pid: int) -> str | None:
        import psutil

        try:
            return psutil.Process(pid).environ().get(MARKER_ENV, "")
        except (psutil.Error, OSError):
            return None

    def is_process(self, pid: int) -> bool:
        import psutil

        return bool(psutil.pid_exists(pid))  # (False of a thread id, where /proc shows them)

    def stdout_files(self, pid: int) -> list[tuple[str, tuple[int, int], int, int]]:
        import psutil

        found: list[tuple[str, tuple[int, int], int, int]] = []
        with contextlib.suppress(psutil.Error, OSError):
            for f in psutil.Process(pid).open_files():
                if getattr(f, "fd", -1) in (1, 2):
                    st = os.stat(f.path)  # by its path: without /proc, the file now there
                    found.append((f.path, (st.st_dev, st.st_ino), st.st_uid, f.fd))
        return found

    def output_dirs(self, pid: int) -> list[str]:
        return [d for d in (_control_dir_of(path) for path, _, _, _ in self.stdout_files(pid)) if d]

    def held_file(self, pid: int, fd: int, path: str = "") -> str:
        return path

    lists_children = False

    def forks(self) -> int | None:
        return None

    def candidate_pids(self, states: Sequence[_State | None]) -> list[int]:
        return self.pids()

    def clock(self) -> float:
        return float("-inf")  # psutil's start times are off by up to a second: _terminate lists the pids

    def mark(self) -> tuple[int, int | None] | None:
        return None

    def pids_after(self, marks: Sequence[tuple[int, int | None] | None]) -> list[int]:
        return self.pids()

    def earliest_start(self, state: _State | None) -> float:
        with contextlib.suppress(ValueError):
            return float(state.start) if state is not None else 0.0
        return 0.0

    def lock_holders(self, ident: tuple[int, ...]) -> list[int]:
        return []

    def cmdline(self, pid: int) -> str:
        import psutil

        with contextlib.suppress(psutil.Error, OSError):
            return _escape(" ".join(psutil.Process(pid).cmdline()))
        return ""


_OS: _ProcFS = _ProcFS() if _PROC_FS else _Portable()  # tests/psutil_path/sitecustomize.py swaps it


# --- 7. ownership: which processes are ours ---
# A process is ours when the plugin started it for this name in this project, or it descends from
# one that was, proven by evidence the plugin put there itself, never by "same user":
#
# - its stdout or stderr is the log file the plugin created for that start. The file (device and
#   inode, recorded in the state) stays on fd 1/2 of the server and its children through a
#   rewritten title or environment, another user id, a renamed project and a deleted .xprocess
#   (the kernel then names it "<path> (deleted)"); a copied project's log is another inode;
# - or its environment still shows the marker ``XPROCESS_ID=<marker prefix>:<start id>``.
#
# The recorded process must also be a process (not a thread) with the recorded pid *and* exact
# start (clock ticks since boot, with the boot id). Every caller asks :func:`_owned` (through
# _Recorded); :func:`_find_ours` adds its descendants, its session, and every process whose output
# is a log of the name in this project's control directory or whose marker names it (what earlier
# starts left when their state was lost), with their descendants. Never pid 1, this process or its
# ancestors.


def _control_dir_of(path: str) -> str | None:
    """The directory of the file ``path`` (removed or not): for a log, its control directory, under
    whatever name it was given there since (logrotate's ``xprocess.log-20261206``, a user's ``.old``)."""
    if path.endswith(" (deleted)"):
        path = path[: -len(" (deleted)")]
    return path.rpartition("/")[0] or None


def _exempt() -> frozenset[int]:
    """Pids never signalled: init, this process and its ancestors (a state may name them)."""
    return _ancestors(os.getpid())


# Still right later: an orphan is adopted by init or by a subreaper, an ancestor already here.
@functools.lru_cache(maxsize=4)
def _ancestors(me: int) -> frozenset[int]:
    pids = {0, 1, me}
    pid = os.getppid()
    while pid not in pids:
        pids.add(pid)
        proc = _OS.proc(pid)
        if proc is None:
            break
        pid = proc.ppid
    return frozenset(pids)


def _owned(state: _State | None, info: XProcessInfo) -> tuple[_Proc | None, str]:
    """The recorded process (alive or a zombie) if proven ours, else why not (one of §1's reasons):
    its pid and start, writing to its recorded log, which is this project's, or showing its marker."""
    if state is None:
        return None, _NOTHING
    pid = state.pid
    proc = _OS.proc(pid)
    if proc is None:
        return None, _STOPPED
    if proc.start != state.start or pid in _exempt() or not _OS.is_process(pid):
        return None, _RECYCLED
    if proc.zombie:  # it has ended (a zombie shows no files, no environment): nothing to prove or signal
        return proc, ""
    outputs = _OS.stdout_files(pid)
    if any(ident == state.log for _, ident, _, _ in outputs):
        try:
            st = os.lstat(info.logpath)
            here = (st.st_dev, st.st_ino) == state.log and st.st_nlink == 1  # a hard link: another project's too
        except OSError:
            here = False
        if here or any(
            ident == state.log and (_control_dir_of(path) == info._kernel_dir or _moved_from(path, state, info))
            for path, ident, _, _ in outputs
        ):
            return proc, ""
        return None, _COPIED
    marker = _OS.marker(pid)
    if marker and marker == state.token and marker.startswith(info._marker_prefix):
        return proc, ""
    return None, _FOREIGN


# ``mv`` to another file system copies the project and removes the original: the server holds
# the removed log, and the state (copied with it) holds the marker minted for the old path.
def _moved_from(path: str, state: _State, info: XProcessInfo) -> bool:
    """Whether ``path``, the recorded log as a process holds it, is the removed log of the project
    this one was moved from: a project gone, whose key for this name the recorded marker has."""
    statedir, _, name = (_control_dir_of(path) or "").rpartition("/")
    project, _, base = statedir.rpartition("/")
    if name != info.name or base != STATE_DIR or os.path.lexists(project or "/"):
        return False
    marker = _OS.marker(state.pid)  # where it shows, the very token recorded (a key anyone can compute)
    return state.token.startswith(_key(statedir, name) + ":") and (not marker or marker == state.token)


def _key(statedir: str, name: str) -> str:
    """The key of a name's markers: a digest of the (resolved) state directory and the name."""
    import hashlib

    return hashlib.sha256(os.fsencode(statedir) + b"\0" + os.fsencode(name)).hexdigest()[:16]


class _Recorded:
    """What is recorded under a name (``state``), and its process if :func:`_owned` proves it, else why not."""

    __slots__ = ("info", "proc", "state", "why")

    def __init__(self, info: XProcessInfo, state: _State | None) -> None:
        self.info = info
        self.state = state
        self.proc, self.why = _owned(state, info)

    @classmethod
    def read(cls, info: XProcessInfo) -> _Recorded:
        return cls(info, info._state())

    @property
    def running(self) -> bool:
        return self.proc is not None and not self.proc.zombie

    @property
    def foreign(self) -> bool:
        """Whether the state is another project's or forged: nothing in it is used."""
        return self.why in (_COPIED, _FOREIGN)

    @property
    def guide(self) -> _State | None:
        """The state, if it may narrow the search for the name's processes: proven, or its pid unused."""

        return self.state if self.proc is not None or self.why == _STOPPED else None

    def reason(self) -> str:
        return self.why.format(pid=self.state.pid if self.state else None)


def _find_ours(targets: Mapping[str, _Recorded], tree: bool) -> dict[str, list[_Proc]]:
    """The live processes of each name: the recorded process if proven; with ``tree``, also its
    descendants, its session, and every process writing to a log of the name (a file of this
    user's) or showing its marker: what left the session, or a lost state's start left behind."""
    found: dict[str, dict[int, _Proc]] = {name: {} for name in targets}
    roots: dict[int, str] = {}
    keys: dict[str, str] = {}
    floor = float("inf")  # no process carrying a marker of these names started before this one
    for name, recorded in targets.items():
        root = recorded.proc
        if root is not None:
            found[name][root.pid] = root
            roots[root.pid] = name
            if recorded.state and _OS.marker(root.pid) == recorded.state.token:  # a renamed project's old key
                keys.setdefault(recorded.state.token[:17], name)  # only if the proven process carries it
        floor = min(floor, _OS.earliest_start(recorded.guide))
    if tree:
        exempt = _exempt()
        keys.update({r.info._marker_prefix: name for name, r in targets.items()})
        dirs = {r.info._kernel_dir: name for name, r in targets.items()}
        me = os.geteuid()

        def evidence(pid: int) -> str | None:
            """The name whose log ``pid`` writes to, or whose marker it shows, if any."""
            outputs = _OS.output_dirs(pid)
            owner = next((dirs[d] for d in outputs if d in dirs), None)
            if owner is not None and not any(
                uid == me and dirs.get(_control_dir_of(path) or "") == owner
                for path, _, uid, _ in _OS.stdout_files(pid)
            ):
                owner = None  # a log of ours is a file this user created
            if owner is None:
                marker = _OS.marker(pid)
                owner = keys.get(marker[:17]) if marker and _TOKEN_RE.match(marker) else None
                if owner is not None and elsewhere(pid, outputs):
                    owner = None  # a project renamed since: its processes carry the marker of our path
            return owner

        # A server's child writing to a pipe or a socket shows no log of its own: its parent's or
        # its session leader's (the server, which leads its session even once the child is adopted).
        def elsewhere(pid: int, outputs: list[str]) -> bool:
            """Whether ``pid``, its parent or its session leader writes to another project's log."""
            p = _OS.proc(pid)
            for kin in {p.ppid, p.sid} - exempt - {pid} if p is not None else ():
                outputs = outputs + _OS.output_dirs(kin)
            return any(d not in dirs and d.rpartition("/")[0].endswith("/" + STATE_DIR) for d in outputs)

        children: dict[int, list[_Proc]] = {}
        for pid in _OS.candidate_pids([r.guide for r in targets.values()]):
            if pid in exempt:
                continue
            # with no tree to walk (the state was lost), a process is read only if it is of a name
            owner = evidence(pid) if not roots else None
            p = _OS.proc(pid) if roots or owner is not None else None
            if p is None:
                continue
            if roots:
                children.setdefault(p.ppid, []).append(p)
                owner = roots.get(p.sid) if p.pid not in roots else None
                if owner is None and p.since >= floor:  # only they can be of these names: look
                    owner = evidence(p.pid)
            elif p.since < floor:
                owner = None
            if owner is not None:
                found[owner][p.pid] = p
        listed = not roots and _OS.lists_children  # the kernel's list of children, where a map would be read
        if not roots and any(found.values()) and not listed:  # what a lost state's start left: its children too
            for pid in _OS.pids():
                p = _OS.proc(pid) if pid not in exempt else None
                if p is not None:
                    children.setdefault(p.ppid, []).append(p)
        for procs in found.values():  # descendants, down from the recorded process and each one found
            todo = list(procs)
            while todo:
                pid = todo.pop()
                for child in _OS.children(pid, exempt) if listed else children.get(pid, ()):
                    if child.pid not in procs:
                        procs[child.pid] = child
                        todo.append(child.pid)
    return {name: [p for p in procs.values() if not p.zombie] for name, procs in found.items()}


# --- 8. stopping and leases ---
# Signals only to a process whose pid still names it, SIGKILL after the grace, orphans reaped
# here. A lease is a shared flock on the log a process writes to, held by each session using it:
# locking it exclusively proves none does.


def _signal(proc: _Proc, sig: int) -> None:
    """Send ``sig`` to ``proc`` if its pid still names it (through a pidfd: no recycling in between)."""
    try:
        fd = _pidfd(proc.pid)
    except ValueError:
        return
    try:
        if proc.now() is None or (fd is None and not _OS.is_process(proc.pid)):
            return
        with contextlib.suppress(ProcessLookupError):
            if fd is not None:
                signal.pidfd_send_signal(fd, sig)  # type: ignore[attr-defined,unused-ignore]
            else:
                os.kill(proc.pid, sig)
    finally:
        if fd is not None:
            os.close(fd)


def _wait_gone(procs: list[_Proc], deadline: _Deadline, zombies_gone: bool) -> list[_Proc]:
    """Wait until no process of ``procs`` runs (or exists, ``zombies_gone`` false); return the rest."""
    delay = 0.001

    def there(p: _Proc) -> bool:
        now = p.now()
        if now is None:
            return False
        if now.zombie:
            with contextlib.suppress(ChildProcessError):  # reaped if it is this process's child
                if os.waitpid(p.pid, os.WNOHANG)[0]:
                    return False
        return not (zombies_gone and now.zombie)

    while True:
        procs = [p for p in procs if there(p)]
        if not procs or deadline.expired():
            return procs
        delay = deadline.sleep(delay)


# Some inits reap orphans only every few seconds.
@contextlib.contextmanager
def _subreaper() -> Iterator[None]:
    """Make this process the reaper of its orphaned descendants for a while (Linux)."""
    libc = _libc()
    if libc is None:
        yield
        return
    import ctypes

    was = ctypes.c_int(0)
    libc.prctl(_PR_GET_CHILD_SUBREAPER, ctypes.byref(was), 0, 0, 0)
    if not was.value:
        libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    try:
        yield
    finally:
        if not was.value:
            libc.prctl(_PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


def _terminate(found: Mapping[str, Sequence[_Proc]], timeout: float) -> dict[str, int]:
    """SIGTERM (and SIGCONT) what :func:`_find_ours` found, SIGKILL what outlives ``timeout``, wait
    until it is gone: per name 1 (terminated), 0 (nothing to do) or -1 (something survived)."""
    owner = {p.pid: name for name, procs in found.items() for p in procs}
    failed: set[str] = set()
    pending = [p for procs in found.values() for p in procs]
    everything = list(pending)
    if not pending:
        return {name: 0 for name in found}
    mark, began = _OS.mark(), _OS.clock()
    existed = frozenset(_OS.pids()) if mark is None else frozenset()  # no pid range to read: the pids now
    with _subreaper():  # the orphans of what dies are reaped here, not whenever init gets to them
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, _KILL_WAIT)):
            refused, deadline = set(), _Deadline(wait)  # a bad timeout is refused before any signal
            todo = pending
            while todo:
                for proc in todo:
                    try:
                        _signal(proc, sig)
                        if sig == signal.SIGTERM and proc.stopped:
                            _signal(proc, signal.SIGCONT)
                    except PermissionError:  # not ours to signal after all: no use waiting for it
                        refused.add(proc)
                        failed.add(owner[proc.pid])
                pending = _wait_gone([p for p in pending if p not in refused], deadline, zombies_gone=True)
                born = _forked(mark, began, existed, everything, owner)  # a master respawning workers, a shutdown hook
                pending += born
                todo = [] if deadline.expired() else born  # past it, SIGKILL: a respawner stops then
            if not pending:
                break
        failed.update(owner[p.pid] for p in pending)
        left = _wait_gone(everything, _Deadline(_ZOMBIE_WAIT), zombies_gone=False)
    if left:
        _logger.info("xprocess: %s left as zombies for their parent (or init) to reap", [p.pid for p in left])
    return {name: (-1 if name in failed else 1 if procs else 0) for name, procs in found.items()}


def _forked(
    mark: tuple[int, int | None] | None,
    began: float,
    existed: frozenset[int],
    stopping: list[_Proc],
    owner: dict[int, str],
) -> list[_Proc]:
    """What ``stopping`` forked since ``mark`` (added to it and ``owner``): children of theirs, or,
    their parent gone (adopted here or by init), members of the sessions they lead."""
    pids = _OS.pids_after([mark])
    is_new = _OS.handed_out([mark], _OS.in_use()) if mark is not None else lambda pid: pid not in existed
    known = {p.pid: p for p in stopping}

    # A parent or leader is matched by its pid, which a stranger may hold by now (pids wrap around,
    # root can pick the next one): that pid still names the process being stopped, or nothing
    # handed out since the stop began.
    def still(pid: int) -> _Proc | None:
        was = known.get(pid)
        if was is None:
            return None
        holder = _OS.proc(pid)
        return None if (holder.start != was.start if holder is not None else is_new(pid)) else was

    born = []
    for pid in pids:
        if pid in owner or not is_new(pid) or pid in _exempt():
            continue
        p = _OS.proc(pid)
        if p is None or p.since < began:
            continue
        parent = still(p.ppid) or still(p.sid)  # (pytest's own session leader is never stopped)
        if parent is not None:
            owner[pid] = owner[parent.pid]
            born.append(p)
    stopping += born
    return born


def _open_inode(paths: Sequence[str], ident: tuple[int, ...]) -> int | None:
    """An fd on the file ``ident`` through the first of ``paths`` that opens it, or None
    (``/proc/<pid>/fd/<n>`` reaches a removed file)."""
    for path in filter(None, paths):
        with contextlib.suppress(OSError):
            return _open_checked(path, ident=ident, follow=path.startswith("/proc/"))
    return None


def _lease_files(procs: Sequence[_Proc], recorded: _Recorded) -> dict[tuple[int, int], list[str]]:
    """The name's log files ``procs`` write to (their leases' files), each with paths that open it."""
    ident = recorded.state.log if recorded.state else None
    # the recorded log by its path too: a server that moved its output to a file of its own once
    # running writes to it no more, and sessions lease it still
    logs: dict[tuple[int, int], list[str]] = {ident: [os.fspath(recorded.info.logpath)]} if ident and procs else {}
    for p in procs:
        for path, file, _, fd in _OS.stdout_files(p.pid):
            if file == ident or _control_dir_of(path) == recorded.info._kernel_dir:
                logs.setdefault(file, []).append(_OS.held_file(p.pid, fd, path))
    return logs


# flock converts a lock by unlocking it first: when the conversion of this session's own lease
# fails, its lock is gone, and the caller takes it again.
def _lock_out(logs: Mapping[tuple[int, int], Sequence[str]], own: int | None) -> list[int]:
    """Lock each of ``logs`` exclusively (``own``, this session's lease, converted) and return the
    fds: no session holds a lease then, or can take one. ``_InUse`` if one does."""
    own_id = None
    if own is not None:
        st = os.fstat(own)
        own_id = (st.st_dev, st.st_ino)
    held: list[int] = []
    for ident, paths in logs.items():
        fd = own if ident == own_id else _open_inode(paths, ident)
        if fd is None:
            continue  # gone meanwhile
        held.append(fd)
        if not _flock(fd):
            for h in held:
                if h != own:
                    os.close(h)
            raise _InUse(_describe_holders(ident))
    if own is not None and own not in held:
        os.close(own)  # its process is gone: nothing to hold
    return held


def _describe_holders(ident: tuple[int, ...]) -> str:
    """Who holds a lease on the log ``ident``: pid and command line of each, for a message."""
    described = [f"pid {pid}: {_command(pid)}" for pid in _OS.lock_holders(ident)]
    return "; ".join(described) or "another session"


_XDIST_WORKER = " -c import sys;exec(eval(sys.stdin.readline()))"  # how execnet starts a pytest-xdist worker


def _command(pid: int) -> str:
    """``pid``'s command line, cut for a message; an xdist worker's says only how execnet runs it:
    its controller's is told."""
    cmd = _OS.cmdline(pid)
    proc = _OS.proc(pid) if cmd.endswith(_XDIST_WORKER) else None
    if proc is not None:
        return f"an xdist worker of pid {proc.ppid}: {_OS.cmdline(proc.ppid)[:120] or '?'}"
    return cmd[:120] or "?"


# Who may stop what: the one place that says it. Per policy, the name's start lock, and a lease
# another session holds:
#   _FOR_START       held by the caller               raises _InUse; this session's own lease is kept
#   _AT_SESSION_END  taken if free, else "in use"     the name is spared: "in use"
#   _FOR_XKILL       not taken: an order              overridden, and its holders named
#   _AFTER_DEATH     as at session end; held by ``members`` only (the xdist workers of the session
#                    that died, still running): overridden
#   _WHEN_IDLE       as at session end
def _stop(
    targets: Mapping[str, _Recorded],
    policy: str,
    leases: dict[str, int] | None = None,
    members: Collection[int] = (),
) -> dict[str, tuple[int | str, str]]:
    """Stop what runs under each name, all at once, as ``policy`` allows (ending this session's
    ``leases``): per name 1, 0, -1 (see :func:`_terminate`) or "in use", and who held it."""
    found = _find_ours(targets, tree=True)
    results: dict[str, tuple[int | str, str]] = {}
    held: list[int] = []
    try:
        for name, recorded in targets.items():
            logs = _lease_files(found[name], recorded)
            if policy == _FOR_XKILL:
                holders = "; ".join(_describe_holders(ident) for ident in logs if _OS.lock_holders(ident))
                results[name] = (0, holders)
                continue
            own = leases.pop(name, None) if leases is not None else None  # its use by this session ends
            try:
                if policy != _FOR_START:
                    _lock_now(recorded.info, held)
                held += _lock_out(logs, own)
                results[name] = (0, "")
            except _InUse:
                if policy == _FOR_START:
                    if own is not None and leases is not None:  # it still uses the process: kept
                        if _flock(own, shared=True):
                            leases[name] = own
                        else:
                            os.close(own)
                    raise
                results[name] = (0, "") if _held_only_by(members, recorded, logs) else (_IN_USE, "")
        stopping = {name: found[name] for name, (result, _) in results.items() if result != _IN_USE}
        for name, result in _terminate(stopping, TERMINATE_TIMEOUT).items():
            results[name] = (result, results[name][1])
            if result == 1 and policy != _FOR_START:  # a start replaces the state anyway
                _mark_stopped(targets[name], policy)
    finally:
        for fd in held:
            os.close(fd)
    return results


def _held_only_by(members: Collection[int], recorded: _Recorded, logs: Collection[tuple[int, int]]) -> bool:
    """Whether every holder of ``recorded``'s start lock and leases is one of ``members`` (where
    the holders can be seen: ``/proc/locks``)."""
    if not members:
        return False
    idents = list(logs)
    with contextlib.suppress(OSError):
        st = os.stat(recorded.info.controldir / LOCK_NAME)
        idents.append((st.st_dev, st.st_ino))
    holders = {pid for ident in idents for pid in _OS.lock_holders(ident)}
    return bool(holders) and holders <= set(members)


def _lock_now(info: XProcessInfo, held: list[int]) -> None:
    """Take ``info``'s start lock into ``held`` (no directory: nobody starts it), else ``_InUse``."""
    try:
        fd = _open_lock(info.controldir / LOCK_NAME)
    except _Scarce:
        raise
    except XProcessError:
        return
    held.append(fd)
    if not _flock(fd):
        raise _InUse("a session starting it")


# --- 9. the public objects: XProcessInfo, _Ensured ---
#
# What users hold: the record of a name (its paths, pid, port; isrunning, terminate) and the
# value ensure() returns.

_UNSET: Any = object()
_PosixPath: Any = type(Path())  # pathlib.Path itself cannot be subclassed before Python 3.12
_WARNED: set[str] = set()  # the py.path.local names used so far: each is warned about once


def _py_path(name: str, instead: str) -> None:
    """Warn, once per name, that a py.path.local method or attribute of a path was used."""
    if name not in _WARNED:
        _WARNED.add(name)
        warnings.warn(
            f"{name} is py.path.local's (pytest-xprocess handed those out); xprocess's paths are pathlib.Path: "
            f"use {instead}",
            DeprecationWarning,
            stacklevel=3,
        )


def _py_alias(name: str, instead: str, answer: Callable[[Any], Any]) -> Any:
    """The py.path.local ``name`` as ``answer(path)``, warned about once: a method if the name ends
    in "()", else a property."""

    def get(self: Any) -> Any:
        _py_path(name, instead)
        return answer(self)

    get.__name__ = name.rstrip("()")
    return get if name.endswith("()") else property(get)


class _Path1x(_PosixPath):  # type: ignore[misc]
    """A ``pathlib.Path`` that also answers the ``py.path.local`` methods suites written for
    pytest-xprocess call on the paths it hands out, each with a ``DeprecationWarning`` naming the
    pathlib way. Like py.path.local, it takes attribute assignments (it has a ``__dict__``)."""

    def join(self, *parts: str) -> _Path1x:
        _py_path("join()", "path / 'name' or path.joinpath(...)")
        return self.joinpath(*parts)  # type: ignore[no-any-return]

    def check(self, **kinds: Any) -> bool:
        """``check()``, ``check(file=1)``, ``check(dir=0)``, ``check(link=1)``, ``check(exists=1)``."""
        _py_path("check()", "path.exists(), path.is_file(), path.is_dir() or path.is_symlink()")
        tests = {"exists": self.exists, "file": self.is_file, "dir": self.is_dir, "link": self.is_symlink}
        if set(kinds) - set(tests):
            raise TypeError(f"check() takes {', '.join(tests)}, got {', '.join(sorted(kinds))}")
        return all(bool(tests[kind]()) == bool(want) for kind, want in (kinds or {"exists": 1}).items())

    def read(self, mode: str = "r") -> Any:
        _py_path("read()", "path.read_text() or path.read_bytes()")
        return self.read_bytes() if "b" in mode else self.read_text()

    def readlines(self, cr: bool = True) -> list[str]:
        _py_path("readlines()", "path.read_text().splitlines()")
        return self.read_text().splitlines(keepends=bool(cr))  # type: ignore[no-any-return]

    def write(self, data: Any, mode: str = "w", ensure: bool = False) -> None:
        _py_path("write()", "path.write_text() or path.write_bytes()")
        if ensure:
            self.parent.mkdir(parents=True, exist_ok=True)
        with self.open(mode) as f:
            f.write(data)

    def write_binary(self, data: bytes, ensure: bool = False) -> None:
        _py_path("write_binary()", "path.write_bytes()")
        if ensure:
            self.parent.mkdir(parents=True, exist_ok=True)
        self.write_bytes(data)

    def ensure(self, *parts: str, dir: bool = False) -> _Path1x:  # py.path named it dir
        _py_path("ensure()", "path.mkdir(parents=True, exist_ok=True) or path.touch()")
        path: _Path1x = self.joinpath(*parts)
        if dir:
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
        return path

    def remove(self, rec: bool = True, ignore_errors: bool = False) -> None:
        _py_path("remove()", "path.unlink(), path.rmdir() or shutil.rmtree(path)")
        if self.is_dir() and not self.is_symlink():
            shutil.rmtree(self, ignore_errors=ignore_errors) if rec else self.rmdir()
        else:
            self.unlink()

    def dirpath(self, *parts: str) -> _Path1x:
        _py_path("dirpath()", "path.parent")
        return self.parent.joinpath(*parts)  # type: ignore[no-any-return]

    def listdir(self) -> list[_Path1x]:
        _py_path("listdir()", "sorted(path.iterdir())")
        return sorted(self.iterdir())

    def relto(self, other: os.PathLike[str] | str) -> str:
        _py_path("relto()", "str(path.relative_to(other))")
        try:
            return str(self.relative_to(other))
        except ValueError:
            return ""

    # the rest answer as one pathlib call does
    size = _py_alias("size()", "path.stat().st_size", lambda p: p.stat().st_size)
    mtime = _py_alias("mtime()", "path.stat().st_mtime", lambda p: p.stat().st_mtime)
    read_binary = _py_alias("read_binary()", "path.read_bytes()", Path.read_bytes)
    isdir = _py_alias("isdir()", "path.is_dir()", Path.is_dir)
    isfile = _py_alias("isfile()", "path.is_file()", Path.is_file)
    islink = _py_alias("islink()", "path.is_symlink()", Path.is_symlink)
    realpath = _py_alias("realpath()", "path.resolve()", Path.resolve)
    strpath = _py_alias("strpath", "str(path)", str)
    basename = _py_alias("basename", "path.name", lambda p: p.name)
    purebasename = _py_alias("purebasename", "path.stem", lambda p: p.stem)
    ext = _py_alias("ext", "path.suffix", lambda p: p.suffix)
    dirname = _py_alias("dirname", "str(path.parent)", lambda p: str(p.parent))


class XProcessInfo:
    """What is recorded about the process named ``name`` under the state directory ``path``."""

    def __init__(self, path: Path | str, name: str) -> None:
        self.name = _check_name(name)
        self.controldir = _Path1x(path, name)
        self.logpath = self.controldir / LOG_NAME
        self.statepath = self.controldir / STATE_NAME
        self._pid = _UNSET
        # set by XProcess.getinfo: a stop on purpose is no crash, so the crash watch lets go first
        self._before_stop: Callable[[str], object] | None = None

    @functools.cached_property
    def _marker_prefix(self) -> str:
        """The start of the marker of every process started under this name in this project."""
        return _key(os.fsdecode(_resolved(self.controldir.parent)), self.name) + ":"

    @functools.cached_property
    def _kernel_dir(self) -> str:
        """The control directory as the kernel names it in a process's open files."""
        return os.fsdecode(_resolved(self.controldir.parent) / self.name)

    def __repr__(self) -> str:
        return f"<XProcessInfo {self.name!r} pid={self.pid}>"

    def _state(self) -> _State | None:
        """The recorded state, if trusted (none if an assigned ``pid`` is not the recorded one)."""
        state = _read_state(self.statepath)
        if self._pid is not _UNSET and (state is None or state.pid != self._pid):
            return None
        return state

    @property
    def pid(self) -> int | None:
        """The recorded pid, whether or not it still runs (it may be assigned, as in 1.x's tests:
        ``None``, or any pid that is not the recorded one, makes :meth:`terminate` a no-op)."""
        if self._pid is not _UNSET:
            return self._pid  # type: ignore[no-any-return]
        state = self._state()
        return state.pid if state else None

    @pid.setter
    def pid(self, value: int | None) -> None:
        self._pid = value

    @property
    def port(self) -> int | None:
        """The port the starter read (:attr:`ProcessStarter.port`) for the recorded start, if any."""
        state = self._state()
        return state.port if state else None

    def isrunning(self, ignore_zombies: bool = True) -> bool:
        """Whether the recorded process is alive and is the very one recorded (not a recycled pid)."""
        proc = _Recorded.read(self).proc
        return proc is not None and not (ignore_zombies and proc.zombie)

    def terminate(self, *, kill_proc_tree: bool = True, timeout: float = TERMINATE_TIMEOUT) -> int:
        """Terminate the recorded process and, with ``kill_proc_tree``, everything it started:
        1 terminated, 0 nothing to do, -1 something could not be terminated."""
        recorded = _Recorded.read(self)
        if self._pid is not _UNSET and recorded.state is None:
            return 0
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout != timeout:
            raise ValueError(f"terminate(): timeout must be a number of seconds, got {timeout!r}")
        if timeout < 0:
            return -1  # pytest-xprocess 1.x returned -1 for a negative timeout too
        if self._before_stop is not None:
            self._before_stop(self.name)
        result = _terminate(_find_ours({self.name: recorded}, kill_proc_tree), timeout)[self.name]
        if result == 1:
            _mark_stopped(recorded, "terminate()")
        return result

    def kill(self) -> int:
        """The same as :meth:`terminate` (the original API's name)."""
        return self.terminate()


class _Ensured(tuple):  # type: ignore[type-arg]
    """``(pid, logpath)``, also as ``.pid`` and ``.logpath``, with ``.match``, ``.port`` and a
    ``.logfile`` opened on first use."""

    match: re.Match[str] | None
    port: int | None
    _logfile: Callable[[], IO[str]]

    def __new__(cls, pid: int, logpath: Path, match: re.Match[str] | None, port: int | None, logfile: Any) -> _Ensured:
        self = super().__new__(cls, (pid, logpath))
        self.match, self.port, self._logfile = match, port, logfile
        return self

    @property
    def pid(self) -> int:
        return self[0]  # type: ignore[no-any-return]

    @property
    def logpath(self) -> Path:
        return self[1]  # type: ignore[no-any-return]

    @property
    def logfile(self) -> IO[str]:
        """The log as an open text file, just past the ready line (or at its end when reused);
        one per name and session, closed at its end."""
        return self._logfile()


# --- 10. the session: what this pytest uses ---
#
# What one pytest process (the xdist controller, or a worker) remembers of the processes it
# ensured: the records it shares with the others through the session file, the log offsets for
# failed tests' reports, its leases, the crash watch, the logs and children it handed out. Then
# what runs when pytest does not: the watchdog of a session in stop mode, the idle keeper.


class _CrashWatch:
    """The processes a session ensured, watched for an exit nobody asked for (a crash): a pidfd each,
    all checked by one ``poll`` that does not wait (a microsecond a look); else pid and start."""

    def __init__(self) -> None:
        self._poll = select.poll()
        # name -> (process, pid, pidfd, its Popen if it is this process's child, its files)
        self._watched: dict[str, tuple[_Proc | None, int, int | None, Any, XProcessInfo]] = {}
        self._names: dict[int, str] = {}  # pidfd -> name
        self._sections: list[tuple[str, str, str, str]] = []  # (test, name, title, log tail) not yet reported
        self.died: dict[str, str] = {}  # name -> the test it died during, until it is started again

    def pid(self, name: str) -> int | None:
        entry = self._watched.get(name)
        return entry[1] if entry else None

    def add(self, name: str, pid: int, popen: subprocess.Popen[bytes] | None, info: XProcessInfo) -> None:
        """Watch ``pid`` as ``name``; ``popen`` when it is this process's child (its exit code is known)."""
        self.remove(name)
        self.died.pop(name, None)
        fd = None
        with contextlib.suppress(ValueError):
            fd = _pidfd(pid)
        self._watched[name] = (_OS.proc(pid), pid, fd, popen, info)
        if fd is not None:
            self._names[fd] = name
            self._poll.register(fd, select.POLLIN)

    def remove(self, name: str) -> None:
        entry = self._watched.pop(name, None)
        fd = entry[2] if entry else None
        if fd is not None:
            self._poll.unregister(fd)
            del self._names[fd]
            os.close(fd)

    def look(self, test: str) -> list[dict[str, Any]]:
        """Stop watching what exited (it died during ``test``, or was stopped on purpose by another
        session or command, as its state notes); return a summary record of each."""
        if not self._watched:
            return []
        gone = [self._names[fd] for fd, _ in self._poll.poll(0)]
        if len(self._names) < len(self._watched):  # some without a pidfd
            gone += [n for n, (proc, _, fd, p, _) in self._watched.items() if fd is None and not _alive(proc, p)]
        records = []
        for name in gone:
            _, pid, _, popen, info = self._watched[name]
            self.remove(name)
            test, logpath = test or "the session", info.logpath
            stopped = _stopped_on_purpose(info, pid)
            if stopped:  # no crash: nothing to report but when
                records.append({"name": name, "kind": _STOPPED_BY, "test": test, "how": stopped, "pid": pid})
                continue
            self.died[name] = test
            how, short = _how_it_ended(popen)
            _logger.warning("xprocess %r (pid %d) %s during %s", name, pid, how, test)
            tail = "\n".join(line[:_TAIL_WIDTH] for line in _tail(logpath, _TAIL_LINES)) or "(its log is empty)"
            self._sections.append((test, name, f"xprocess {name!r} {how}", f"last lines of {logpath}:\n{tail}"))
            records.append({"name": name, "kind": _DIED, "test": test, "how": short, "pid": pid})
        return records

    def sections(self, test: str, logged: Collection[str] = ()) -> list[tuple[str, str]]:
        """Report sections for the crashes noticed since the last report, for ``test``'s report; a
        name in ``logged`` that died during it has its log shown already: its lines are not repeated."""
        sections, self._sections = self._sections, []
        return [
            (f"{title} during this test", f"its last lines are in the section 'xprocess {name} log'")
            if t == test and name in logged
            else (f"{title} during {'this test' if t == test else t}", text)
            for t, name, title, text in sections
        ]

    def close(self) -> None:
        for name in list(self._watched):
            self.remove(name)


def _alive(proc: _Proc | None, popen: subprocess.Popen[bytes] | None) -> bool:
    """Whether a watched process still runs: a child asked with ``waitid``, another by pid and start."""
    if popen is not None:
        return _exit_status(popen) is None
    now = proc.now() if proc is not None else None
    return now is not None and not now.zombie


def _how_it_ended(popen: subprocess.Popen[bytes] | None) -> tuple[str, str]:
    """How a process ended, for a report ("was killed by signal 11 (SIGSEGV)") and the summary."""
    code = _exit_status(popen) if popen is not None else None
    if code is None:
        return "exited", "exit status unknown"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by signal {-code} ({signal.Signals(-code).name})", f"signal {-code}"
        return f"was killed by signal {-code}", f"signal {-code}"
    return f"exited with code {code}", f"exit code {code}"


class _Session:
    """What one pytest process remembers of the processes it uses, behind the verbs the hooks call."""

    def __init__(self, statedir: Path, worker: bool = False) -> None:
        self.statedir = statedir
        self.id = ""  # shared by the xdist controller and its workers; "" records nothing
        self.worker = worker  # an xdist worker: its records reach the summary only through the file
        self.member = False  # an xdist worker in stop mode, not recorded as a member yet
        self.records: list[dict[str, Any]] = []  # what this process recorded, kept if the file cannot be
        self._last: dict[str, dict[str, Any]] = {}  # name -> the last of them: a repeated reuse adds nothing
        self.leases: dict[str, int] = {}  # name -> fd of the lease this session holds on it
        self._lost: set[str] = set()  # leased names whose process died: the lease follows the next one
        self.crash_watch: _CrashWatch | None = None  # created on first use
        self._test = ""  # the test running, or the last one: a crash noticed now happened during it
        self._offsets: dict[str, list[Any]] = {}  # name -> [log path, its size when the current test started]
        self._logfiles: dict[str, tuple[int, IO[str]]] = {}  # name -> (inode, the file handed out)
        self._children: list[subprocess.Popen[bytes]] = []
        self._wakeups: _Wakeups | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None  # stop mode: see arm()
        self._told: set[str] = set()  # the names told to the watchdog
        self._keepers: list[subprocess.Popen[bytes]] = []  # idle keepers started: each ends at once (its fork runs)
        self._handlers: dict[int, Any] = {}  # the SIGTERM and SIGHUP handlers replaced by catch_signals()
        self._idle: dict[str, Path] = {}  # name -> state path, of those with an idle_timeout

    @property
    def path(self) -> Path:
        return self.statedir / f".session-{self.id}.jsonl"

    def wakeups(self) -> _Wakeups:
        if self._wakeups is None:
            self._wakeups = _Wakeups()
        return self._wakeups

    def used(
        self, info: XProcessInfo, kind: str, spec: _Spec, offset: int = 0, why: str = "", seconds: float = 0.0,
        stop: float = 0.0, prepared: float = 0.0,
    ) -> None:  # fmt: skip
        """Remember that this session uses ``info`` (``kind``: one of §1's), for reports, the summary
        and the stop at the end."""
        if kind in (_REUSED, _STARTED, _RESTARTED):
            self._offsets[info.name] = [info.logpath, offset]
        if kind in (_STARTED, _RESTARTED):
            _logger.info("xprocess %r %s in %.2f s", info.name, kind + (f": {why}" if why else ""), seconds)
        if not self.id:
            return
        with contextlib.suppress(OSError):  # (the record of its use fails then too, and says so)
            if self.member:
                self._join()
        record = {"name": info.name, "kind": kind, "why": why, "seconds": round(seconds, 3)}
        record["terminate_on_interrupt"] = spec.terminate_on_interrupt
        if spec.terminate_on_interrupt:  # stopped after SIGTERM and SIGHUP too (by the xdist worker
            self.catch_signals()  # using it: its controller does not know it is used)
        if self._watchdog is not None and info.name not in self._told:
            self._told.add(info.name)
            with contextlib.suppress(OSError):  # (it was killed)
                self._watchdog.stdin.write(json.dumps(info.name).encode() + b"\n")  # type: ignore[union-attr]
                self._watchdog.stdin.flush()  # type: ignore[union-attr]
        if stop >= _SLOW_STOP:
            record["stop"] = round(stop, 1)
        if prepared >= _SLOW_STOP:
            record["prepared"] = round(prepared, 1)
        if self._last.get(info.name) == record:  # a test per reuse would grow the file without end
            return
        try:
            self._append(record)
            self._last[info.name] = record
        except OSError as exc:
            if self.worker:  # the controller has its own records in memory
                _warn(f"xprocess cannot record that it uses {info.name!r} ({exc}): --xstop will not stop it")

    def failed(self, info: XProcessInfo, spec: _Spec, exc: BaseException) -> None:
        """Remember why a start of ``info`` failed, for the summary."""
        if isinstance(exc, KeyboardInterrupt):
            return self.used(info, _INTERRUPTED, spec)
        why = getattr(exc, "reason", "") or str(exc).partition("\n")[0].removeprefix(f"xprocess {info.name!r}")
        return self.used(info, _FAILED, spec, why=(why.strip(" :") or type(exc).__name__)[:300])

    def stopped_at_end(self, results: Mapping[str, tuple[int | str, str]]) -> None:
        """Remember what the stop at the end of the session did, for the summary."""
        for name, (result, _) in results.items():
            with contextlib.suppress(OSError):  # kept in memory: the summary has it
                self._append({"name": name, "kind": _TERMINATED, "result": result})

    def _append(self, record: dict[str, Any]) -> None:
        """Add ``record`` in memory and to the session file (``OSError`` if it cannot be written)."""
        self.records.append(record)
        _write_private(self.path, (json.dumps(record) + "\n").encode(), "append")

    def _read(self) -> list[Any]:
        """The records of every process of this session (xdist workers included): the session file,
        or this process's own if it cannot be read."""
        try:
            with _open_private(self.path) as f:
                lines = f.read().decode("utf-8", "replace").splitlines()  # only this session writes it
        except OSError:
            lines = []
        records = []
        for line in lines:
            with contextlib.suppress(ValueError):
                records.append(json.loads(line))
        return records if lines else list(self.records)

    # The rules: a start outranks reuses, a later start is named as "then" (with how many
    # followed), a death is told once per pid, the stop at the end is added.
    def uses(self) -> dict[str, dict[str, Any]]:
        """What every process of this session (xdist workers included) did, per name."""
        uses: dict[str, dict[str, Any]] = {}
        for record in self._read():
            with contextlib.suppress(KeyError, TypeError, AttributeError):  # a member has no name
                use = uses.setdefault(record["name"], {})
                kind = record["kind"]
                if kind == _DIED:  # noticed by each worker using it: once per pid
                    use.setdefault("died", {}).setdefault(str(record["pid"]), f"{record['test']} ({record['how']})")
                elif kind == _STOPPED_BY:
                    use.setdefault("stopped", {}).setdefault(str(record["pid"]), (record["how"], record["test"]))
                elif kind == _TERMINATED:
                    use["terminated"] = record["result"]
                elif use.get("kind", _REUSED) in (_REUSED, _STARTING):
                    use.update(record)
                elif kind not in (_REUSED, _STARTING):
                    use["then"] = record
                    use["more"] = use.get("more", 0) + 1
        return uses

    def _join(self) -> None:
        """Record this xdist worker as a member of its session, before its first use: the session's
        watchdog overrides its leases once the session died (it may outlive its controller by seconds)."""
        self.member = False
        me = _OS.proc(os.getpid())
        if me is not None:
            self._append({"kind": _MEMBER, "pid": me.pid, "start": me.start})

    def members(self) -> list[int]:
        """The pids of this session's xdist workers that still run."""
        pids = []
        for record in self._read():
            if isinstance(record, dict) and record.get("kind") == _MEMBER and type(record.get("pid")) is int:
                proc = _OS.proc(record["pid"]) if record["pid"] > 1 else None
                alive = proc is not None and proc.start == record.get("start") and not proc.zombie
                if alive and _OS.cmdline(record["pid"]).endswith(_XDIST_WORKER):  # (anything else is no member)
                    pids.append(record["pid"])
        return pids

    def arm(self) -> None:
        """Start the watchdog that stops what this session uses if it ends without doing so."""
        where = os.path.dirname(os.path.abspath(__file__))
        try:
            self._watchdog = subprocess.Popen(
                [sys.executable, "-c", _WATCHDOG, where, os.fspath(self.statedir), self.id],
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/",
                start_new_session=True,  # out of reach of a signal to pytest's process group
            )  # fmt: skip
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            _warn(
                f"xprocess cannot start the watchdog of --xstop ({exc}): if this pytest is killed "
                f"(SIGKILL), what it started keeps running (pytest --xkill stops it)"
            )

    def disarm(self, done: bool) -> None:
        """End the watchdog: this session stopped what it used (``done``), or the watchdog does it now."""
        dog, self._watchdog = self._watchdog, None
        if dog is None:
            return
        with contextlib.suppress(OSError):  # it was killed: BrokenPipeError
            if done:
                dog.stdin.write(b".\n")  # type: ignore[union-attr]
            dog.stdin.close()  # type: ignore[union-attr]
        with contextlib.suppress(subprocess.TimeoutExpired):  # it ends at once (its fork does the work)
            dog.wait(5)
        if dog.returncode is None:
            dog.returncode = 0  # it outlives this process: no "still running" warning

    def catch_signals(self) -> None:
        """Make SIGTERM and SIGHUP interrupt pytest as Ctrl-C does (where nothing else handles them),
        so that the session's end stops what it should."""
        for sig in (signal.SIGTERM, signal.SIGHUP):
            with contextlib.suppress(ValueError, OSError):  # not the main thread
                if sig not in self._handlers and signal.getsignal(sig) == signal.SIG_DFL:
                    self._handlers[sig] = signal.signal(sig, _interrupt)

    def restore_signals(self) -> None:
        for sig, handler in self._handlers.items():
            with contextlib.suppress(ValueError, OSError):
                if signal.getsignal(sig) is _interrupt:
                    signal.signal(sig, handler)
        self._handlers.clear()

    def hold(self, info: XProcessInfo, pid: int, ident: tuple[int, ...]) -> None:
        """Hold a shared lease on ``info``'s process (its log file, reached through the process if
        its path is gone) until this session ends or dies."""
        self._lost.discard(info.name)
        if info.name not in self.leases:
            fd = _open_inode([os.fspath(info.logpath), *(_OS.held_file(pid, n) for n in (1, 2))], ident)

            if fd is None:
                return
            if _flock(fd, shared=True):
                self.leases[info.name] = fd
            else:  # being stopped by --xkill right now: no lease, and no waiting for it
                os.close(fd)

    def release(self) -> None:
        """End this session's leases; a process with an idle_timeout starts its idle time now."""
        released = json.dumps({"released": time.time()}) + "\n"
        for name, fd in self.leases.items():
            if name in self._idle:
                with contextlib.suppress(OSError):
                    _write_private(self._idle[name], released.encode(), "append")
            os.close(fd)
        self.leases.clear()

    def watch(self, info: XProcessInfo, ensured: _Ensured, idle: float | None = None) -> _Ensured:
        """``ensured``, watched from now on for an exit nobody asked for (a crash), and, with an
        ``idle`` timeout, by the project's idle keeper."""
        if idle is not None:
            self._idle[info.name] = info.statepath
            keeper = _arm_idle_keeper(self.statedir)
            if keeper is not None:
                self._keepers.append(keeper)
        if self.crash_watch is None:
            self.crash_watch = _CrashWatch()
        if self.crash_watch.pid(info.name) != ensured[0]:
            popen = next((p for p in self._children if p.pid == ensured[0]), None)  # its exit status is ours
            self.crash_watch.add(info.name, ensured[0], popen, info)
        return ensured

    def let_go(self, name: str) -> None:
        """``name`` is stopped on purpose (``terminate()``): not watched, and not leased, any more
        (a session starting and stopping a server per test kept a descriptor per name)."""
        self.unwatch(name)
        self._end_lease(name)

    def _end_lease(self, name: str) -> bool:
        """End this session's lease on ``name``; whether it held one."""
        fd = self.leases.pop(name, None)
        if fd is not None:
            os.close(fd)
        return fd is not None

    def unwatch(self, name: str) -> str:
        """Stop watching ``name`` (stopped on purpose); return "it died during ..." if it had crashed."""
        if self.crash_watch is None:
            return ""
        self.notice_crashes()  # a crash before this stop is still one
        self._lost.discard(name)
        self.crash_watch.remove(name)
        test = self.crash_watch.died.pop(name, None)
        return "" if test is None else f"it died during {test}"

    def notice_crashes(self) -> None:
        """Record each crash of a watched process since the last look, for the summary; its lease
        is let go, to follow the process started again in its place."""
        for record in self.crash_watch.look(self._test) if self.crash_watch is not None else ():
            if self._end_lease(record["name"]):
                self._lost.add(record["name"])
            if self.id:
                with contextlib.suppress(OSError):
                    self._append(record)

    # Its tests still talk to the name's port: when another session starts it again, what they
    # talk to is the new process, which this session leases, or a third session would stop it.
    def follow(self) -> None:
        """Lease (and watch) the process now running under each name whose leased process died."""
        for name in list(self._lost):
            info = XProcessInfo(self.statedir, name)
            recorded = _Recorded.read(info)
            if recorded.running and recorded.proc is not None and recorded.state is not None:
                self.hold(info, recorded.proc.pid, recorded.state.log)
                if self.crash_watch is not None:
                    self.crash_watch.add(name, recorded.proc.pid, None, info)

    def test_starts(self, nodeid: str) -> None:
        for entry in self._offsets.values():
            with contextlib.suppress(OSError):
                entry[1] = entry[0].stat().st_size
        self.notice_crashes()  # a crash since the last test's last report happened during it, at the latest
        self.follow()
        self._test = nodeid

    def sections(self, nodeid: str, failed: bool) -> list[tuple[str, str]]:
        """Test ``nodeid``'s report sections: the logs written during it if it failed, and crashes."""
        sections, logged = [], set()
        for name, (path, offset) in self._offsets.items() if failed else ():
            lines = _tail(path, _REPORT_LINES, since=offset, limit=_REPORT_BYTES)
            if lines:
                sections.append((f"xprocess {name} log", "\n".join(lines)))
                logged.add(name)
        if self.crash_watch is not None:
            self.notice_crashes()
            sections += self.crash_watch.sections(nodeid, logged)
        return sections

    def logfile(self, name: str, path: Path, offset: int) -> IO[str]:
        """The log of ``name`` as text, positioned at ``offset``: one file per name and session."""
        inode, text = self._logfiles.get(name, (0, None))
        try:
            current = path.stat().st_ino
        except OSError:
            current = -1
        if text is None or inode != current:
            if text is not None:
                text.close()
            raw = _open_private(path)
            text = io.TextIOWrapper(raw, encoding="utf-8", errors="replace")
            self._logfiles[name] = (os.fstat(raw.fileno()).st_ino, text)
        text.seek(offset)
        return text

    def adopt(self, popen: subprocess.Popen[bytes]) -> None:
        self._children.append(popen)

    def close(self) -> None:
        """Close the logs handed out, end the leases, let go of the children (they outlive us)."""
        self.release()
        for _, f in self._logfiles.values():
            f.close()
        self._logfiles.clear()
        for popen in self._children:
            for pipe in (popen.stdin, popen.stdout, popen.stderr):
                if pipe is not None:
                    pipe.close()
            if popen.poll() is None:
                # a returncode stops subprocess from warning, when the Popen object is collected,
                # that it "is still running"
                popen.returncode = 0
        self._children.clear()
        for keeper in self._keepers:  # reaped: a pytest that lives on (pytester's runs) collects no zombies
            with contextlib.suppress(subprocess.TimeoutExpired):
                keeper.wait(1)
        self._keepers.clear()
        if self._wakeups is not None:
            self._wakeups.close()
            self._wakeups = None
        if self.crash_watch is not None:
            self.crash_watch.close()
            self.crash_watch = None


def _interrupt(signum: int, frame: object) -> None:
    __tracebackhide__ = True  # shown where pytest was when the signal came
    raise KeyboardInterrupt(f"{signal.Signals(signum).name} received")


# The watchdog of a session in stop mode: an interpreter of its own, in a session of its own,
# reading a pipe that only pytest writes to: the names the session uses as it first uses them (a
# JSON string a line), and a last line "." once the session stopped them itself. However pytest
# ends (SIGKILL, os._exit(), a crash) the kernel closes the pipe. Until then it is a bare
# interpreter (about 11 MB): this module is imported only after a death, in a fork (the process
# pytest started ends at once: a pytest that lives on, as pytester's in-process runs, reaps it).
_WATCHDOG = """
import os, sys
told = b""
while True:
    chunk = os.read(0, 65536)
    if not chunk:
        break
    told += chunk
if not told.endswith(b".\\n") and not os.fork():
    sys.path.insert(0, sys.argv[1])
    import xprocess
    xprocess._after_death(sys.argv[2], sys.argv[3], told)
"""


def _after_death(statedir: str, session_id: str, told: bytes = b"") -> None:
    """The watchdog's work once its session died without stopping what it used: stop it as that
    session's end would have (what another session holds is spared). Its xdist workers may run
    for seconds more: their leases are overridden, and once they are gone (one may have started a
    process again), what the session used is stopped once more."""
    session = _Session(Path(statedir))
    session.id = session_id
    names = set()  # the session file may be gone (rm -rf .xprocess): the pipe told them too
    for line in told.splitlines():
        with contextlib.suppress(ValueError):
            names.add(json.loads(line))
    deadline = _Deadline(_MEMBERS_WAIT)
    while True:
        members = session.members()
        targets = {}
        for name in sorted({*session.uses(), *names}, key=str):
            with contextlib.suppress(ValueError, TypeError):  # no name of ours: nothing to stop
                targets[name] = _Recorded.read(XProcessInfo(session.statedir, name))
        if targets:
            _stop(targets, _AFTER_DEATH, members=members)
        if not members or deadline.expired():
            break
        delay = 0.01
        while session.members() and not deadline.expired():
            delay = deadline.sleep(delay)
    with contextlib.suppress(OSError):
        session.path.unlink()


# The idle keeper, one per project while a process with an idle_timeout runs: it looks at them at
# most _IDLE_LOOK apart, stops each that no session held for its idle_timeout (as a session's end
# stops: never one in use), and ends when none is left.
# It is handed its lock, taken by the session that starts it (no second keeper starts while the
# first imports this module), and runs in a fork (the process pytest started ends at once).
_IDLE_KEEPER = """
import os, sys
if not os.fork():
    sys.path.insert(0, sys.argv[1])
    import xprocess
    xprocess._keep_idle(sys.argv[2], int(sys.argv[3]))
"""


def _arm_idle_keeper(statedir: Path) -> subprocess.Popen[bytes] | None:
    """Start the project's idle keeper, unless one runs (it holds its lock)."""
    try:
        fd = _open_lock(statedir / _IDLE_LOCK)
        try:
            if not _flock(fd):
                return None
            where = os.path.dirname(os.path.abspath(__file__))
            err = _open_checked(statedir / _IDLE_LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND, owned=True)
            try:  # what goes wrong in it is not lost
                return subprocess.Popen(
                    [sys.executable, "-c", _IDLE_KEEPER, where, os.fspath(statedir), str(fd)], pass_fds=(fd,),
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, cwd="/",
                    start_new_session=True,
                )  # fmt: skip
            finally:
                os.close(err)
        finally:
            os.close(fd)  # the keeper holds the lock now
    except (XProcessError, OSError, ValueError, subprocess.SubprocessError) as exc:
        _warn(f"xprocess cannot start its idle keeper ({exc}): idle_timeout stops nothing until it can")
    return None


# Its lock is let go before it ends: a session that found it held until then started no other
# keeper, and its process is seen by the look that follows.
def _keep_idle(statedir: str, fd: int) -> None:
    """The idle keeper's loop, holding its lock ``fd``."""
    with contextlib.suppress(OSError):  # its log (stderr) is of the last keepers only
        if os.fstat(2).st_size > _MAX_LINE:
            os.ftruncate(2, 0)
    root: Path = Path(statedir)
    held: dict[str, float] = {}
    while True:
        try:
            while (wait := _idle_look(root, held)) is not None:
                time.sleep(wait)
        finally:
            os.close(fd)
        if _idle_look(root, held) is None:
            return
        fd = _open_lock(root / _IDLE_LOCK)
        if not _flock(fd):
            os.close(fd)
            return  # another keeper runs


def _idle_left(state: _State, now: float) -> float:
    """Seconds until ``state``'s process has been idle for its idle_timeout, with no session holding it."""
    return max(state.released or 0.0, state.spawned_at or 0.0) + (state.idle or 0.0) - now


def _idle_look(root: Path, held: dict[str, float]) -> float | None:
    """Stop what has been idle long enough; the seconds until the next look, None if nothing has an
    idle_timeout. ``held``: when each name was last seen held (a holder that ended since without
    noting it, killed, ended at the latest now)."""
    names = []
    with contextlib.suppress(OSError):
        names = sorted(e.name for e in os.scandir(root) if e.is_dir(follow_symlinks=False))
    wait = None
    for name in names:
        try:
            after = _idle_one(XProcessInfo(root, name), held)
        except ValueError:  # no name of ours
            continue
        except Exception:  # (descriptors run out, say): looked at again later, as the others are
            after = _IDLE_LOOK
        if after is not None:
            wait = after if wait is None else min(wait, after)
    return wait


def _idle_one(info: XProcessInfo, held: dict[str, float]) -> float | None:
    """:func:`_idle_look` of one name: stop it if idle long enough; the seconds until it is looked at
    again, None if it is not to be (not running, stopped, no idle_timeout)."""
    recorded = _Recorded.read(info)
    state, now = recorded.state, time.time()
    if not recorded.running or state is None or state.idle is None:
        held.pop(info.name, None)
        return None
    every = min(_IDLE_LOOK, max(state.idle / 4, 0.05))
    if _OS.lock_holders(state.log):
        held[info.name] = now
    elif info.name in held and (state.released or 0.0) < held.pop(info.name):  # a killed holder noted no end
        with contextlib.suppress(XProcessError):
            _write_state(info.statepath, state, {"released": now})
        state.released = now
    left = _idle_left(state, now)
    if info.name not in held and left <= 0 and _stop({info.name: recorded}, _WHEN_IDLE)[info.name][0] in (0, 1):
        return None  # stopped (or gone)
    return every if info.name in held or left <= 0 else min(left, every)


def _idle_stop_in(recorded: _Recorded) -> float | None:
    """Seconds until the idle keeper stops ``recorded``'s process; None if it has no idle_timeout or
    a session holds it."""
    state = recorded.state
    if not recorded.running or state is None or state.idle is None or _OS.lock_holders(state.log):
        return None
    return max(0.0, _idle_left(state, time.time()))


# --- 11. XProcess: ensure, getinfo, close ---
#
# The verbs over the sections above: read what is recorded, decide between reuse and a start,
# stop what must end, spawn and wait, and tell the session.


class XProcess:
    """Starts, reuses and stops the processes recorded under ``<rootdir>/.xprocess``."""

    def __init__(self, config: pytest.Config | None, rootdir: Path | str, log: Any = None) -> None:
        """:param log: what pytest-xprocess 1.x subclasses pass, an object with ``debug(msg, *args)``:
        kept as :attr:`log` for their own use (default: the ``xprocess`` logger)."""
        self.config = config
        self.log = log if log is not None else _logger
        self.rootdir = _Path1x(rootdir)
        self.statedir = self.rootdir / STATE_DIR
        self._session = _Session(self.statedir, worker=hasattr(config, "workerinput"))

    def __enter__(self) -> XProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def getinfo(self, name: str) -> XProcessInfo:
        """The :class:`XProcessInfo` of ``name``; creates nothing on disk."""
        info = XProcessInfo(self.statedir, name)
        info._before_stop = self._session.let_go
        return info

    def ensure(self, name: str, starter: Any, restart: bool = False, persist_logs: bool = True) -> _Ensured:
        """Return ``(pid, logpath)`` of the running, ready process ``name``, starting it if needed.
        One deadline, the starter's ``timeout``, covers the lock, other sessions' leases, the start
        and its readiness (not the stop of an old process).

        :param starter: a ``ProcessStarter`` subclass or instance, or ``preparefunc(cwd)`` returning
            ``(pattern, args[, env])`` (1.x's ``preparefunc(control_dir, process)`` too).
        :param restart: terminate and start it even if it runs.
        :param persist_logs: keep the logs of earlier starts (the last :data:`KEPT_LOGS`).
        :raises XProcessError: it exited, timed out or missed its pattern; the message says which.
        """
        __tracebackhide__ = True
        info = self.getinfo(name)  # a bad name: ValueError naming it
        if sys.platform == "win32":
            raise XProcessError(f"xprocess {name!r}: Windows is not supported (only POSIX systems)", name=name)
        deadline, spec, delay, prepared = _Deadline(_static_timeout(starter)), None, 0.001, 0.0
        while True:
            with _name_lock(info, deadline, self._tell) as created:  # one session at a time starts it
                old = _Recorded.read(info)
                if old.foreign:  # copied or forged: nothing of it is used
                    _warn(f"{info.statepath}: {old.reason()}; treating the process as not running")
                    old = _Recorded(info, None)
                try:
                    # what earlier starts left ends before the starter rebuilds what it may use (a cluster)
                    crashed, stopped = "", None
                    if not old.running:
                        crashed = self._session.unwatch(name)
                        stopped, left = self._stop(old)
                        crashed = crashed or left
                    if spec is None:
                        with _undo_on_error(created):  # bad input leaves nothing on disk
                            prepared = time.monotonic()
                            spec = _read_starter(name, starter, info, self)  # its properties may work (initdb)
                            prepared = time.monotonic() - prepared
                        deadline.at = deadline.began + spec.timeout  # the starter's own, once read
                    why = _why_start(old, spec, restart, crashed)
                    if why is None:
                        return self._session.watch(info, self._reuse(info, old, spec), spec.idle)
                    failed = _failed_meanwhile(old, deadline)  # starting it again would fail as that did, on no time
                    if failed is not None:
                        raise _failure(XProcessError, info, spec, _FAILED_MEANWHILE, None, deadline.elapsed(), failed)
                    if stopped is None:  # it still runs: stopped only now, after a crash it had is noticed
                        why = _with_crash(why, self._session.unwatch(name))
                        stopped = self._stop(old)[0]
                    deadline.at += stopped  # the stop of the old process is not counted
                    started = self._start(info, spec, persist_logs, why, deadline, stopped, prepared)
                    return self._session.watch(info, started, spec.idle)
                except _InUse as busy:  # wait without the lock: sessions that can reuse it still do
                    holders = busy.holders
            try:
                delay = _wait_for_holders(name, holders, deadline, delay, self._tell)
            except XProcessError as exc:
                if spec is not None:  # told in the summary, as a start that failed
                    self._session.failed(info, spec, exc)
                raise

    def _tell(self, line: str) -> None:
        """Show ``line`` on the terminal now, past pytest's capture (and log it): a wait that would
        otherwise look like a hang until its timeout."""
        _logger.warning(line)
        config = self.config
        plugins = getattr(config, "pluginmanager", None)
        reporter = plugins.get_plugin("terminalreporter") if plugins is not None else None
        if reporter is None or hasattr(config, "workerinput"):  # an xdist worker has no terminal
            return
        capture = plugins.get_plugin("capturemanager")  # type: ignore[union-attr]
        with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
            reporter.write_line(line)

    def _stop(self, old: _Recorded) -> tuple[float, str]:
        """Stop what runs under ``old``'s name before a start (``_InUse``); return the seconds taken,
        and why to tell the start as a restart: a lost record's processes were found and ended."""
        began = time.monotonic()
        result = _stop({old.info.name: old}, _FOR_START, self._session.leases)[old.info.name][0]
        return time.monotonic() - began, _LOST_LEFT if result == 1 and old.state is None else ""

    def _reuse(self, info: XProcessInfo, old: _Recorded, spec: _Spec) -> _Ensured:
        """The running process ``old``, leased, with the match that made it ready."""
        state: _State = old.state  # type: ignore[assignment]  # _why_start reuses only a recorded,
        proc: _Proc = old.proc  # type: ignore[assignment]  # running process
        pattern = spec.pattern
        if spec.deferred is not None and state.pattern is not None:
            with contextlib.suppress(re.error, TypeError, ValueError):  # the one it matched, not re-read
                pattern = re.compile(*state.pattern)
        match = pattern.search(state.match) if pattern and state.match is not None else None
        try:
            size = info.logpath.stat().st_size
        except OSError:
            size = 0
        self._session.used(info, _REUSED, spec, offset=size)
        self._session.hold(info, proc.pid, state.log)
        if spec.idle != state.idle:  # the new value applies from now on
            with contextlib.suppress(XProcessError):
                _write_state(info.statepath, state, {"idle": spec.idle})
        logfile = functools.partial(self._session.logfile, info.name, info.logpath, size)
        return _Ensured(proc.pid, info.logpath, match, state.port, logfile)

    def _start(
        self,
        info: XProcessInfo,
        spec: _Spec,
        persist_logs: bool,
        why: str,
        deadline: _Deadline,
        stopped: float,
        prepared: float,
    ) -> _Ensured:
        """Spawn, record, wait until ready; on any failure the tree of this start is terminated."""
        __tracebackhide__ = True
        if why:
            _logger.warning("xprocess %r restarted: %s", info.name, why)
        session = self._session
        try:
            _rotate_logs(info.logpath, KEPT_LOGS if persist_logs else 0)
            session.used(info, _STARTING, spec)  # an xdist worker dying now still has it stopped
            began = time.monotonic()
            forks = _OS.forks()  # while fewer follow than there are pids to go round, its own are the newer pids
            logfd = _create_log(info.logpath)
            st = os.fstat(logfd)
            marker = info._marker_prefix + os.urandom(8).hex()
            with session.wakeups().watching(info.logpath) as wakeups:
                try:
                    popen = _spawn(spec, marker, logfd)
                except OSError as exc:
                    _raise_if_scarce(exc)
                    raise
                except (TypeError, ValueError, LookupError, subprocess.SubprocessError) as exc:
                    raise XProcessError(
                        f"xprocess {info.name!r}: subprocess.Popen refused its args, env or popen_kwargs: {exc!r}",
                        name=info.name,
                    ) from exc
                finally:
                    os.close(logfd)
                session.adopt(popen)
                wakeups.wake_on_exit(popen.pid)
                _logger.debug("started %r pid %d: %s", info.name, popen.pid, spec.args)
                proc = _OS.proc(popen.pid)
                state = _State(
                    pid=popen.pid, start=proc.start if proc else "", token=marker, log=(st.st_dev, st.st_ino),
                    fingerprint=spec.fingerprint, args=spec.args, port=spec.port(), forks=forks, ready=False,
                    spawned_at=time.time(), idle=spec.idle,
                )  # fmt: skip
                try:
                    _write_state(info.statepath, state)
                    wait = _wait_steps if spec.steps else _wait_ready
                    spec, match, offset = wait(info, spec, popen, wakeups, began, deadline)
                    state.ready, state.port = True, spec.port()  # a startup_check may have read it
                    state.match = match.string if match else None
                    state.pattern = [spec.pattern.pattern, spec.pattern.flags] if spec.pattern else None
                    update = {"ready": True, "match": state.match, "pattern": state.pattern, "port": state.port}
                    _write_state(info.statepath, state, update)
                except BaseException:
                    # this start's tree, known from memory: its state may never have been written
                    _terminate(_find_ours({info.name: _Recorded(info, state)}, tree=True), _KILL_WAIT)
                    popen.poll()
                    raise
        except BaseException as exc:
            session.failed(info, spec, exc)
            if isinstance(exc, KeyboardInterrupt):  # wherever in the start it landed: pytest names the caller's line
                raise exc.with_traceback(None)  # noqa: B904 (the same exception, without the plugin's frames)
            raise
        kind, seconds = _RESTARTED if why else _STARTED, time.monotonic() - began
        session.used(info, kind, spec, why=why, seconds=seconds, stop=stopped, prepared=prepared)
        session.hold(info, popen.pid, state.log)
        logfile = functools.partial(session.logfile, info.name, info.logpath, offset)
        return _Ensured(popen.pid, info.logpath, match, state.port, logfile)

    def close(self) -> None:
        """Close the logs handed out and end the leases; the processes keep running."""

        self._session.close()


def _static_timeout(starter: Any) -> float:
    """The starter's ``timeout`` if it can be read without running its code, for the lock wait."""
    value = inspect.getattr_static(starter, "timeout", None)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return _seconds(value)
    return float(ProcessStarter.timeout)


def _seconds(value: float) -> float:
    """A positive number as a float: an int too big for one is no limit, as ``inf`` is."""
    try:
        return float(value)
    except OverflowError:
        return float("inf")


def _why_start(old: _Recorded, spec: _Spec, restart: bool, crashed: str) -> str | None:
    """Why the process is started again ("" for a first start), or None: reuse it. The whole
    decision, in order; ``crashed`` is what the crash watch said of it."""
    state = old.state
    if crashed and not old.running:
        return crashed
    if state is None:
        return ""
    if restart:
        return _RESTART_ASKED
    if not state.ready:
        return _NEVER_READY
    if not old.running:
        return "" if state.stopped else old.reason() if old.why else _STOPPED
    new = spec.fingerprint
    changed = [k for k in {**new, **state.fingerprint} if state.fingerprint.get(k) != new.get(k)]  # a part dropped too
    if changed:
        # a required process whose start changed restarted since: say that, not "configuration"
        required = [k for k in changed if k.startswith("requires ") and k in state.fingerprint and k in new]
        reasons = [f"{k[9:]} restarted" for k in required]
        named = {}  # a tree's first changed file, if the digest cache held the tree this start recorded
        for k in changed:
            before, what = spec.config_changed.get(k[12:], ("", "")) if k.startswith("config file ") else ("", "")
            if what and state.fingerprint.get(k) == _digest(before):
                named[k] = what
        reasons += dict.fromkeys(named.values())  # (a file two entries match is named once)
        others = [k for k in changed if k not in required and k not in named]
        if others or not reasons:
            reasons.append(f"its configuration changed ({', '.join(others)})")
        return "; ".join(reasons)
    if old.proc is not None and old.proc.stopped:
        return _SIGSTOPPED
    if spec.check is not None and spec.check_on_reuse and not _check_before_reuse(spec.check):
        return _CHECK_FAILED
    return None


_FAILED_MEANWHILE = "was not started: another session started it while this one waited, and that start failed"


def _failed_meanwhile(old: _Recorded, deadline: _Deadline) -> int | None:
    """The pid of another session's start, begun while this call waited for its lock, that failed
    (its state never got ready), or None: trying again would wait out the same, on what time is left."""
    state = old.state
    if state is None or state.ready or state.spawned_at is None or old.running:
        return None
    return state.pid if state.spawned_at >= time.time() - deadline.elapsed() else None


def _with_crash(why: str, crashed: str) -> str:
    """A crash the watch saw outranks every reason to restart but the two the process shows now."""
    return why if why in (_SIGSTOPPED, _CHECK_FAILED) or not crashed else crashed


def _check_before_reuse(check: Callable[[], Any]) -> bool:
    """One ``startup_check()`` before a reuse, bounded in time (a blocked thread is left behind)."""
    result: list[Any] = []

    def run() -> None:
        try:
            result.append(bool(check()))
        except OSError as exc:
            result.append(_scarce(exc) or False)  # out of descriptors is not "it does not answer"
        except BaseException as exc:
            result.append(exc)

    thread = threading.Thread(target=run, name="xprocess startup_check", daemon=True)
    thread.start()
    thread.join(_REUSE_CHECK_TIMEOUT)
    if result and isinstance(result[0], BaseException):
        raise result[0]
    return bool(result and result[0])


def _wait_for_holders(name: str, holders: str, deadline: _Deadline, delay: float, tell: Callable[[str], None]) -> float:
    """Wait a little for the sessions holding ``name``; return the next delay, or raise at the deadline."""
    __tracebackhide__ = True
    if deadline.expired():
        raise XProcessError(
            f"xprocess {name!r} was not restarted: it is in use by another session ({holders}) "
            f"and stayed so for the starter's timeout of {deadline.at - deadline.began:g} s. Let that session end, "
            f"or stop the process anyway with: pytest --xkill {shlex.quote(name)}",
            name=name,
        )
    if delay == 0.001:
        tell(f"xprocess: {name!r} is to be restarted but is in use by {holders}: waiting for it to end, at most "
             f"the starter's timeout of {deadline.at - deadline.began:g} s")  # fmt: skip
    return deadline.sleep(delay)


# --- 12. the pytest glue and the command line ---
#
# The hooks, each a few lines that call the session, and --xshow, --xkill and --xforget, which
# run no tests.


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("xprocess", "managing external processes across test runs")
    for option, does in (
        ("--xshow", "show the recorded processes"),
        ("--xkill", "terminate the recorded processes"),
        ("--xforget", "remove the records (state, logs, port) of processes that are not running"),
    ):
        group.addoption(option, nargs="*", metavar="NAME", help=f"{does} (all, or those named) and exit")
    # nargs like theirs: in "pytest --xshow --xjson redis" the name is read as --xjson's, and added
    group.addoption(
        "--xjson", nargs="*", metavar="NAME",
        help="with --xshow or --xkill: print one JSON document on stdout instead of the text (names may follow)",
    )  # fmt: skip
    group.addoption("--xstop", action="store_true", dest="xprocess_stop", default=None, help=_STOP_HELP)
    group.addoption("--no-xstop", action="store_false", dest="xprocess_stop", help="keep the processes running")
    parser.addini("xprocess_stop", _STOP_HELP, type="bool", default=False)
    parser.addini("xprocess_idle_timeout", _IDLE_HELP, default="")


def _stop_switch(config: pytest.Config) -> bool:
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


def pytest_configure(config: pytest.Config) -> None:
    xp = XProcess(config, config.rootpath)
    workerinput = getattr(config, "workerinput", None)
    xp._session.id = workerinput.get("xprocess_session", "") if workerinput else os.urandom(8).hex()
    config.stash[_XPROCESS_KEY] = xp
    _ini_idle_timeout(config)  # a bad value is a usage error now, not at the first ensure()
    if workerinput is None:
        if _stop_switch(config):  # (a bad XPROCESS_STOP is a usage error now, not at the end)
            xp._session.catch_signals()
    else:
        xp._session.member = _stop_switch(config)


@pytest.hookimpl(trylast=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    xp = session.config.stash.get(_XPROCESS_KEY, None)
    if xp is not None and xp._session.id and not xp._session.worker and _stop_switch(session.config):
        xp._session.arm()  # before any ensure(), in this process or an xdist worker


def pytest_report_header(config: pytest.Config) -> str:
    """One line in pytest's header: where the processes are recorded, and whether they outlive it."""
    where = f"state in {config.rootpath / STATE_DIR}"
    if config.inipath is None:  # the rootdir then follows the arguments and the current directory
        where += " (pytest found no config file, so this depends on where it runs: add a pytest.ini at the root)"
    if _stop_switch(config):
        return f"xprocess: {where}; processes are stopped at the end of the session (the stop switch is on)"
    return f"xprocess: {where}; processes keep running for the next run (--xstop stops them at the end)"


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """pytest-xdist: workers record their uses under the controller's session id."""
    node.workerinput["xprocess_session"] = node.config.stash[_XPROCESS_KEY]._session.id


@pytest.fixture(scope="session")
def xprocess(pytestconfig: pytest.Config) -> Iterator[XProcess]:
    """Starts or reuses the external processes the tests need (see ``XProcess.ensure``)."""
    xp = pytestconfig.stash[_XPROCESS_KEY]
    yield xp
    xp.close()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    item.config.stash[_XPROCESS_KEY]._session.test_starts(item.nodeid)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome: Any = yield
    report = outcome.get_result()
    report.sections.extend(item.config.stash[_XPROCESS_KEY]._session.sections(item.nodeid, report.failed))


@pytest.hookimpl(trylast=True)  # after the session fixtures' teardown, which may still use them
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    xp = session.config.stash.get(_XPROCESS_KEY, None)
    if xp is None or not xp._session.id:
        return
    ours = xp._session
    ours.release()  # this session's use ends (an xdist worker's, before the controller hears of it)
    uses = ours.uses()
    stop_mode = not ours.worker and _stop_switch(session.config)  # only the controller: workers may still share them
    if stop_mode:
        wanted = list(uses)
    elif exitstatus in (pytest.ExitCode.INTERRUPTED, pytest.ExitCode.INTERNAL_ERROR):
        wanted = [name for name, use in uses.items() if use.get("terminate_on_interrupt")]
    else:
        return
    if wanted:
        results = _stop({name: _Recorded.read(xp.getinfo(name)) for name in wanted}, _AT_SESSION_END)
        if not ours.worker:
            ours.stopped_at_end(results)
    ours.disarm(done=True)  # only once the stop is over: interrupted, it is the watchdog's


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    xp = config.stash.get(_XPROCESS_KEY, None)
    if xp is None or not xp._session.id or xp._session.worker:
        return
    uses = xp._session.uses()
    if not uses:
        return
    if all(
        use.get("kind", _REUSED) == _REUSED and not {"terminated", "died", "stopped"} & set(use)
        for use in uses.values()
    ):
        if terminalreporter.verbosity >= 0:  # nothing happened worth a section
            terminalreporter.write_line("xprocess: reused " + ", ".join(_escape(name) for name in sorted(uses)))
        return
    terminalreporter.write_sep("=", "xprocess")
    for name, use in sorted(uses.items()):
        terminalreporter.write_line(_summary_line(_escape(name), use))
        for during in use.get("died", {}).values():
            terminalreporter.write_line(f"{_escape(name)}: DIED during {during}")


_STOPPED_WORDS = {  # the stops a state notes (_mark_stopped), told in the summary of a session using it
    _FOR_XKILL: "stopped by --xkill",
    _AFTER_DEATH: "stopped by the watchdog of a session that was killed",
    _WHEN_IDLE: "stopped after its idle_timeout",
    "terminate()": "stopped by terminate() in another session",
    _AT_SESSION_END: "stopped at another session's end",
}


def _summary_line(name: str, use: Mapping[str, Any]) -> str:
    """The summary's line for a name: its first start (or reuse), what followed, the stop at the end."""
    line = f"{name}: {_summary_words(use)}"
    if use.get("more"):
        more = use["more"]
        line += f"; then {'another start' if more == 1 else f'{more} more starts, the last'}: "
        line += _summary_words(use["then"])
    for how, test in use.get("stopped", {}).values():
        line += f"; {_STOPPED_WORDS.get(how, 'stopped on purpose')} during {test}"
    done = use.get("terminated")
    ended = use.get("kind") in (_INTERRUPTED, _FAILED)
    if done is not None and not (done == 0 and ended):  # a failed start ended it: nothing to add
        line += {
            1: ", terminated at end",
            0: ", already gone at end",
            -1: ", FAILED to terminate at end",
            _IN_USE: ", left running (in use by another session)",
        }.get(done, "")
    return line


def _summary_words(use: Mapping[str, Any]) -> str:
    """The summary's words for one record of a session (see :meth:`_Session.used`)."""
    kind, why = use.get("kind", _REUSED), use.get("why") or ""
    if kind == _REUSED:
        return "reused"
    if kind == _STARTING:  # no outcome was recorded: the xdist worker starting it ended first
        return "its start did not finish (the xdist worker starting it ended during the start)"
    if kind == _INTERRUPTED:
        return "interrupted during its start"
    if kind == _FAILED:
        return f"FAILED to start: {why}"
    line = f"{kind} in {use.get('seconds', 0):.2f} s"
    before = [f"a {use['stop']:.1f} s stop"] if use.get("stop") else []
    before += [f"{use['prepared']:.1f} s in its starter"] if use.get("prepared") else []  # initdb, say
    if before:
        line += " after " + " and ".join(before)
    return line + (f" ({why})" if why else "")


def pytest_unconfigure(config: pytest.Config) -> None:
    xp = config.stash.get(_XPROCESS_KEY, None)
    if xp is None:
        return
    xp.close()
    xp._session.restore_signals()
    if xp._session._watchdog is not None:  # the session ended before its stop did
        xp._session.disarm(done=False)  # the watchdog stops what it used (and removes its file)
    elif xp._session.id and not xp._session.worker:
        with contextlib.suppress(OSError):
            xp._session.path.unlink()


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> int | None:
    show, kill, forget = config.option.xshow, config.option.xkill, config.option.xforget
    as_json = config.option.xjson
    if as_json is not None and (forget is not None or (kill, show) == (None, None)):
        raise pytest.UsageError("--xjson goes with --xshow or --xkill (pytest --xshow --xjson [NAME ...])")
    if show is None and kill is None and forget is None:
        return None
    xp = XProcess(config, config.rootpath)
    names = next(names for names in (kill, forget, show) if names is not None) + (as_json or [])
    messages = sys.stderr if as_json is not None else sys.stdout  # stdout holds the document alone
    try:
        infos, lost = _recorded_infos(xp, names, lost=forget is None)  # a lost record has nothing to forget
    except XProcessError as exc:
        _print(str(exc), sys.stderr)
        return pytest.ExitCode.USAGE_ERROR
    except (ValueError, LookupError) as exc:
        _print(f"xprocess: {exc}", sys.stderr)
        return pytest.ExitCode.USAGE_ERROR
    if kill is not None or forget is not None:
        if not infos:
            _print(f"no processes recorded in {xp.statedir}", messages)
        return _kill(infos, lost, as_json is not None) if kill is not None else _forget(infos, named=bool(forget))
    rows = _process_rows(infos, lost, named=bool(names))
    if not rows:
        _print(f"no processes recorded in {xp.statedir}", messages)
    if as_json is not None:
        _print_json({"processes": rows})
    else:
        for line in _table(rows, named=bool(names)):
            _print(line)
    return 0


def _recorded_infos(
    xp: XProcess, names: Sequence[str], lost: bool = True
) -> tuple[list[XProcessInfo], dict[str, list[_Proc]]]:
    """The recorded processes (those named, or all) and, with ``lost``, those whose record is gone
    but whose processes still run, found by their log or marker as ``ensure()`` finds them (after
    ``git clean -xdf``), with those processes. Unknown names raise ``LookupError``, a state
    directory ``ensure()`` would refuse (a link, another user's) ``XProcessError``: none is followed."""
    with contextlib.suppress(FileNotFoundError):
        _check_private_dir(xp.statedir)
    if names:
        infos = [xp.getinfo(name) for name in names]
        unknown = [i.name for i in infos if not i.controldir.is_dir() or i.controldir.is_symlink()]
        found = _lost(xp, unknown) if lost and unknown else {}
        unknown = [name for name in unknown if name not in found]
        if unknown:
            raise LookupError(f"no process recorded as {', '.join(map(repr, unknown))} in {xp.statedir}")
        return infos, found
    infos = []
    with contextlib.suppress(OSError):
        for entry in sorted(os.scandir(xp.statedir), key=lambda e: e.name):
            with contextlib.suppress(ValueError):
                if entry.is_dir(follow_symlinks=False):
                    infos.append(xp.getinfo(entry.name))
    found = _lost(xp, _names_in_logs(xp) - {i.name for i in infos}) if lost else {}
    infos += [xp.getinfo(name) for name in found]
    return sorted(infos, key=lambda i: i.name), found


def _names_in_logs(xp: XProcess) -> set[str]:
    """The names whose log, in this project's state directory, some process writes to."""
    statedir = os.fsdecode(_resolved(xp.statedir))
    exempt = _exempt()
    names = set()
    for pid in _OS.pids():
        if pid not in exempt:
            for directory in _OS.output_dirs(pid):
                parent, _, name = directory.rpartition("/")
                if parent == statedir:
                    names.add(name)
    return names


def _lost(xp: XProcess, names: Iterable[str]) -> dict[str, list[_Proc]]:
    """Of ``names`` (none recorded), those whose processes run, proven ours by their log or marker."""
    infos = []
    for name in names:
        with contextlib.suppress(ValueError):  # a directory name that is no name of ours
            infos.append(xp.getinfo(name))
    found = _find_ours({info.name: _Recorded(info, None) for info in infos}, tree=True)
    return {name: procs for name, procs in sorted(found.items()) if procs}


def _print(line: str, file: IO[str] | None = None) -> None:
    """Print ``line`` whatever the terminal's encoding, control characters escaped."""
    file = file or sys.stdout
    print(_printable(line, file), file=file)


def _printable(text: str, file: IO[str] | None = None) -> str:
    """``text`` as ``file`` can show it: control characters and what its encoding lacks escaped."""
    encoding = getattr(file or sys.stdout, "encoding", None) or "ascii"
    return _escape(text).encode(encoding, "backslashreplace").decode(encoding)


_SHOW_WIDTH = 100  # --xshow's lines fit this many columns (but for long names)
_JSON_VERSION = 1  # of --xjson's documents: a field renamed or removed raises it, one added does not


def _process_rows(
    infos: Sequence[XProcessInfo], lost: Mapping[str, list[_Proc]], named: bool = False
) -> list[dict[str, Any]]:
    """The facts ``--xshow`` gives of each process, as ``--xjson`` writes them and the table shows
    them: one gathering, two renderers. Without names, a name that never recorded a start has none."""
    rows = []
    for info in infos:
        row: dict[str, Any] = {"name": info.name, "status": "LIVE", "pid": None, "port": None, "uptime_s": None}
        row.update(command=[], log=str(info.logpath), holders=[], idle_stop_in_s=None, idle_timeout_s=None)
        row["lost_pids"] = []
        if info.name in lost:  # its record is gone: the processes found by their log or marker
            procs = lost[info.name]
            row["pid"] = min(procs, key=lambda p: (p.since, p.pid)).pid  # the first started
            row["lost_pids"] = sorted(p.pid for p in procs)
            rows.append(row)
            continue
        recorded = _Recorded.read(info)
        state, running = recorded.state, recorded.running
        if state is None and not named and not os.path.lexists(info.statepath):  # no start was ever recorded
            continue
        row["status"] = "LIVE" if running else "DEAD"
        if state is not None:
            row.update(pid=state.pid, port=state.port, command=[str(arg) for arg in state.args or ()])
            if running:
                if state.spawned_at is not None and 0 <= time.time() - state.spawned_at < 10**9:
                    row["uptime_s"] = round(time.time() - state.spawned_at, 3)
                row["holders"] = _OS.lock_holders(state.log)
                row.update(idle_timeout_s=state.idle, idle_stop_in_s=_idle_stop_in(recorded))
        rows.append(row)
    return rows


def _show(infos: Sequence[XProcessInfo], lost: Mapping[str, list[_Proc]], named: bool = False) -> list[str]:
    """``--xshow``: a row per process, with its command (whole for the names asked for) and log
    beneath it; without names, a name that never recorded a start has no row."""
    return _table(_process_rows(infos, lost, named), named)


def _table(rows: Sequence[Mapping[str, Any]], named: bool) -> list[str]:
    """``--xshow``'s table of :func:`_process_rows`, aligned, the command and log beneath each row."""
    table: list[tuple[list[str], list[str]]] = [(["NAME", "STATUS", "PID", "PORT", "UPTIME", "USERS"], [])]
    for row in rows:
        uptime = "-" if row["uptime_s"] is None else _duration(int(row["uptime_s"]))
        cells = [row["name"], row["status"], row["pid"], row["port"], uptime, ",".join(map(str, row["holders"]))]
        lines = []
        if row["lost_pids"]:
            lines.append(
                f"    its record is gone ({Path(row['log']).parent} was removed); found by its log or marker: "
                f"pid {', '.join(map(str, row['lost_pids']))}"
            )
            lines.append(
                f"    stop it: pytest --xkill {shlex.quote(row['name'])} (the next ensure() stops it too, then "
                "starts anew)"
            )
        elif row["command"]:
            command = _printable(shlex.join(row["command"]))
            room = _SHOW_WIDTH - len("    $ ")
            lines.append("    $ " + (command if named or len(command) <= room else command[: room - 3] + "..."))
        if not row["lost_pids"]:
            lines.append(f"    log: {row['log']}")
        if row["idle_timeout_s"] is not None:
            left, idle = row["idle_stop_in_s"], _duration(int(row["idle_timeout_s"]))
            when = f"in {_duration(int(left))}" if left is not None else f"{idle} after its last user ends"
            lines.append(f"    idle: stops {when}")
        table.append(([_printable("-" if cell in (None, "") else str(cell)) for cell in cells], lines))
    widths = [max(len(cells[i]) for cells, _ in table) for i in range(6)]
    out = []
    for cells, below in table:
        out.append("  ".join(cell.ljust(width) for cell, width in zip(cells, widths)).rstrip())
        out.extend(below)
    return out if len(table) > 1 else []


def _print_json(document: Mapping[str, Any]) -> None:
    """``--xjson``'s one document on stdout: ASCII only (json escapes the rest and every control
    character), so no terminal encoding or escape sequence can alter it."""
    sys.stdout.write(json.dumps({"version": _JSON_VERSION, **document}, indent=2) + "\n")
    sys.stdout.flush()


def _duration(seconds: int) -> str:
    """``45s``, ``12m05s``, ``3h04m``, ``2d05h``."""
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds // 60 % 60:02d}m"
    return f"{seconds // 86400}d{seconds // 3600 % 24:02d}h"


_KILL_WORDS = {1: "TERMINATED", 0: "NO PROCESS FOUND", -1: "FAILED TO TERMINATE"}


def _kill(infos: Sequence[XProcessInfo], lost: Mapping[str, list[_Proc]], as_json: bool = False) -> int:
    """``--xkill``: stop what runs under each name, overriding other sessions' leases and naming
    them; a line per name, or with ``as_json`` one document of the same results."""
    targets = {info.name: _Recorded.read(info) for info in infos}
    pids = {name: min(procs, key=lambda p: (p.since, p.pid)).pid for name, procs in lost.items()}
    results = _stop(targets, _FOR_XKILL)
    out = []
    for name, recorded in targets.items():
        result, holders = results[name]
        pid = recorded.state.pid if recorded.state else pids.get(name)
        out.append({"name": name, "pid": pid, "result": _KILL_WORDS[result]})  # type: ignore[index]
        if not as_json:
            note = f" (it was in use by {holders})" if holders and result else ""
            _print(f"{'-' if pid is None else pid} {name} {out[-1]['result']}{note}")
    if as_json:
        _print_json({"results": out})
    return 1 if any(result == -1 for result, _ in results.values()) else 0


def _forget(infos: Sequence[XProcessInfo], named: bool) -> int:
    """``--xforget``: under its start lock, remove the control directory of each name that has
    nothing running (a named one that has is an error); 1 if something named was not forgotten."""
    status = 0
    for info in infos:
        quoted = shlex.quote(info.name)
        try:
            fd = _open_lock(info.controldir / LOCK_NAME)
        except XProcessError as exc:
            _print(f"{info.name} NOT FORGOTTEN: {exc}")
            status = 1
            continue
        try:
            if not _flock(fd):
                _print(f"{info.name} NOT FORGOTTEN: another session is starting it")
                status = 1
                continue
            alive = _find_ours({info.name: _Recorded.read(info)}, tree=True)[info.name]
            if alive:
                pids = ", ".join(str(p.pid) for p in alive)
                if named:
                    _print(
                        f"{info.name} NOT FORGOTTEN: it is LIVE (pid {pids}); stop it first: pytest --xkill {quoted}"
                    )
                    status = 1
                else:
                    _print(f"{info.name} KEPT: it is LIVE (pid {pids})")
                continue
            try:
                shutil.rmtree(info.controldir)
            except OSError as exc:
                _print(f"{info.name} NOT FORGOTTEN: {exc.strerror or exc} ({exc.filename or info.controldir})")
                status = 1
                continue
            _print(f"{info.name} FORGOTTEN")
        finally:
            os.close(fd)
    return status
