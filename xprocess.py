"""xprocess: start the long-running processes a test suite needs once, and reuse them across runs.

In a conftest fixture: ``pid, logpath = xprocess.ensure("myserver", MyStarter)``.

PYTEST_DONT_REWRITE: no asserts here, so pytest need not rewrite (re-compile) it at each start-up.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import logging
import os
import re
import signal
import stat
import sys
import time
import warnings
from pathlib import Path
from types import MappingProxyType, SimpleNamespace
from typing import IO, TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence

import pytest

if TYPE_CHECKING:
    import subprocess


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
PORT_NAME = "port"  # the port a starter read, kept for the next start
KEPT_LOGS = 5  # logs of earlier starts kept beside the current one (xprocess.log.1 is the newest)
TERMINATE_TIMEOUT = 10.0  # seconds between SIGTERM and SIGKILL
STATE_VERSION = 3  # 3: the log file (device, inode) is recorded: the proof of ownership
MARKER_ENV = "XPROCESS_ID"  # "<key of project and name>:<start id>" in every started process and its descendants
STOP_ENV = "XPROCESS_STOP"

_TAIL_LINES = 20  # log lines quoted in an error
_REPORT_LINES = 50  # log lines added to a failed test's report
_REPORT_BYTES = 64 * 1024
_CHUNK = 256 * 1024  # log bytes read at a time
_MAX_LINE = 1024 * 1024  # longer lines are cut to this many bytes before matching
_ZOMBIE_WAIT = 0.2  # after terminating, how long to wait for zombies that are not ours to reap
_PROBE_TIMEOUT = 1.0  # connect/read timeout of listening() and http_ok()
_REUSE_CHECK_TIMEOUT = 5.0  # startup_check before a reuse: longer counts as failed
_SLOW_STOP = 1.0  # a stop before a start that took this long is named in the summary
_PAUSE = 0.1  # a last line without its newline is matched once output paused this long
_POLL = 0.01  # wake-up interval where the OS gives no event for a log write or a child's exit
_MAX_STATE = 1024 * 1024  # a state file is a few hundred bytes; more is garbage
_MAX_CONFIG = 16 * 1024 * 1024  # a config file is read whole for its digest: a bigger one is no config
_TOKEN_RE = re.compile(r"[0-9a-f]{16}:[0-9a-f]{16}\Z")  # a marker: key of project and name, start id
_MARKER_PREFIX = MARKER_ENV.encode() + b"="
_PROC_FS = sys.platform.startswith("linux") and os.path.isdir("/proc/self")
# Popen arguments the plugin must own: the log redirection, no shell, its own session, the env.
_OWNED_POPEN_KWARGS = frozenset({"args", "stdout", "stderr", "shell", "env", "start_new_session", "process_group"})

_STOP_HELP = (
    "terminate, at the end of the session, every process the session started or reused "
    f"(default: keep them running for the next run; env {STOP_ENV}, ini xprocess_stop)"
)
_XPROCESS_KEY = pytest.StashKey["XProcess"]()

log = logging.getLogger("xprocess")


def __dir__() -> list[str]:
    """What ``dir(xprocess)`` lists: the API and the pytest hooks. pytest and pluggy examine every
    name a plugin module lists, at every start-up (a third of this plugin's start-up cost went
    there); the private helpers need not be examined."""
    return [*__all__, "xprocess", *(name for name in globals() if name.startswith("pytest_"))]


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
        self._reason = ""  # the summary's words for a failed start ("exited with code 1 before it was ready")


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
    check_on_reuse: bool = True  # run startup_check once before a running process is reused
    config_files: Sequence[str | os.PathLike[str]] = ()  # their contents are part of the configuration
    requires: Sequence[str] = ()  # names of processes that must run first; a restart of one restarts this

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

    def listening(self, port: int | None = None, host: str = "127.0.0.1") -> bool:
        """Whether ``port`` (default :attr:`port`) on ``host`` accepts a TCP connection now."""
        import socket

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
        import urllib.parse

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


class _Launch(SimpleNamespace):
    """A starter's settings, read once and checked. (Not a NamedTuple: building one at import
    compiles each field's annotation, a fifth of this module's import time.)"""

    args: list[str]
    env: dict[str, str] | None
    cwd: Path
    pattern: re.Pattern[str] | None
    pattern_from: Any  # the starter, when its pattern is a property read after the spawn
    starter: Any  # what was read: its port, its check_on_reuse
    check: Callable[[], Any] | None
    timeout: float
    max_read_lines: int | None
    popen_kwargs: dict[str, Any]
    terminate_on_interrupt: bool
    config_files: dict[str, str]  # each config file, as the starter names it: a digest of its content
    requires: dict[str, str]  # each required name: the start id (marker) of its running process

    def fingerprint(self) -> dict[str, str]:
        """A digest per part of what was started; a changed part means a restart. Config files and
        required processes have a key each (none when there are none: older states stay equal),
        so that the reason for a restart can name the one that changed."""
        import hashlib

        pattern = (self.pattern.pattern, self.pattern.flags) if self.pattern else None
        parts = {
            "args": self.args,
            "env": self.env,
            "cwd": str(self.cwd),
            "popen_kwargs": self.popen_kwargs,
            "pattern": "(a property)" if self.pattern_from is not None else pattern,
            **{f"config file {path}": digest for path, digest in self.config_files.items()},
            **{f"requires {name}": token for name, token in self.requires.items()},
        }
        return {
            key: hashlib.sha256(json.dumps(value, sort_keys=True, default=_stable_repr).encode()).hexdigest()[:16]
            for key, value in parts.items()
        }

    def read_pattern(self, name: str) -> _Launch:
        """With the pattern a property, read it now (the process runs) and check it."""
        __tracebackhide__ = True
        if self.pattern_from is None:
            return self
        pattern = _check_pattern(f"xprocess {name!r}", self.pattern_from.pattern)
        if pattern is None and self.check is None:
            raise TypeError(f"xprocess {name!r}: the starter needs a pattern or a startup_check method")
        return _Launch(**{**vars(self), "pattern": pattern})


def _stable_repr(value: object) -> str:
    """What stands for a value JSON cannot hold, in a fingerprint: the same in every run (a
    function's repr holds its memory address, so it is named by module and qualified name)."""
    if isinstance(value, functools.partial):
        return f"functools.partial({_stable_repr(value.func)}, {value.args!r}, {value.keywords!r})"
    if callable(value) and hasattr(value, "__qualname__"):
        return f"{getattr(value, '__module__', '?')}.{value.__qualname__}"
    return repr(value)


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


def _launch(name: str, starter: Any, control_dir: Path, process: XProcess) -> _Launch:
    """Turn a ``preparefunc(cwd)`` or a ``ProcessStarter`` into a checked :class:`_Launch`.

    Called under the per-name lock, once per ``ensure()``, before anything is stopped or
    spawned: a starter whose properties do work (create a cluster, pick a port) does it in one
    session at a time. A ``pattern`` that is a property is left for
    :meth:`_Launch.read_pattern`, after the spawn.

    A plain function is called as its signature allows: one that accepts two positional
    arguments as pytest-xprocess 1.x called it, ``preparefunc(control_dir, process)``, any other
    as the original API did, ``preparefunc(cwd)``. What it returns decides the rest: a tuple
    ``(pattern, args)`` or ``(pattern, args, env)``, or (1.x) a ``ProcessStarter`` subclass or
    instance.

    :raises TypeError, ValueError, FileNotFoundError: naming the bad value; nothing was started.
    """
    __tracebackhide__ = True  # a bad starter's error shows the caller's line, not the plugin's
    import subprocess

    where = f"xprocess {name!r}"
    s: Any = None
    if callable(starter) and not isinstance(starter, (type, ProcessStarter)):
        got = starter(control_dir, process) if _takes_two(starter) else starter(control_dir)
        if isinstance(got, tuple) and len(got) in (2, 3):
            s = ProcessStarter(control_dir, process)
            s.pattern, s.args, s.env = got if len(got) == 3 else (*got, None)
        elif isinstance(got, ProcessStarter) or (isinstance(got, type) and issubclass(got, ProcessStarter)):
            starter = got
        else:
            raise TypeError(
                f"{where}: preparefunc must return (pattern, args), (pattern, args, env) or a ProcessStarter, "
                f"it returned {got!r}"
            )
    if s is not None:
        pass
    elif isinstance(starter, type) and issubclass(starter, ProcessStarter):
        s = starter(control_dir, process)
    elif isinstance(starter, ProcessStarter):
        s = starter
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
    unknown = sorted(set(kwargs) - _popen_keywords())
    if unknown:  # fails here, not in Popen after the old process was stopped
        raise TypeError(f"{where}: popen_kwargs has arguments subprocess.Popen does not take: {', '.join(unknown)}")
    kwargs = {"stdin": subprocess.DEVNULL, **kwargs}
    cwd = kwargs.pop("cwd", None)
    # a relative cwd is from the current directory, as Popen would have it
    cwd = _resolved(control_dir.parent) / control_dir.name if cwd is None else Path(os.fspath(cwd)).resolve()
    if not cwd.is_dir():
        raise FileNotFoundError(f"{where}: its working directory {str(cwd)!r} does not exist")

    # A property (pytest-xprocess 0.x read it once the process ran) is read after the spawn.
    deferred = _is_descriptor(type(s), "pattern")
    pattern = None if deferred else _check_pattern(where, s.pattern)
    check = getattr(s, "startup_check", None)
    if pattern is None and not deferred and check is None:
        raise TypeError(f"{where}: the starter needs a pattern or a startup_check method to know when it is ready")

    timeout = s.timeout
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ValueError(f"{where}: timeout must be a positive number of seconds, got {timeout!r}")
    max_lines = s.max_read_lines
    if max_lines is not None and (isinstance(max_lines, bool) or not isinstance(max_lines, int) or max_lines < 1):
        raise ValueError(f"{where}: max_read_lines must be None or a positive int, got {max_lines!r}")

    if "executable" not in kwargs:
        _check_executable(where, argv[0], cwd, env)
    return _Launch(
        args=argv, env=env, cwd=cwd, pattern=pattern, pattern_from=s if deferred else None, starter=s,
        check=check, timeout=float(timeout), max_read_lines=max_lines, popen_kwargs=kwargs,
        terminate_on_interrupt=bool(s.terminate_on_interrupt),
        config_files=_config_digests(name, s.config_files, process.rootdir),
        requires=_required_starts(name, s.requires, process),
    )  # fmt: skip


def _takes_two(func: Callable[..., Any]) -> bool:
    """Whether ``func`` accepts two positional arguments (a 1.x ``preparefunc(control_dir, process)``)."""
    import inspect

    try:
        inspect.signature(func).bind(None, None)
    except (TypeError, ValueError):  # ValueError: no signature to read (some builtins)
        return False
    return True


def _config_digests(name: str, paths: object, rootdir: Path) -> dict[str, str]:
    """A digest of each config file's content, keyed by the path as the starter gave it (a
    relative one is from the project directory).

    :raises TypeError: ``paths`` is not a list of paths.
    :raises XProcessError: a file is missing, unreadable, not a regular file or too big.
    """
    __tracebackhide__ = True
    import hashlib

    where = f"xprocess {name!r}"
    if isinstance(paths, (str, bytes, os.PathLike)) or not isinstance(paths, Sequence):
        raise TypeError(f"{where}: config_files must be a list of paths, got {paths!r}")
    digests = {}
    for path in paths:
        if not isinstance(path, (str, os.PathLike)) or not isinstance(os.fspath(path), str) or not os.fspath(path):
            raise TypeError(f"{where}: config_files items must be str or os.PathLike paths, got {path!r}")
        given = os.fspath(path)
        full = rootdir / given  # an absolute path replaces rootdir
        digest = hashlib.sha256()
        try:  # non-blocking: a FIFO in a file's place must not hang the session
            fd = os.open(full, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
            with open(fd, "rb") as f:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    raise OSError(errno.EINVAL, "it is not a regular file")
                size = 0
                for chunk in iter(lambda: f.read(_CHUNK), b""):
                    size += len(chunk)
                    if size > _MAX_CONFIG:
                        raise OSError(errno.EFBIG, f"it is bigger than {_MAX_CONFIG >> 20} MiB")
                    digest.update(chunk)
        except OSError as exc:
            raise XProcessError(
                f"{where}: its config file {given!r} ({full}) cannot be read: {exc.strerror or exc}", name=name
            ) from None
        digests[given] = digest.hexdigest()[:16]
    return digests


def _required_starts(name: str, names: object, process: XProcess) -> dict[str, str]:
    """The start id of each process ``name`` requires, all of which must be running.

    :raises TypeError, ValueError: ``names`` is not a list of other process names.
    :raises XProcessError: a required process is not running.
    """
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
        info = process.getinfo(required)  # a bad name: ValueError, naming it
        state = info._state() if info.isrunning() else None
        if state is None:
            raise XProcessError(
                f"{where} requires {required!r}, which is not running: ensure it first (e.g. make the "
                f"{name} fixture depend on the {required} fixture)",
                name=name,
            )
        starts[required] = state["token"]
    return starts


def _is_descriptor(cls: type, attr: str) -> bool:
    """Whether ``cls.attr`` is computed when read (a property, ``cached_property``, ...)."""
    import inspect

    value = inspect.getattr_static(cls, attr, None)
    return hasattr(type(value), "__get__") and not isinstance(value, (str, re.Pattern, type(None)))


def _check_pattern(where: str, pattern: object) -> re.Pattern[str] | None:
    __tracebackhide__ = True
    if isinstance(pattern, str):
        try:
            return re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"{where}: invalid pattern {pattern!r}: {exc}") from None
    if pattern is None or (isinstance(pattern, re.Pattern) and isinstance(pattern.pattern, str)):
        return pattern
    raise TypeError(f"{where}: pattern must be a str regex or None, got {pattern!r}")


@functools.cache
def _popen_keywords() -> frozenset[str]:
    import inspect
    import subprocess

    return frozenset(inspect.signature(subprocess.Popen).parameters)


@functools.lru_cache(maxsize=64)
def _resolved(path: Path) -> Path:
    """``path.resolve()``, once per path (a reuse resolves the project directory each time)."""
    return path.resolve()


def _choose_port(control_dir: Path, process: Any) -> int:
    """The kept port of ``control_dir`` if its process runs or the port is free, else a free one
    (kept, when the control directory exists). Called under the name's lock during a start."""
    path = control_dir / PORT_NAME
    try:
        with _open_nofollow(path) as f:
            kept: int | None = int(f.read(16))
    except (OSError, ValueError):
        kept = None
    if kept is not None and 0 < kept < 65536:
        running = isinstance(process, XProcess) and process.getinfo(control_dir.name).isrunning()
        if running or _port_free(kept):
            return kept
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    if control_dir.is_dir():
        tmp = path.with_name(f".{PORT_NAME}.{os.getpid()}.tmp")
        with contextlib.suppress(OSError):
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _PRIVATE, 0o600)
            try:
                os.write(fd, str(port).encode())
            finally:
                os.close(fd)
            os.replace(tmp, path)
    return port


def _port_free(port: int) -> bool:
    """Whether a server could listen on ``port`` of 127.0.0.1 (TIME_WAIT connections do not stop it)."""
    import socket

    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _check_executable(where: str, exe: str, cwd: Path, env: Mapping[str, str] | None) -> None:
    __tracebackhide__ = True
    import shutil

    if os.sep in exe:
        path = cwd / exe  # an absolute exe replaces cwd
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise FileNotFoundError(f"{where}: {exe!r} is not an executable file")
    elif shutil.which(exe, path=os.pathsep.join(os.get_exec_path(env))) is None:
        raise FileNotFoundError(f"{where}: executable {exe!r} not found on PATH")


# --- state on disk ---


def _read_state(path: Path) -> dict[str, Any] | None:
    """The recorded state, or None (with a warning if it exists but cannot be trusted or used).

    The file holds JSON lines: the start record, then updates (readiness) appended to it. A last
    line without its newline is an append in progress, or cut short by a crash: it is ignored.
    It is read only from a regular file (not a link) owned by this user and writable by no one
    else; what it names is ours only if :func:`_owned` proves it.
    """
    problem = ""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:
        problem = f"cannot be read ({exc.strerror or exc}; a symbolic link is refused)"
    else:
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                problem = "is not a regular file"
            elif st.st_uid != os.geteuid() or st.st_mode & 0o022:
                problem = f"belongs to uid {st.st_uid} or is writable by others: not trusted (remove it)"
            else:
                text = os.read(fd, min(st.st_size + 1, _MAX_STATE)).decode("utf-8")
        except (OSError, ValueError) as exc:
            problem = f"cannot be read ({exc})"
        finally:
            os.close(fd)
    if not problem:
        state: Any = None
        try:
            state = json.loads(text.partition("\n")[0])
            for line in text.split("\n")[1:-1]:
                state.update(json.loads(line))
        except (ValueError, TypeError, AttributeError, RecursionError):
            state = None
        token = state.get("token") if isinstance(state, dict) else None
        if not isinstance(state, dict):
            problem = "is not valid JSON lines (empty, truncated or garbage)"
        elif isinstance(state.get("version"), int) and state["version"] > STATE_VERSION:
            problem = f"was written by a newer xprocess (format {state['version']})"
        elif isinstance(state.get("version"), int) and state["version"] < STATE_VERSION:
            problem = (
                f"was written by an older xprocess (format {state['version']}); its processes are found by their marker"
            )
        elif not (
            state.get("version") == STATE_VERSION
            and type(state.get("pid")) is int
            and 1 < state["pid"] < 2**31
            and isinstance(state.get("start"), str)
            and isinstance(token, str)
            and _TOKEN_RE.match(token)
            and isinstance(state.get("fingerprint"), dict)
            and isinstance(state.get("log"), list)
            and len(state["log"]) == 2
            and all(type(n) is int for n in state["log"])
        ):
            problem = "does not hold a recorded process"
        else:
            return state
    _warn(f"{path} {problem}; treating the process as not running")
    return None


def _warn(message: str) -> None:
    """Warn with an :class:`XProcessWarning` at the caller's own line (the first frame outside this
    module, pytest and pluggy: the conftest that called ``ensure()``), once per line and message."""
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


def _write_state(path: Path, state: dict[str, Any], update: dict[str, Any] | None = None) -> None:
    """Replace the state file atomically (readers see the old or the new one, never half), or
    append ``update`` to it as one line (readers ignore it until it is whole).

    Appending keeps the ready transition cheap: replacing a file frees the old one's blocks,
    which costs a quarter of a millisecond on a disk mounted with ``discard``. Neither follows
    a symbolic link planted in the file's place: an append refuses it, a replacement replaces it.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        if update is not None:
            try:  # one write(2) of one line: whole, or (after a crash) ignored by readers
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError as exc:
                if exc.errno != errno.ELOOP:
                    raise
                return _write_state(path, {**state, **update})
            try:
                os.write(fd, (json.dumps(update) + "\n").encode())
            finally:
                os.close(fd)
            return None
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, (json.dumps(state) + "\n").encode())
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise XProcessError(
            f"xprocess cannot write its state {path}: {exc.strerror or exc} (free some space or make it writable)"
        ) from exc
    return None


# --- which processes are ours ---
#
# A process is ours when the plugin started it for this name in this project, or it descends from
# one that was, proven by evidence the plugin put there itself, never by "same user":
#
# - its stdout or stderr is the log file the plugin created for that start. The file (device and
#   inode, recorded in the state) stays on fd 1/2 of the server and its children through a
#   rewritten title or environment, another user id, a renamed project and a deleted .xprocess
#   (the kernel then names it "<path> (deleted)"); a copied project's log is another inode;
# - or its environment still shows the marker ``XPROCESS_ID=<key of project and name>:<start id>``.
#
# The recorded process must also be a process (not a thread) with the recorded pid *and* exact
# start (clock ticks since boot, with the boot id). Every caller asks :func:`_owned`;
# :func:`_find_ours` adds its descendants, its session, and every process whose output is a log of
# the name in this project's control directory or whose marker names it (what earlier starts left
# when their state was lost). Never pid 1, this process or its ancestors.


class _Proc:
    """A snapshot of one process."""

    __slots__ = ("pid", "ppid", "sid", "since", "start", "stopped", "zombie")

    def __init__(
        self, pid: int, start: str, since: float, ppid: int, sid: int, zombie: bool, stopped: bool = False
    ) -> None:
        self.pid = pid
        self.start = start  # with the pid, the identity of a process: a recycled pid has another start
        self.since = since  # the start as a number, to order processes (clock ticks, or seconds)
        self.ppid = ppid
        self.sid = sid
        self.zombie = zombie
        self.stopped = stopped  # SIGSTOP: the kernel still accepts its connections, it answers none

    def __repr__(self) -> str:
        return f"<process {self.pid}>"


@functools.cache
def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


def _proc_file(pid: int, name: str) -> bytes | None:
    """The content of ``/proc/<pid>/<name>``, or None if it cannot be read."""
    try:
        fd = os.open(f"/proc/{pid}/{name}", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
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


def _proc(pid: int) -> _Proc | None:
    """A snapshot of process ``pid``, or None if there is none (or it cannot be seen)."""
    if _PROC_FS:
        data = _proc_file(pid, "stat")
        if data is None:
            return None
        fields = data[data.rfind(b")") + 2 :].split(None, 20)
        try:  # state, ppid, pgrp, session, ... starttime (fields 3, 4, 5, 6 and 22 of proc(5))
            ticks, state = int(fields[19]), fields[0]
            return _Proc(
                pid, f"{_boot_id()}:{ticks}", ticks, int(fields[1]), int(fields[3]), state == b"Z", state in b"Tt"
            )
        except (IndexError, ValueError):
            return None
    import psutil

    try:
        p = psutil.Process(pid)
        with p.oneshot():
            status, created = p.status(), p.create_time()
            zombie = status == psutil.STATUS_ZOMBIE
            stopped = status in (psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP)
            return _Proc(pid, repr(created), created, p.ppid(), 0 if zombie else os.getsid(pid), zombie, stopped)
    except (psutil.Error, OSError):
        return None


def _pids() -> list[int]:
    if _PROC_FS:
        return [int(n) for n in os.listdir("/proc") if n.isdigit()]
    import psutil

    return psutil.pids()


def _marker_of(pid: int) -> str | None:
    """The ``XPROCESS_ID`` in ``pid``'s environment: "" when it shows none, None when unreadable.

    Servers that set their process title (Redis, PostgreSQL's workers) overwrite the memory the
    environment is read from: they show none.
    """
    if _PROC_FS:
        data = _proc_file(pid, "environ")
        if data is None:
            return None
        at = data.find(b"\0" + _MARKER_PREFIX)
        if at < 0 and not data.startswith(_MARKER_PREFIX):
            return ""
        value = data[at + 1 + len(_MARKER_PREFIX) :] if at >= 0 else data[len(_MARKER_PREFIX) :]
        return value.split(b"\0", 1)[0].decode("ascii", "replace")
    import psutil

    try:
        return psutil.Process(pid).environ().get(MARKER_ENV, "")
    except (psutil.Error, OSError):
        return None


def _leads(pid: int) -> bool:
    """Whether ``pid`` is a process, not one of its threads: ``/proc/<tid>`` resolves for a thread
    too, and a signal to a thread id reaches its whole process."""
    if not _PROC_FS:
        return True
    status = _proc_file(pid, "status") or b""
    at = status.find(b"\nTgid:")
    return at >= 0 and status[at + 6 :].split(None, 1)[:1] == [str(pid).encode()]


def _outputs(pid: int) -> list[tuple[str, tuple[int, int], int, int]]:
    """Where ``pid``'s stdout and stderr go, when they are regular files: the path the kernel
    gives (ending in " (deleted)" once it was removed), the file's (device, inode), its owner and
    the fd (1 or 2)."""
    found = []
    if _PROC_FS:
        for fd in (1, 2):
            link = f"/proc/{pid}/fd/{fd}"
            try:
                st = os.stat(link)  # the open file itself, removed or not
                if stat.S_ISREG(st.st_mode):
                    found.append((os.readlink(link), (st.st_dev, st.st_ino), st.st_uid, fd))
            except OSError:
                continue
        return found
    import psutil

    try:
        files = psutil.Process(pid).open_files()
    except (psutil.Error, OSError):
        return found
    for f in files:
        if getattr(f, "fd", -1) in (1, 2):
            with contextlib.suppress(OSError):
                st = os.stat(f.path)  # by its path: without /proc, the file now there
                found.append((f.path, (st.st_dev, st.st_ino), st.st_uid, f.fd))
    return found


def _log_dir(path: str) -> str | None:
    """The control directory of ``path`` if it names a log of the plugin's (current, or an
    earlier start's), removed or not; else None."""
    if path.endswith(" (deleted)"):
        path = path[: -len(" (deleted)")]
    head, _, tail = path.rpartition("/")
    if tail == LOG_NAME or (tail.startswith(LOG_NAME + ".") and tail[len(LOG_NAME) + 1 :].isdigit()):
        return head
    return None


def _exempt() -> frozenset[int]:
    """Pids never signalled: init, this process and its ancestors (a state may name them)."""
    return _ancestors(os.getpid())


@functools.cache
def _ancestors(me: int) -> frozenset[int]:
    # Still right later: an orphan is adopted by init or by a subreaper, an ancestor already here.
    pids = {0, 1, me}
    pid = os.getppid()
    while pid not in pids:
        pids.add(pid)
        proc = _proc(pid)
        if proc is None:
            break
        pid = proc.ppid
    return frozenset(pids)


def _owned(state: Mapping[str, Any] | None, info: XProcessInfo) -> tuple[_Proc | None, str]:
    """The recorded process if it is proven to be the one recorded (alive or a zombie), else
    None and why not: the one answer to "is this process ours?" that every caller uses.

    Proof: the recorded pid is a process with the recorded start, and either writes to the log
    recorded for it, which is this project's (the log in ``info``'s control directory, or a log
    whose path the kernel gives there), or still shows the recorded marker, which names this
    project and name. ``state`` was checked by :func:`_read_state`.
    """
    if not state or "pid" not in state:
        return None, "nothing was recorded"
    pid = state["pid"]
    proc = _proc(pid)
    if proc is None:
        return None, "it had stopped"
    if proc.start != state["start"] or pid in _exempt() or not _leads(pid):
        return None, f"its pid {pid} now belongs to another process"
    if proc.zombie:  # it has ended (a zombie shows no files, no environment): nothing to prove or signal
        return proc, ""
    log = tuple(state["log"])
    outputs = _outputs(pid)
    if any(ident == log for _, ident, _, _ in outputs):
        try:
            st = os.lstat(info.logpath)
            here = (st.st_dev, st.st_ino) == log
        except OSError:
            here = False
        if here or any(ident == log and _log_dir(path) == info._where for path, ident, _, _ in outputs):
            return proc, ""
        return None, "its state was recorded by another project directory (a copy?): its process is not this project's"
    marker = _marker_of(pid)
    if marker and marker == state["token"] and marker.startswith(info._key):
        return proc, ""
    return None, f"its state names pid {pid}, which is not ours (it does not write to the log recorded for it)"


_Targets = Mapping[str, "tuple[XProcessInfo, Mapping[str, Any] | None]"]


def _find_ours(targets: _Targets, tree: bool) -> dict[str, list[_Proc]]:
    """The live processes of each name: ``{name: (info, state)}``, ``state`` what
    :func:`_read_state` trusted (or None).

    Ours are: the recorded process if :func:`_owned` proves it; with ``tree``, its descendants
    and the members of the session it leads (it was started in a new one), and every process
    whose output is a log in the name's control directory (owned by this user) or whose marker
    names the name in this project: daemons that left the session, and what earlier starts of the
    name left behind when their state was lost (a killed pytest, a failed write, a deleted
    ``.xprocess``), title-rewriting servers included. Never this process or its ancestors.
    """
    found: dict[str, dict[int, _Proc]] = {name: {} for name in targets}
    roots = {}
    keys: dict[str, str] = {}
    floor = float("inf")  # no process carrying a marker of these names started before this one
    trusted = []  # the states that may narrow the search: proven, or naming a pid no process has now
    for name, (info, state) in targets.items():
        root, why = _owned(state, info)
        if root is not None:
            found[name][root.pid] = root
            roots[root.pid] = name
            if state:  # a renamed project: its processes carry the old key (only a proven state says so)
                keys.setdefault(state["token"][:17], name)
        if root is None and why != "it had stopped":
            state = None  # forged, copied, or its pid recycled: nothing in it says where ours are
        trusted.append(state)
        floor = min(floor, _since(state))
    if tree:
        exempt = _exempt()
        keys.update({info._key: name for name, (info, _) in targets.items()})
        dirs = {info._where: name for name, (info, _) in targets.items()}
        me = os.geteuid()
        candidates = [pid for pid in _newer_pids(trusted) if pid not in exempt]

        def evidence(pid: int) -> str | None:
            """The name whose log ``pid`` writes to, or whose marker it shows, if any."""
            owner = next((dirs[d] for d in _output_dirs(pid) if d in dirs), None)
            if owner is not None and not any(
                uid == me and dirs.get(_log_dir(path) or "") == owner for path, _, uid, _ in _outputs(pid)
            ):
                owner = None  # a log of ours is a file this user created
            if owner is None:
                marker = _marker_of(pid)
                owner = keys.get(marker[:17]) if marker and _TOKEN_RE.match(marker) else None
            return owner

        if not roots:  # no tree to walk (the state was lost): a process is read only if it is of a name
            for pid in candidates:
                owner = evidence(pid)
                p = _proc(pid) if owner is not None else None
                if p is not None and p.since >= floor:
                    found[owner][pid] = p  # type: ignore[index]
            candidates = []
        procs = [p for p in map(_proc, candidates) if p is not None]
        children: dict[int, list[_Proc]] = {}
        for p in procs:
            children.setdefault(p.ppid, []).append(p)
        for p in procs:
            owner = roots.get(p.sid) if p.pid not in roots else None
            if owner is None and p.since >= floor:  # only they can be of these names: look
                owner = evidence(p.pid)
            if owner is not None:
                found[owner][p.pid] = p
        for pid, name in roots.items():  # descendants, down from the recorded process
            todo = [pid]
            while todo:
                for child in children.get(todo.pop(), ()):
                    if child.pid not in found[name]:
                        found[name][child.pid] = child
                        todo.append(child.pid)
    return {name: [p for p in procs.values() if not p.zombie] for name, procs in found.items()}


def _output_dirs(pid: int) -> list[str]:
    """The control directories of the logs ``pid`` writes to (the cheap look of a sweep through
    every process: a readlink, the file itself is looked at only for a match).

    It reads fd 1, and fd 2 only where fd 1 was sent to /dev/null: a server that keeps its
    stderr on the log but not its stdout does that (a daemon), one that moves its stderr to a
    file of its own (nginx's error_log) keeps its stdout."""
    if not _PROC_FS:
        return [d for d in (_log_dir(path) for path, _, _, _ in _outputs(pid)) if d]
    try:
        out = os.readlink(f"/proc/{pid}/fd/1")
        if out == "/dev/null":
            out = os.readlink(f"/proc/{pid}/fd/2")
    except OSError:
        return []
    d = _log_dir(out)
    return [d] if d else []


def _forks() -> int | None:
    """How many processes (and threads) the machine has created since boot (Linux)."""
    if _PROC_FS:
        with contextlib.suppress(OSError, ValueError), open("/proc/stat", "rb") as f:
            for line in f:
                if line.startswith(b"processes "):
                    return int(line.split()[1])
    return None


def _newer_pids(states: Sequence[Mapping[str, Any] | None]) -> list[int]:
    """The pids that may belong to a process started after each recorded start: all of them,
    unless the recorded pids and the count of forks since prove that only those allocated after
    the recorded pids can be (pids are allocated cyclically, so the newer ones lie between a
    recorded pid and the last one allocated, until that many forks could have wrapped past it).
    On a busy machine this spares reading a thousand processes that are older than the server."""
    pids = _pids()
    if not _PROC_FS:
        return pids
    try:
        with open("/proc/sys/kernel/ns_last_pid", "rb") as f:
            last = int(f.read())
        with open("/proc/sys/kernel/pid_max", "rb") as f:
            room = int(f.read()) - 300 - len(pids)  # ids the allocator can hand out before a wrap
    except (OSError, ValueError):
        return pids
    forks = _forks()
    recorded = []
    for state in states:
        then = state.get("forks") if state else None
        if forks is None or type(then) is not int or not 0 <= forks - then < room or not _since(state):
            return pids
        recorded.append(state["pid"])  # type: ignore[index]

    def newer(pid: int) -> bool:
        return any(p < pid <= last if p <= last else pid > p or pid <= last for p in recorded)

    return [pid for pid in pids if newer(pid)]


def _since(state: Mapping[str, Any] | None) -> float:
    """The earliest start a process of ``state``'s name can have: every start sweeps what earlier
    ones left, so none is older than the recorded start (with nothing recorded: any)."""
    if state and isinstance(state.get("start"), str):
        with contextlib.suppress(ValueError):
            boot, _, start = state["start"].rpartition(":")
            if boot == _boot_id() or not _PROC_FS:
                return float(start)
    return 0.0


def _terminate(
    targets: _Targets, timeout: float, tree: bool = True, found: dict[str, list[_Proc]] | None = None
) -> dict[str, int]:
    """SIGTERM the processes of every name at once, SIGKILL what outlives ``timeout``, and return
    once they are gone (zombies left for init to reap are waited for, briefly).

    A stopped process (SIGSTOP) is continued after its SIGTERM, so that it can handle it.

    :param found: what :func:`_find_ours` found, when the caller already asked it.
    :returns: per name 1 (terminated), 0 (nothing to do) or -1 (something survived).
    """
    targets_found = found if found is not None else _find_ours(targets, tree)
    owner = {p.pid: name for name, procs in targets_found.items() for p in procs}
    failed: set[str] = set()
    pending = [p for procs in targets_found.values() for p in procs]
    everything = list(pending)
    if not pending:
        return {name: 0 for name in targets_found}
    with _subreaper():  # the orphans of what dies are reaped here, not whenever init gets to them
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 2.0)):
            refused = set()
            for proc in pending:
                try:
                    _signal(proc, sig)
                    if sig == signal.SIGTERM and proc.stopped:
                        _signal(proc, signal.SIGCONT)
                except PermissionError:  # not ours to signal after all: no use waiting for it
                    refused.add(proc)
                    failed.add(owner[proc.pid])
            pending = _wait_gone([p for p in pending if p not in refused], wait, zombies_gone=True)
            if not pending:
                break
        failed.update(owner[p.pid] for p in pending)
        left = _wait_gone(everything, _ZOMBIE_WAIT, zombies_gone=False)
    if left:
        log.info("xprocess: %s left as zombies for their parent (or init) to reap", [p.pid for p in left])
    return {name: (-1 if name in failed else 1 if procs else 0) for name, procs in targets_found.items()}


def _signal(proc: _Proc, sig: int) -> None:
    """Send ``sig`` to ``proc`` if its pid still names it (through a pidfd where there is one,
    so the pid cannot be recycled between the check and the signal)."""
    fd = None
    try:
        fd = os.pidfd_open(proc.pid)  # type: ignore[attr-defined,unused-ignore]
    except OSError as exc:
        if exc.errno == errno.EINVAL:  # a thread id, not a process: never signalled
            return
    except AttributeError:
        pass
    try:
        now = _proc(proc.pid)
        if now is None or now.start != proc.start or (fd is None and not _leads(proc.pid)):
            return
        with contextlib.suppress(ProcessLookupError):
            if fd is not None:
                signal.pidfd_send_signal(fd, sig)  # type: ignore[attr-defined,unused-ignore]
            else:
                os.kill(proc.pid, sig)
    finally:
        if fd is not None:
            os.close(fd)


def _wait_gone(procs: list[_Proc], timeout: float, zombies_gone: bool) -> list[_Proc]:
    """Wait until no process of ``procs`` runs (or, with ``zombies_gone`` false, exists); return
    the rest."""
    deadline = time.monotonic() + timeout
    delay = 0.001

    def there(p: _Proc) -> bool:
        now = _proc(p.pid)
        if now is None or now.start != p.start:
            return False
        if now.zombie:
            with contextlib.suppress(ChildProcessError):  # reaped if it is this process's child
                if os.waitpid(p.pid, os.WNOHANG)[0]:
                    return False
        return not (zombies_gone and now.zombie)

    while True:
        procs = [p for p in procs if there(p)]
        if not procs or time.monotonic() >= deadline:
            return procs
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


@contextlib.contextmanager
def _subreaper() -> Iterator[None]:
    """Make this process, for a while, the reaper of orphaned descendants (Linux), so that the
    children of a server it terminates are reaped at once: some inits reap only every few seconds."""
    libc = _libc()
    if libc is None:
        yield
        return
    import ctypes

    was = ctypes.c_int(0)
    libc.prctl(37, ctypes.byref(was), 0, 0, 0)  # PR_GET_CHILD_SUBREAPER
    if not was.value:
        libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    try:
        yield
    finally:
        if not was.value:
            libc.prctl(36, 0, 0, 0, 0)


@functools.cache
def _libc() -> Any:
    """The C library, on Linux (for inotify and prctl), else None."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        return ctypes.CDLL(None, use_errno=True)
    except (OSError, AttributeError):
        return None


_UNSET: Any = object()


class XProcessInfo:
    """What is recorded about the process named ``name`` under the state directory ``path``."""

    def __init__(self, path: Path | str, name: str) -> None:
        self.name = _check_name(name)
        self.controldir = Path(path) / name
        self.logpath = self.controldir / LOG_NAME
        self.statepath = self.controldir / STATE_NAME
        self._pid = _UNSET
        self._unwatch: Callable[[str], object] | None = None  # from XProcess.getinfo: a stop is no crash

    @functools.cached_property
    def _key(self) -> str:
        """The start of the marker of every process started under this name in this project."""
        import hashlib

        project = os.fsencode(_resolved(self.controldir.parent))
        return hashlib.sha256(project + b"\0" + os.fsencode(self.name)).hexdigest()[:16] + ":"

    @functools.cached_property
    def _where(self) -> str:
        """The control directory as the kernel names it in a process's open files."""
        return os.fsdecode(_resolved(self.controldir.parent) / self.name)

    def __repr__(self) -> str:
        return f"<XProcessInfo {self.name!r} pid={self.pid}>"

    def _state(self) -> dict[str, Any] | None:
        """The recorded state, if it can be trusted; a ``pid`` assigned to this object that is not
        the recorded one leaves nothing recorded."""
        state = _read_state(self.statepath)
        if self._pid is not _UNSET and (state is None or state["pid"] != self._pid):
            return None
        return state

    @property
    def pid(self) -> int | None:
        """The recorded pid, whether or not it still runs (it may be assigned, as in 1.x's tests:
        ``None``, or any pid that is not the recorded one, makes :meth:`terminate` a no-op)."""
        if self._pid is not _UNSET:
            return self._pid  # type: ignore[no-any-return]
        state = self._state()
        return state["pid"] if state else None

    @pid.setter
    def pid(self, value: int | None) -> None:
        self._pid = value

    @property
    def port(self) -> int | None:
        """The port the starter read (:attr:`ProcessStarter.port`) for the recorded start, if any."""
        state = self._state()
        port = state.get("port") if state else None
        return port if type(port) is int else None

    def isrunning(self, ignore_zombies: bool = True) -> bool:
        """Whether the recorded process is alive and is the very one recorded (not a recycled pid)."""
        proc = _owned(self._state(), self)[0]
        return proc is not None and not (ignore_zombies and proc.zombie)

    def terminate(self, *, kill_proc_tree: bool = True, timeout: float = TERMINATE_TIMEOUT) -> int:
        """Terminate the recorded process and, with ``kill_proc_tree``, everything it started.

        :returns: 1 terminated, 0 nothing to do, -1 something could not be terminated.
        """
        if self._pid is not _UNSET and self._state() is None:
            return 0
        if not isinstance(timeout, (int, float)) or timeout < 0:
            return -1  # pytest-xprocess 1.x returned -1 for a negative timeout too
        if self._unwatch is not None:
            self._unwatch(self.name)
        return _terminate({self.name: (self, self._state())}, timeout, kill_proc_tree)[self.name]

    def kill(self) -> int:
        """The same as :meth:`terminate` (the original API's name)."""
        return self.terminate()

    def _tree(self) -> list[int]:
        """The pids :meth:`terminate` would signal now."""
        return [p.pid for p in _find_ours({self.name: (self, self._state())}, tree=True)[self.name]]


class _Ensured(tuple):  # type: ignore[type-arg]
    """``(pid, logpath)`` with ``.match``, ``.port`` and a ``.logfile`` opened on first use."""

    match: re.Match[str] | None
    port: int | None
    _offset: int
    _xp: XProcess
    _name: str

    def __new__(
        cls,
        pid: int,
        logpath: Path,
        match: re.Match[str] | None,
        offset: int,
        xp: XProcess,
        name: str,
        port: int | None,
    ) -> _Ensured:
        self = super().__new__(cls, (pid, logpath))
        self.match = match
        self.port = port
        self._offset = offset
        self._xp = xp
        self._name = name
        return self

    @property
    def logfile(self) -> IO[str]:
        """The log as an open text file, just past the ready line (or at its end when reused);
        one per name and session, closed at its end."""
        return self._xp._open_log(self._name, self[1], self._offset)


class XProcess:
    """Starts, reuses and stops the processes recorded under ``<rootdir>/.xprocess``."""

    def __init__(self, config: pytest.Config | None, rootdir: Path | str, log: Any = None) -> None:
        """:param log: what pytest-xprocess 1.x subclasses pass, an object with ``debug(msg, *args)``:
        kept as :attr:`log` for their own use (default: the ``xprocess`` logger)."""
        self.config = config
        self.log = log if log is not None else logging.getLogger("xprocess")
        self.rootdir = Path(rootdir)
        self.statedir = self.rootdir / STATE_DIR
        self._session = ""  # id shared by the xdist controller and its workers; "" records nothing
        self._children: list[subprocess.Popen[bytes]] = []
        self._logfiles: dict[str, tuple[int, IO[str]]] = {}  # name -> (inode, the file handed out)
        self._used: dict[str, list[Any]] = {}  # name -> [logpath, log offset at the current test's start]
        self._uses: list[dict[str, Any]] = []  # this process's records of the session file, kept if it cannot be
        self._leases: dict[str, int] = {}  # name -> fd of the lease this session holds on it
        self._waker: _Waker | None = None
        self._watch: _Watch | None = None  # what it ensured, watched for crashes
        self._test = ""  # the test running, or the last one: a crash noticed now happened during it

    def __enter__(self) -> XProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def getinfo(self, name: str) -> XProcessInfo:
        """The :class:`XProcessInfo` of ``name``; creates nothing on disk."""
        info = XProcessInfo(self.statedir, name)
        info._unwatch = self._unwatch
        return info

    def ensure(self, name: str, starter: Any, restart: bool = False, persist_logs: bool = True) -> _Ensured:
        """Return ``(pid, logpath)`` of the running, ready process ``name``, starting it if needed.

        One deadline, the starter's ``timeout``, covers the whole call: the lock, another
        session's lease, the start and its readiness. Only the stop of an old process (at most
        :data:`TERMINATE_TIMEOUT` plus 2 s, for one that ignores SIGTERM) is not counted.

        :param starter: a ``ProcessStarter`` subclass or instance, or a plain function:
            ``preparefunc(cwd)`` returning ``(pattern, args)`` or ``(pattern, args, env)``, or, if it
            accepts two positional arguments, 1.x's ``preparefunc(control_dir, process)``
            returning that or a ``ProcessStarter`` (see :func:`_launch`).
        :param restart: terminate and start it even if it runs.
        :param persist_logs: keep the logs of earlier starts (the last :data:`KEPT_LOGS`).
        :raises XProcessError: it exited, timed out or missed its pattern; the message says which.
        """
        __tracebackhide__ = True
        info = self.getinfo(name)
        if sys.platform == "win32":
            raise XProcessError(f"xprocess {name!r}: Windows is not supported (only POSIX systems)", name=name)
        began = time.monotonic()
        deadline = began + _lock_timeout(starter)
        launch: _Launch | None = None
        delay, waiting = 0.001, ""
        while True:
            # Under the lock the starter is read (its properties may create a cluster or pick a
            # port: once), the recorded process reused or stopped, and a new one started; a caller
            # that finds another session starting it waits, then reuses it.
            fd, created = self._lock(info, deadline)
            try:
                state = info._state()
                proc, gone = _owned(state, info)
                if proc is None and gone.startswith("its state "):  # copied or forged: nothing of it is used
                    warnings.warn(XProcessWarning(f"{info.statepath}: {gone}; not running"), stacklevel=2)
                    state = None
                stopped: float | str = 0.0
                died = ""
                if proc is None:
                    # Nothing recorded runs: what earlier starts left (their state lost, or the
                    # recorded process died) ends before the starter is read, as it may rebuild
                    # what they still use (a database cluster deleted under its server).
                    died = self._unwatch(name)  # stopped on purpose (a crash before is still one)
                    stopped = self._stop_for_start(info, state)
                if isinstance(stopped, float):
                    if launch is None:
                        try:
                            launch = _launch(name, starter, info.controldir, self)
                        except Exception:
                            self._undo(created)
                            raise
                        deadline = began + launch.timeout
                    found = "" if restart else self._reuse(info, launch, state, proc)
                    if isinstance(found, _Ensured):
                        return self._watched(info, found)
                    if proc is not None:
                        died = self._unwatch(name)  # it is stopped on purpose now
                    why = found or died or _why_start(state, launch, restart, proc, gone)
                    # The recorded process and what it started end before the new one starts
                    # (nothing holds its port twice), unless another session uses it.
                    if proc is not None:
                        stopped = self._stop_for_start(info, state)
                if isinstance(stopped, float) and launch is not None:
                    if why:
                        log.warning("xprocess %r %s", name, why)
                    try:
                        started = self._start(info, launch, persist_logs, why, deadline + stopped, stop=stopped)
                    except BaseException as exc:
                        self._note_failure(info, launch, exc)
                        raise
                    return self._watched(info, started)
                waiting = str(stopped)
            finally:
                os.close(fd)  # releases the lock
            # In use by another session: wait for it without the lock, so that sessions that can
            # reuse it as it is still do.
            if time.monotonic() >= deadline:
                raise XProcessError(
                    f"xprocess {name!r} was not restarted: it is in use by another session ({waiting}) "
                    f"and stayed so for the starter's timeout of {deadline - began:g} s. Let that session end, "
                    f"or stop the process anyway with: pytest --xkill {_quote(name)}",
                    name=name,
                )
            if delay == 0.001:
                log.warning("xprocess %r: waiting for %s to end", name, waiting)
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 0.05)

    def _lock(self, info: XProcessInfo, deadline: float) -> tuple[int, list[Path]]:
        """Take the per-name lock, creating the directories as needed: the lock's fd and what
        was created. The OS releases the lock when its holder dies, so a crash blocks nobody."""
        __tracebackhide__ = True
        while True:
            created = self._make_dirs(info)
            path = info.controldir / LOCK_NAME
            fd = _open_lock(path)
            delay = 0.001
            while not _flock(fd):
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise StartupTimeoutError(
                        f"xprocess {info.name!r}: another session held {path} (starting it) until the timeout",
                        name=info.name,
                    )
                time.sleep(delay)
                delay = min(delay * 2, 0.05)
            with contextlib.suppress(OSError):  # the lock file removed while we waited: take the new one
                if os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino:
                    return fd, created + ([path] if info.controldir in created else [])
            os.close(fd)

    def _make_dirs(self, info: XProcessInfo) -> list[Path]:
        """Create the state and control directories as needed (0700, whatever the umask), with the
        state directory's ``.gitignore``; return what was created. One that exists must be a
        directory of this user's that no one else may write to.

        :raises XProcessError: saying whose it is and what to do.
        """
        created = []
        try:
            for path in (self.statedir, info.controldir):
                try:
                    _check_private_dir(path, info.name)  # ours from an earlier run: the usual case
                    continue
                except FileNotFoundError:
                    pass
                if path == self.statedir and not self.rootdir.is_dir():
                    self.rootdir.mkdir(parents=True, exist_ok=True)
                try:
                    os.mkdir(path, 0o700)
                    created.append(path)
                except FileExistsError:  # another session's, made just now
                    _check_private_dir(path, info.name)
            ignore = self.statedir / ".gitignore"
            if not os.path.lexists(ignore):  # whenever .xprocess exists, git ignores it
                with contextlib.suppress(FileExistsError):
                    gi = os.open(ignore, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
                    try:
                        os.write(gi, b"*\n")
                    finally:
                        os.close(gi)
                    created.append(ignore)
            return created
        except OSError as exc:
            raise XProcessError(
                f"xprocess cannot create {exc.filename or info.controldir}: {exc.strerror or exc} "
                "(free some space or make it writable)"
            ) from exc

    def _undo(self, created: list[Path]) -> None:
        """Remove what :meth:`_make_dirs` created for a start that did not happen (bad input
        changes nothing); ``.gitignore`` goes only with its directory."""
        for path in reversed(created):
            with contextlib.suppress(OSError):
                if path == self.statedir and os.listdir(path) == [".gitignore"]:
                    (path / ".gitignore").unlink()
                if path.is_dir():
                    path.rmdir()
                elif path.name != ".gitignore":
                    path.unlink()

    def _reuse(
        self, info: XProcessInfo, launch: _Launch, state: dict[str, Any] | None, proc: _Proc | None
    ) -> _Ensured | str:
        """The running process if it is the recorded one (``proc``, proven by :func:`_owned`),
        became ready, has this configuration, is not stopped and passes its ``startup_check``
        now; else why not ("" when :func:`_why_start` says)."""
        if not state or not state.get("ready") or state["fingerprint"] != launch.fingerprint():
            return ""
        if proc is None or proc.zombie:
            return ""
        if proc.stopped:
            return "restarted: it was stopped (SIGSTOP), so it answers nothing"
        if (
            launch.check is not None
            and getattr(launch.starter, "check_on_reuse", True)
            and not _check_once(launch.check)
        ):
            return "restarted: its startup_check failed on reuse"
        line, pattern = state.get("match"), launch.pattern
        if launch.pattern_from is not None and isinstance(state.get("pattern"), list):
            with contextlib.suppress(re.error, TypeError, ValueError):  # the one it matched, not re-read
                pattern = re.compile(*state["pattern"])
        match = pattern.search(line) if pattern and isinstance(line, str) else None
        try:
            size = info.logpath.stat().st_size
        except OSError:
            size = 0
        self._note_use(info, "reused", launch, offset=size)
        self._lease(info, proc.pid, tuple(state["log"]))
        port = state.get("port")
        return _Ensured(proc.pid, info.logpath, match, size, self, info.name, port if type(port) is int else None)

    def _start(
        self, info: XProcessInfo, launch: _Launch, persist_logs: bool, why: str, deadline: float, stop: float = 0.0
    ) -> _Ensured:
        __tracebackhide__ = True
        import subprocess

        _rotate_logs(info.logpath, KEPT_LOGS if persist_logs else 0)
        token = info._key + os.urandom(8).hex()
        env = dict(os.environ if launch.env is None else launch.env)
        if launch.env is None:
            env.setdefault("PYTHONUNBUFFERED", "1")  # the commonest "it hangs": a Python child buffering
        env[MARKER_ENV] = token  # findable from the moment it runs, before its state is written
        if self._waker is None:
            self._waker = _Waker()
        events = self._waker
        self._note_use(info, "starting", launch, offset=0)  # an xdist worker dying now still has it stopped
        started = time.monotonic()
        forks = _forks()  # while fewer follow than there are pids to go round, its own are the newer pids
        logfd = _create_log(info.logpath)
        st = os.fstat(logfd)
        logid = [st.st_dev, st.st_ino]  # the proof that a process is this start's: its output goes there
        with events.watching(info.logpath):
            try:
                popen = subprocess.Popen(
                    launch.args,
                    cwd=launch.cwd,
                    env=env,
                    stdout=logfd,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # a Ctrl-C in the terminal does not reach it
                    **launch.popen_kwargs,
                )
            finally:
                os.close(logfd)
            self._children.append(popen)
            events.watch_exit(popen.pid)
            log.debug("started %r pid %d: %s", info.name, popen.pid, launch.args)
            proc = _proc(popen.pid)
            state: dict[str, Any] = {
                "version": STATE_VERSION,
                "pid": popen.pid,
                "start": proc.start if proc else "",
                "token": token,
                "log": logid,
                "fingerprint": launch.fingerprint(),
                "args": launch.args,
                "port": launch.starter.__dict__.get("_port"),
                "forks": forks,
                "ready": False,
                "started": time.time(),
            }
            try:
                _write_state(info.statepath, state)
                launch, match, offset = _wait_ready(info, launch, popen, events, started, deadline)
                pattern = [launch.pattern.pattern, launch.pattern.flags] if launch.pattern else None
                port = state["port"] = launch.starter.__dict__.get("_port")  # a startup_check may read it
                _write_state(
                    info.statepath,
                    state,
                    {"ready": True, "match": match.string if match else None, "pattern": pattern, "port": port},
                )
            except BaseException:
                # this start's tree, known from memory: its state may never have been written
                _terminate({info.name: (info, state)}, 2.0)
                popen.poll()
                raise
        self._note_use(info, why or "started", launch, offset=0, seconds=time.monotonic() - started, stop=stop)
        self._lease(info, popen.pid, tuple(logid))
        return _Ensured(popen.pid, info.logpath, match, offset, self, info.name, port)

    def _watched(self, info: XProcessInfo, ensured: _Ensured) -> _Ensured:
        """``ensured``, watched from now on for an exit nobody asked for (a crash)."""
        if self._watch is None:
            self._watch = _Watch()
        if self._watch.pid(info.name) != ensured[0]:
            popen = next((p for p in self._children if p.pid == ensured[0]), None)  # its exit status is ours
            self._watch.add(info.name, ensured[0], popen, info.logpath)
        return ensured

    def _unwatch(self, name: str) -> str:
        """Stop watching ``name``, which is being stopped on purpose; return why it is started
        again if it had crashed ("" if not)."""
        if self._watch is None:
            return ""
        self._look()  # a crash before this stop is still one
        self._watch.remove(name)
        test = self._watch.died.pop(name, None)
        return "" if test is None else f"restarted: it died during {test}"

    def _look(self) -> None:
        """Notice the watched processes that crashed since the last look, and record each for
        the summary (the controller's, under xdist)."""
        for record in self._watch.look(self._test) if self._watch is not None else ():
            if self._session:
                with contextlib.suppress(OSError):
                    self._record(record)

    def _lease(self, info: XProcessInfo, pid: int, log_id: tuple[int, ...]) -> None:
        """Hold a shared lease on ``info``'s process until this session ends (the OS drops it if
        the session dies): stopping it at another session's end or a restart waits for it.

        The lease is a lock on the process's log file, reached through the process when its path
        is gone: deleting or replacing the control directory cannot take it away."""
        if info.name not in self._leases:
            fd = _open_log_of(info, pid, log_id)
            if fd is None:
                return
            if _flock(fd, shared=True):
                self._leases[info.name] = fd
            else:  # being stopped by --xkill right now: no lease, and no waiting for it
                os.close(fd)

    def _release(self) -> None:
        """End this session's leases."""
        for fd in self._leases.values():
            os.close(fd)
        self._leases.clear()

    def _stop_for_start(self, info: XProcessInfo, state: dict[str, Any] | None) -> float | str:
        """Stop what runs under ``info``'s name before a new start, unless another session holds a
        lease on it: the seconds the stop took, or (nothing stopped) who holds it."""
        found = _find_ours({info.name: (info, state)}, tree=True)
        own = self._leases.pop(info.name, None)  # this session's use of the old process ends here
        held = _exclusive(_logs_of(found[info.name], info, state), own)
        if isinstance(held, str):
            if own is not None:  # keep this session's lease: it still uses the process
                if _flock(own, shared=True):
                    self._leases[info.name] = own
                else:
                    os.close(own)
            return held
        began = time.monotonic()
        try:
            if _terminate({info.name: (info, state)}, TERMINATE_TIMEOUT, found=found)[info.name] and state is None:
                log.warning("xprocess %r: ended processes left by a start whose state was lost", info.name)
        finally:
            for fd in held:
                os.close(fd)
        return time.monotonic() - began

    def _stop_unused(self, infos: Sequence[XProcessInfo]) -> dict[str, int | str]:
        """Terminate the processes of ``infos`` that no other session uses; the others are left
        running (``"in use"``). Holding each name's start lock and its leases exclusively, no
        session can take them up meanwhile."""
        results: dict[str, int | str] = {}
        targets: dict[str, tuple[XProcessInfo, Mapping[str, Any] | None]] = {}
        held: list[int] = []
        try:
            for info in infos:
                try:
                    fd = _open_lock(info.controldir / LOCK_NAME)
                except XProcessError:  # its directory is gone: nobody is starting it
                    fd = -1
                else:
                    held.append(fd)
                state = info._state()
                found = _find_ours({info.name: (info, state)}, tree=True)[info.name]
                leases = _exclusive(_logs_of(found, info, state), None) if (fd < 0 or _flock(fd)) else "starting"
                if isinstance(leases, str):
                    results[info.name] = "in use"
                else:
                    held.extend(leases)
                    targets[info.name] = (info, state)
            results.update(_terminate(targets, TERMINATE_TIMEOUT))
        finally:
            for fd in held:
                os.close(fd)
        return results

    def _note_use(
        self, info: XProcessInfo, event: str, launch: _Launch, offset: int, seconds: float = 0.0, stop: float = 0.0
    ) -> None:
        """Remember that this session uses ``info``: for reports, the summary and stopping at the end.

        ``event``: "reused", "starting", "started", "restarted: why", "failed: why" or "interrupted";
        ``seconds`` the start's own time, ``stop`` the time taken to stop the old process first."""
        if event not in ("starting", "interrupted") and not event.startswith("failed"):
            self._used[info.name] = [info.logpath, offset]
        if event not in ("reused", "starting", "interrupted") and not event.startswith("failed"):
            log.info("xprocess %r %s in %.2f s", info.name, event, seconds)
        if self._session:
            record = {
                "name": info.name,
                "event": event,
                "seconds": round(seconds, 3),
                "terminate_on_interrupt": launch.terminate_on_interrupt,
            }
            if stop >= _SLOW_STOP:
                record["stop"] = round(stop, 1)
            try:
                self._record(record)
            except OSError as exc:
                if hasattr(self.config, "workerinput"):  # the controller has its own records in memory
                    _warn(f"xprocess cannot record that it uses {info.name!r} ({exc}): --xstop will not stop it")

    def _note_failure(self, info: XProcessInfo, launch: _Launch, exc: BaseException) -> None:
        """Record why a start of ``info`` failed, for the summary."""
        if isinstance(exc, KeyboardInterrupt):
            event = "interrupted"
        else:
            why = getattr(exc, "_reason", "") or str(exc).partition("\n")[0].removeprefix(f"xprocess {info.name!r}")
            event = "failed: " + (why.strip(" :") or type(exc).__name__)[:300]
        self._note_use(info, event, launch, offset=0)

    def _record(self, record: dict[str, Any]) -> None:
        """Add ``record`` to this session's records, in memory and in the session file.

        :raises OSError: the file could not be written (the memory has it)."""
        self._uses.append(record)
        path = self._session_path()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | _PRIVATE, 0o600)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OSError(errno.EINVAL, "not a regular file", str(path))
            os.write(fd, (json.dumps(record) + "\n").encode())  # one short append: whole lines even from many workers
        finally:
            os.close(fd)

    def _session_path(self) -> Path:
        return self.statedir / f".session-{self._session}.jsonl"

    def _session_uses(self) -> dict[str, dict[str, Any]]:
        """What every process of this session (xdist workers included) did, per name."""
        uses: dict[str, dict[str, Any]] = {}
        try:
            with _open_nofollow(self._session_path()) as f:
                lines = f.read(_MAX_STATE).decode("utf-8", "replace").splitlines()
        except OSError:
            lines = []
        records = []
        for line in lines:
            with contextlib.suppress(ValueError):
                records.append(json.loads(line))
        if not lines:
            records = list(self._uses)
        for record in records:
            with contextlib.suppress(KeyError, TypeError, AttributeError):
                use = uses.setdefault(record["name"], {})
                if "died" in record:  # noticed by each worker using it: once per pid
                    use.setdefault("died", {}).setdefault(str(record["pid"]), f"{record['died']} ({record['how']})")
                elif "terminated" in record:
                    use["terminated"] = record["terminated"]
                elif use.get("event", "reused") in ("reused", "starting"):  # a start outranks reuses
                    use.update(record)
                elif record["event"] not in ("reused", "starting"):  # a later start: the summary adds it
                    use["then"] = record
                    use["more"] = use.get("more", 0) + 1
        return uses

    def _open_log(self, name: str, path: Path, offset: int) -> IO[str]:
        """The log of ``name`` as text, positioned at ``offset``: one file per name and session."""
        import io

        inode, text = self._logfiles.get(name, (0, None))
        try:
            current = path.stat().st_ino
        except OSError:
            current = -1
        if text is None or inode != current:
            if text is not None:
                text.close()
            raw = _open_nofollow(path)
            text = io.TextIOWrapper(raw, encoding="utf-8", errors="replace")
            self._logfiles[name] = (os.fstat(raw.fileno()).st_ino, text)
        text.seek(offset)
        return text

    def _infos(self, names: Sequence[str]) -> list[XProcessInfo]:
        """The recorded processes (those named, or all); unknown names raise ``LookupError``."""
        if names:
            infos = [self.getinfo(name) for name in names]
            unknown = [i.name for i in infos if not i.controldir.is_dir()]
            if unknown:
                raise LookupError(f"no process recorded as {', '.join(map(repr, unknown))} in {self.statedir}")
            return infos
        infos = []
        with contextlib.suppress(OSError):
            for entry in sorted(os.scandir(self.statedir), key=lambda e: e.name):
                with contextlib.suppress(ValueError):
                    if entry.is_dir(follow_symlinks=False):
                        infos.append(self.getinfo(entry.name))
        return infos

    def _mark_test_start(self) -> None:
        for entry in self._used.values():
            with contextlib.suppress(OSError):
                entry[1] = entry[0].stat().st_size

    def _report_sections(self) -> Iterator[tuple[str, str]]:
        """The log lines each process wrote since the current test started (the last ones)."""
        for name, (path, offset) in self._used.items():
            try:
                with _open_nofollow(path) as f:
                    start = max(offset, f.seek(0, os.SEEK_END) - _REPORT_BYTES)
                    f.seek(start)
                    data = f.read(_REPORT_BYTES)
            except OSError:
                continue
            lines = data.decode("utf-8", "replace").splitlines()[-_REPORT_LINES:]
            if lines:
                yield f"xprocess {name} log", "\n".join(lines)

    def close(self) -> None:
        """Close the log files handed out and end this session's leases; leave the processes
        running for the next run."""
        self._release()
        for _, f in self._logfiles.values():
            f.close()
        self._logfiles.clear()
        for popen in self._children:
            for pipe in (popen.stdin, popen.stdout, popen.stderr):
                if pipe is not None:
                    pipe.close()
            if popen.poll() is None:
                # It is meant to outlive this session: a returncode stops subprocess from
                # warning, when the Popen object is collected, that it "is still running".
                popen.returncode = 0
        self._children.clear()
        if self._waker is not None:
            self._waker.close()
            self._waker = None
        if self._watch is not None:
            self._watch.close()
            self._watch = None


def _lock_timeout(starter: Any) -> float:
    """How long to wait for another session's start: the starter's ``timeout`` when it can be
    read without running the starter's code (that happens under the lock)."""
    import inspect

    value = inspect.getattr_static(starter, "timeout", None)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return float(value)
    return float(ProcessStarter.timeout)


def _check_once(check: Callable[[], Any]) -> bool:
    """One ``startup_check()`` before a reuse, bounded in time whatever it does (in a thread left
    behind if it blocks); an ``OSError`` is a failed check, other exceptions propagate."""
    import threading

    result: list[Any] = []

    def run() -> None:
        try:
            result.append(bool(check()))
        except OSError:
            result.append(False)
        except BaseException as exc:
            result.append(exc)

    thread = threading.Thread(target=run, name="xprocess startup_check", daemon=True)
    thread.start()
    thread.join(_REUSE_CHECK_TIMEOUT)
    if result and isinstance(result[0], BaseException):
        raise result[0]
    return bool(result and result[0])


def _why_start(state: dict[str, Any] | None, launch: _Launch, restart: bool, proc: _Proc | None, gone: str) -> str:
    """Why a recorded process is started again ("" when nothing was recorded); ``proc`` and
    ``gone`` are what :func:`_owned` said of it."""
    if state is None:
        return ""
    if restart:
        return "restarted: restart=True"
    if not state.get("ready"):
        return "restarted: it never became ready"
    if proc is None or proc.zombie:
        return f"restarted: {gone or 'it had stopped'}"
    old, new = state["fingerprint"], launch.fingerprint()
    changed = [k for k in {**new, **old} if old.get(k) != new.get(k)]  # a part dropped counts too
    # a required process whose start changed restarted since: say that, not "configuration"
    restarted = [f"{k[9:]} restarted" for k in changed if k.startswith("requires ") and k in old and k in new]
    others = [k for k in changed if not (k.startswith("requires ") and k in old and k in new)]
    if others or not restarted:
        restarted.append(f"its configuration changed ({', '.join(others)})")
    return f"restarted: {'; '.join(restarted)}"


class _Watch:
    """The processes a session ensured, watched for an exit nobody asked for (a crash).

    A pidfd each (Linux; it works for any visible pid, not only children), all checked by one
    ``poll`` that does not wait: about a microsecond per look, so every test can afford a few.
    Where there is no pidfd, a look sends signal 0 and compares each pid's start.
    """

    def __init__(self) -> None:
        import select

        self._poll = select.poll()
        self._watched: dict[str, tuple[int, str, int | None, Any, Path]] = {}  # name -> pid, start, pidfd, Popen, log
        self._names: dict[int, str] = {}  # pidfd -> name
        self._sections: list[tuple[str, str, str]] = []  # (test, title, log tail) not yet in a report
        self.died: dict[str, str] = {}  # name -> the test it died during, until it is started again

    def pid(self, name: str) -> int | None:
        entry = self._watched.get(name)
        return entry[0] if entry else None

    def add(self, name: str, pid: int, popen: subprocess.Popen[bytes] | None, logpath: Path) -> None:
        """Watch ``pid`` as ``name``; ``popen`` when it is this process's child (its exit code is known)."""
        import select

        self.remove(name)
        self.died.pop(name, None)
        fd = None
        with contextlib.suppress(AttributeError, OSError):  # no pidfd: looks use the fallback
            fd = os.pidfd_open(pid)  # type: ignore[attr-defined,unused-ignore]
        proc = _proc(pid)
        self._watched[name] = (pid, proc.start if proc else "", fd, popen, logpath)
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
        """Notice the watched processes that have exited, as having died during ``test``; stop
        watching them and return a record of each for the summary."""
        if not self._watched:
            return []
        gone = [self._names[fd] for fd, _ in self._poll.poll(0)]
        if len(self._names) < len(self._watched):  # some without a pidfd
            gone += [
                name
                for name, (pid, start, fd, popen, _) in self._watched.items()
                if fd is None and not _alive(pid, start, popen)
            ]
        if not gone:
            return []
        records = []
        for name in gone:
            pid, _, _, popen, logpath = self._watched[name]
            self.remove(name)
            self.died[name] = test = test or "the session"
            how, short = _how_it_ended(popen)
            log.warning("xprocess %r (pid %d) %s during %s", name, pid, how, test)
            tail = "\n".join(_log_tail(logpath, _TAIL_LINES)) or "(its log is empty)"
            self._sections.append((test, f"xprocess {name!r} {how}", f"last lines of {logpath}:\n{tail}"))
            records.append({"name": name, "died": test, "how": short, "pid": pid})
        return records

    def sections(self, test: str) -> list[tuple[str, str]]:
        """Report sections for the crashes noticed since the last report, for ``test``'s report."""
        if not self._sections:
            return []
        sections = [
            (f"{title} during {'this test' if during == test else during}", text)
            for during, title, text in self._sections
        ]
        self._sections.clear()
        return sections

    def close(self) -> None:
        for name in list(self._watched):
            self.remove(name)


def _alive(pid: int, start: str, popen: subprocess.Popen[bytes] | None) -> bool:
    """Whether ``pid`` still runs and is the process that started at ``start`` (no pidfd to ask).
    A child of this process is asked with ``waitid``; another needs a signal 0 and its start."""
    if popen is not None:
        return _exit_status(popen) is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's: there is one, is it ours? The start says.
        pass
    proc = _proc(pid)
    return proc is not None and proc.start == start and not proc.zombie


def _how_it_ended(popen: subprocess.Popen[bytes] | None) -> tuple[str, str]:
    """How a process ended, for a report ("was killed by signal 11 (SIGSEGV)") and for the
    summary ("signal 11"). Only a child of this process has an exit status to tell."""
    code = _exit_status(popen) if popen is not None else None
    if code is None:
        return "exited", "exit status unknown"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by signal {-code} ({signal.Signals(-code).name})", f"signal {-code}"
        return f"was killed by signal {-code}", f"signal {-code}"
    return f"exited with code {code}", f"exit code {code}"


def _quote(text: str) -> str:
    import shlex

    return shlex.quote(text)


# --- files under .xprocess ---
#
# Other accounts on the machine are part of the threat model: every directory is 0700 and every
# file 0600 (whatever the umask: it only takes bits away); a directory that is not this user's,
# or that others may write to, is refused; no file is followed through a symbolic link, opened in
# a way that blocks (a FIFO planted in its place), or read past a bound.

_PRIVATE = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def _check_private_dir(path: Path, name: str) -> None:
    """``path`` must be a directory of this user's that no one else may write to.

    :raises XProcessError: saying whose it is and what to do."""
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
        f"xprocess {name!r}: {path} {problem}: it is not safe to keep processes there. Remove it "
        f"(rm -rf {_quote(str(path))}) or make it a directory of your own that only you can write to "
        "(chown, chmod 700)",
        name=name,
    )


def _user(uid: int) -> str:
    try:
        import pwd

        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except (ImportError, KeyError):
        return f"uid {uid}"


def _open_lock(path: Path) -> int:
    """Open (creating) the start lock, read-only: enough for flock. A symbolic link planted in
    its place is replaced; in a read-only project an existing one is used. Only a regular file
    of this user's is used (another account must not be able to lock it)."""
    flags = os.O_RDONLY | os.O_CREAT | _PRIVATE
    try:
        try:
            fd = os.open(path, flags, 0o600)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                os.unlink(path)
                fd = os.open(path, flags | os.O_EXCL, 0o600)
            elif exc.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
                fd = os.open(path, os.O_RDONLY | _PRIVATE)
            else:
                raise
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
            os.close(fd)
            raise OSError(errno.EPERM, f"not a regular file of {_user(os.geteuid())}: remove it")
        return fd
    except OSError as exc:
        raise XProcessError(
            f"xprocess cannot open its lock {path}: {exc.strerror or exc} (make {path.parent} writable)"
        ) from exc


def _flock(fd: int, shared: bool = False, wait: bool = False) -> bool:
    """Lock ``fd`` (exclusively, or ``shared``); without ``wait``, False if someone else holds it."""
    import fcntl

    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        return False
    return True


# --- leases: locks on the log file a process writes to ---


def _open_inode(path: str, ident: tuple[int, ...]) -> int | None:
    """An fd on the file ``ident`` (device, inode) opened through ``path`` (a log's path, or
    ``/proc/<pid>/fd/<n>`` which reaches it even once it was removed), or None."""
    try:
        fd = os.open(
            path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if path.startswith("/proc/") else os.O_NOFOLLOW)
        )
    except OSError:
        return None
    st = os.fstat(fd)
    if stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) == tuple(ident):
        return fd
    os.close(fd)
    return None


def _open_log_of(info: XProcessInfo, pid: int, ident: tuple[int, ...]) -> int | None:
    """An fd on the log file ``ident`` of ``info``'s process ``pid``."""
    fd = _open_inode(os.fspath(info.logpath), ident)
    for n in (1, 2) if fd is None and _PROC_FS else ():
        fd = _open_inode(f"/proc/{pid}/fd/{n}", ident)
        if fd is not None:
            break
    return fd


def _logs_of(
    procs: Sequence[_Proc], info: XProcessInfo, state: Mapping[str, Any] | None
) -> dict[tuple[int, int], list[str]]:
    """The log files of ``info``'s name that ``procs`` write to (where their leases are), each
    with the paths it can be opened by."""
    recorded = tuple(state["log"]) if state else None
    logs: dict[tuple[int, int], list[str]] = {}
    for p in procs:
        for path, ident, _, fd in _outputs(p.pid):
            if ident == recorded or _log_dir(path) == info._where:
                logs.setdefault(ident, []).append(f"/proc/{p.pid}/fd/{fd}" if _PROC_FS else path)
    return logs


def _exclusive(logs: Mapping[tuple[int, int], Sequence[str]], own: int | None) -> list[int] | str:
    """Lock each of ``logs`` exclusively: no session holds a lease on them then, and none can
    take one. Returns the fds holding the locks, or (none held) who holds a lease.

    ``own`` (this session's lease, if it has one) is converted in place; when that fails its lock
    is gone (flock converts by unlocking first): the caller takes it again."""
    own_id = None
    if own is not None:
        st = os.fstat(own)
        own_id = (st.st_dev, st.st_ino)
    held: list[int] = []
    for ident, paths in logs.items():
        fd = own if ident == own_id else next(filter(None, map(lambda p: _open_inode(p, ident), paths)), None)
        if fd is None:
            continue  # gone meanwhile
        held.append(fd)
        if not _flock(fd):
            for h in held:
                if h != own:
                    os.close(h)
            return _describe_holders(ident)
    if own is not None and own not in held:
        os.close(own)  # its process is gone: nothing to hold
    return held


def _holders(ident: tuple[int, ...]) -> list[int]:
    """The pids of other processes holding a lock on the file ``ident`` (Linux's /proc/locks;
    elsewhere none)."""
    if not _PROC_FS:
        return []
    try:
        with open("/proc/locks") as f:
            text = f.read()
    except OSError:
        return []
    dev, ino = ident
    file_id = f"{os.major(dev):02x}:{os.minor(dev):02x}:{ino}"
    pids = set()
    for line in text.splitlines():
        parts = line.split()  # "1: FLOCK  ADVISORY  READ 1234 fe:00:5678 0 EOF"; waiters have "->"
        if len(parts) >= 6 and parts[1] == "FLOCK" and parts[5] == file_id:
            with contextlib.suppress(ValueError):
                pids.add(int(parts[4]))
    return sorted(pids - {os.getpid()})


def _describe_holders(ident: tuple[int, ...]) -> str:
    """Who holds a lease on the log ``ident``: pid and command line of each, escaped, for a message."""
    described = []
    for pid in _holders(ident):
        cmdline = (_proc_file(pid, "cmdline") or b"?").rstrip(b"\0").replace(b"\0", b" ")
        described.append(f"pid {pid}: {_escape(cmdline.decode('utf-8', 'replace'))[:120]}")
    return "; ".join(described) or "another session"


_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _escape(text: str) -> str:
    """``text`` with control characters escaped (``\\x1b``, ``\\n``): text from other processes
    (holders' command lines) never reaches a terminal raw."""
    return _CONTROL_RE.sub(lambda m: repr(m.group())[1:-1], text)


def _create_log(path: Path) -> int:
    """A new, empty log for the child, in append mode (lines the child writes through a handle of
    its own are kept); whatever is in its place (a planted link) is replaced, never followed."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    try:
        return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | _PRIVATE, 0o600)
    except OSError as exc:
        raise XProcessError(f"xprocess cannot create its log {path}: {exc.strerror or exc}") from exc


def _open_nofollow(path: Path) -> IO[bytes]:
    """``path`` opened for reading if it is a regular file (not a link, a FIFO or a device).

    :raises OSError: it is not."""
    fd = os.open(path, os.O_RDONLY | _PRIVATE)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file", str(path))
    return open(fd, "rb")


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
        self._libc = _libc()
        init = getattr(self._libc, "inotify_init1", None)
        if init is not None:
            fd = init(os.O_NONBLOCK | os.O_CLOEXEC)
            if fd >= 0:
                self._inotify = fd
                self._poll.register(fd, select.POLLIN)

    @contextlib.contextmanager
    def watching(self, logpath: Path) -> Iterator[None]:
        """Watch ``logpath`` (before the child can write to it) and, once known, the child.

        Watches nest: an ``ensure()`` called from a ``startup_check`` waits with watches of its
        own, and the outer ones are back when it returns."""
        outer = (self._watch, self._pidfd)
        if self._pidfd is not None:  # an exit of the outer child must not keep waking this wait
            self._poll.unregister(self._pidfd)
        self._watch = self._pidfd = None
        if self._inotify is not None:
            wd = self._libc.inotify_add_watch(self._inotify, os.fsencode(logpath), 0x2)  # IN_MODIFY
            self._watch = wd if wd >= 0 else None
            self._drain()  # events of earlier watches would only wake us for nothing
        try:
            yield
        finally:
            if self._watch is not None and self._watch != outer[0]:
                self._libc.inotify_rm_watch(self._inotify, self._watch)
            if self._pidfd is not None:
                self._poll.unregister(self._pidfd)
                os.close(self._pidfd)
            self._watch, self._pidfd = outer
            if self._pidfd is not None:
                import select

                self._poll.register(self._pidfd, select.POLLIN)

    def watch_exit(self, pid: int) -> None:
        import select

        with contextlib.suppress(AttributeError, OSError):
            self._pidfd = os.pidfd_open(pid)  # type: ignore[attr-defined,unused-ignore]
            self._poll.register(self._pidfd, select.POLLIN)

    def wait(self, timeout: float) -> None:
        __tracebackhide__ = True  # a Ctrl-C lands here most often: pytest names the caller's line
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


class _LogReader:
    """Yields each complete line appended to a log, decoded, with its end offset.

    Lines end at ``\\n``, ``\\r\\n`` or ``\\r`` and are yielded ending in ``\\n``; a line longer
    than :data:`_MAX_LINE` bytes is cut to that length, so memory stays bounded.
    """

    def __init__(self, path: Path, deadline: float = float("inf")) -> None:
        self._file = _open_nofollow(path)
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


def _exit_status(popen: subprocess.Popen[bytes]) -> int | None:
    """The child's exit code (negative: the signal that killed it), or None while it runs.

    Where ``os.waitid`` can wait without reaping (Linux, and macOS from Python 3.13) the child
    stays unreaped, so its pid (and the session it leads) stays ours until it is terminated;
    elsewhere it is reaped and its exit code kept (its tree is then found by its marker).
    """
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


def _wait_ready(
    info: XProcessInfo,
    launch: _Launch,
    popen: subprocess.Popen[bytes],
    events: _Waker,
    started: float,
    deadline: float,
) -> tuple[_Launch, re.Match[str] | None, int]:
    """Wait until the new process is ready: its pattern in a whole line and its check true.

    A pattern that is a property is read once the process runs (werkzeug's sends the new server
    a request and returns the line it will log for it); an ``OSError`` from it means "not yet",
    as from ``startup_check``.

    :returns: the launch (with its pattern read), the match (None without a pattern) and the log
        offset just past its line.
    :raises XProcessError: exit, timeout or max_read_lines, after which the caller terminates it.
    """
    __tracebackhide__ = True
    reader = _LogReader(info.logpath, deadline)
    match = None
    seen = end = 0
    pending = launch.pattern_from is not None
    checked = launch.check is None
    delay, next_check = 0.01, 0.0

    def failure(cls: type[XProcessError], reason: str, exitcode: int | None = None) -> XProcessError:
        __tracebackhide__ = True
        return _failure(cls, info, launch, reason, exitcode, time.monotonic() - started)

    try:
        while True:
            exitcode = _exit_status(popen)  # before reading: nothing written before the exit is missed
            wait = deadline - time.monotonic()
            if pending and exitcode is None:
                now = time.monotonic()
                if now >= next_check:
                    try:
                        launch, pending = launch.read_pattern(info.name), False
                    except OSError:  # typically "connection refused": not yet
                        delay, next_check = min(delay * 1.5, 0.5), now + delay
                if pending:
                    wait = min(wait, next_check - time.monotonic())
                else:
                    delay, next_check = 0.01, 0.0
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
            ready = not pending and (match or launch.pattern is None)
            if ready and not checked:
                now = time.monotonic()
                if now >= next_check:
                    try:
                        checked = bool(launch.check())  # type: ignore[misc]
                    except OSError:  # typically "connection refused": not yet
                        checked = False
                    delay, next_check = min(delay * 1.5, 0.5), now + delay
                wait = min(wait, next_check - time.monotonic())
            if ready and checked:
                if launch.pattern is None:
                    end = info.logpath.stat().st_size
                return launch, match, end
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
    __tracebackhide__ = True
    import shlex

    pattern = launch.pattern.pattern if launch.pattern else None
    lines = [
        f"xprocess {info.name!r} {reason}",
        f"  command: {shlex.join(launch.args)}",
        f"  pattern: {pattern!r}" + ("  (and startup_check)" if launch.check else ""),
        f"  waited:  {waited:.2f} s",
        f"  log:     {info.logpath}",
    ]
    tail = _log_tail(info.logpath, _TAIL_LINES)
    if tail:
        lines.append(f"  last {len(tail)} lines of the log:" if len(tail) > 1 else "  last line of the log:")
        lines.extend("    " + line for line in tail)
    else:
        lines.append(
            "  the log is empty: if the process does print its ready line, it may be buffering its "
            "output (Python: PYTHONUNBUFFERED=1 or print(..., flush=True); C programs: stdbuf -oL)"
        )
    lines.extend("  hint: " + hint for hint in _hints(info, launch, exitcode, tail))
    error = cls("\n".join(lines), name=info.name, exitcode=exitcode, logpath=info.logpath)
    error._reason = reason
    return error


_IN_USE_RE = re.compile(r"address already in use|eaddrinuse", re.I)


def _hints(info: XProcessInfo, launch: _Launch, exitcode: int | None, tail: list[str]) -> list[str]:
    """What typically causes a failed start like this one, where it can be told."""
    hints = []
    if exitcode == 0:
        hints.append(
            "it exited with code 0 before it was ready: it probably went into the background "
            "(daemonized); run it in the foreground (redis-server: --daemonize no; nginx: -g 'daemon off;'; "
            "PostgreSQL: postgres -D DATADIR, not pg_ctl start)"
        )
    in_use = [line for line in tail if _IN_USE_RE.search(line)]
    port = launch.starter.__dict__.get("_port")
    ports = [port] if type(port) is int else []
    for line in in_use:  # "bind() to 127.0.0.1:8080 failed", "*:6379: bind: ..."
        ports += [int(p) for p in re.findall(r":(\d{2,5})\b", line) if 0 < int(p) < 65536]
    named = False
    for p in dict.fromkeys(ports):
        for pid, command in _port_holders(p, info._key):
            hints.append(f"port {p} is in use by pid {pid}: {command}")
            named = True
    if in_use and not named:
        hints.append(
            "its log says an address is already in use: another process listens on its port "
            "(one this user cannot see, or one that has ended since)"
        )
    return hints


def _port_holders(port: int, key: str) -> list[tuple[int, str]]:
    """Pid and command line of each process listening on TCP ``port`` (any address) that is not
    one of the name's own (marker ``key``), where the OS lets this user see it."""
    if not _PROC_FS:
        import psutil

        try:
            pids = {c.pid for c in psutil.net_connections("tcp") if c.laddr and c.laddr.port == port and c.pid}
        except (psutil.Error, OSError):
            return []
        found = []
        for pid in sorted(pids):
            if not (_marker_of(pid) or "").startswith(key):
                with contextlib.suppress(psutil.Error, OSError):
                    found.append((pid, _escape(" ".join(psutil.Process(pid).cmdline()))[:200] or "?"))
        return found
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            next(f, None)  # the header
            for row in f:
                # "sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode"
                fields = row.split()
                if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rpartition(":")[2], 16) == port:
                    inodes.add(f"socket:[{fields[9]}]")
    holders = []
    if inodes:
        for pid in _pids():
            with contextlib.suppress(OSError):
                fds = os.listdir(f"/proc/{pid}/fd")
                if any(_readlink(f"/proc/{pid}/fd/{fd}") in inodes for fd in fds):
                    if (_marker_of(pid) or "").startswith(key):
                        continue  # its own start holds it: not the cause
                    cmdline = (_proc_file(pid, "cmdline") or b"").rstrip(b"\0").replace(b"\0", b" ")
                    holders.append((pid, _escape(cmdline.decode("utf-8", "replace"))[:200] or "?"))
    return holders


def _readlink(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return ""


def _log_tail(path: Path, count: int) -> list[str]:
    try:
        with _open_nofollow(path) as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 16 * 1024))
            data = f.read(16 * 1024)
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
    group.addoption(
        "--xforget",
        nargs="*",
        metavar="NAME",
        help="remove the records (state, logs, port) of processes that are not running (all, or those named) and exit",
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
    show, kill, forget = config.option.xshow, config.option.xkill, config.option.xforget
    if show is None and kill is None and forget is None:
        return None
    xp = XProcess(config, config.rootpath)
    names = next(names for names in (kill, forget, show) if names is not None)
    try:
        infos = xp._infos(names)
    except (ValueError, LookupError) as exc:
        _print(f"xprocess: {exc}", sys.stderr)
        return pytest.ExitCode.USAGE_ERROR
    if not infos:
        _print(f"no processes recorded in {xp.statedir}")
    if kill is not None:
        # a state that cannot be trusted still has what its name left running found (by log, by marker)
        states = {info.name: info._state() for info in infos}
        targets = {info.name: (info, states[info.name]) for info in infos}
        found = _find_ours(targets, tree=True)
        # an explicit order overrides the leases of other sessions: it says whose
        users = {}
        for info in infos:
            held = [i for i in _logs_of(found[info.name], info, states[info.name]) if _holders(i)]
            if held:
                users[info.name] = "; ".join(map(_describe_holders, held))
        results = _terminate(targets, TERMINATE_TIMEOUT, found=found)
        words = {1: "TERMINATED", 0: "NO PROCESS FOUND", -1: "FAILED TO TERMINATE"}
        for name, state in states.items():
            note = f" (it was in use by {users[name]})" if name in users and results[name] else ""
            _print(f"{state['pid'] if state else '-'} {name} {words[results[name]]}{note}")
        return 1 if -1 in results.values() else 0
    if forget is not None:
        return _forget(infos, named=bool(forget))
    for line in _show_table(infos):
        _print(line)
    return 0


def _print(line: str, file: IO[str] | None = None) -> None:
    """Print ``line`` whatever the terminal's encoding (names and commands may be any text),
    control characters escaped."""
    file = file or sys.stdout
    print(_printable(line, file), file=file)


def _printable(text: str, file: IO[str] | None = None) -> str:
    """``text`` as ``file`` (default stdout) can show it: control characters and what its
    encoding lacks escaped."""
    encoding = getattr(file or sys.stdout, "encoding", None) or "ascii"
    return _escape(text).encode(encoding, "backslashreplace").decode(encoding)


_SHOW_WIDTH = 100  # --xshow's lines fit this many columns (but for long names)


def _show_table(infos: Sequence[XProcessInfo]) -> list[str]:
    """``--xshow``: a row per process (NAME, STATUS, PID, PORT, UPTIME, USERS), and beneath it
    its command and log, indented."""
    import shlex

    header = ("NAME", "STATUS", "PID", "PORT", "UPTIME", "USERS")
    rows: list[tuple[str, ...]] = []
    details: list[list[str]] = []
    for info in infos:
        state = info._state()
        proc = _owned(state, info)[0] if state else None
        running = proc is not None and not proc.zombie
        uptime = "-"
        started = state.get("started") if state else None
        if running and isinstance(started, (int, float)) and 0 <= time.time() - started < 10**9:
            uptime = _duration(int(time.time() - started))
        users = _holders(tuple(state["log"])) if running and state else []
        port = state.get("port") if state else None
        rows.append(
            (
                _printable(info.name),
                "LIVE" if running else "DEAD",
                str(state["pid"]) if state else "-",
                str(port) if type(port) is int else "-",
                uptime,
                ",".join(map(str, users)) or "-",
            )
        )
        lines = []
        if state and isinstance(state.get("args"), list):
            command = _printable(shlex.join(map(str, state["args"])))
            room = _SHOW_WIDTH - len("    $ ")
            lines.append("    $ " + (command if len(command) <= room else command[: room - 3] + "..."))
        lines.append(f"    log: {info.logpath}")
        details.append(lines)
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    out = ["  ".join(cell.ljust(width) for cell, width in zip(header, widths)).rstrip()]
    for row, lines in zip(rows, details):
        out.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
        out.extend(lines)
    return out if rows else []


def _duration(seconds: int) -> str:
    """``45s``, ``12m05s``, ``3h04m``, ``2d05h``."""
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds // 60 % 60:02d}m"
    return f"{seconds // 86400}d{seconds // 3600 % 24:02d}h"


def _forget(infos: Sequence[XProcessInfo], named: bool) -> int:
    """``--xforget``: remove the control directory of each process of ``infos`` that is not
    running, under its start lock (so no session starts it meanwhile). A running one is kept: an
    error when it was named, else listed as kept.

    :returns: the exit status: 1 if something named could not be forgotten.
    """
    import shlex
    import shutil

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
            alive = _find_ours({info.name: (info, info._state())}, tree=True)[info.name]
            if alive:
                pids = ", ".join(str(p.pid) for p in alive)
                if named:
                    _print(
                        f"{info.name} NOT FORGOTTEN: it is LIVE (pid {pids}); stop it first: pytest --xkill {quoted}"
                    )
                    status = 1
                else:
                    _print(f"{info.name} kept: it is LIVE (pid {pids})")
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


def pytest_configure(config: pytest.Config) -> None:
    xp = XProcess(config, config.rootpath)
    workerinput = getattr(config, "workerinput", None)
    xp._session = workerinput.get("xprocess_session", "") if workerinput else os.urandom(8).hex()
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
    xp = item.config.stash[_XPROCESS_KEY]
    xp._mark_test_start()
    xp._look()  # a crash since the last test's last report happened during it, at the latest
    xp._test = item.nodeid


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome: Any = yield
    report = outcome.get_result()
    xp = item.config.stash[_XPROCESS_KEY]
    if report.failed:
        report.sections.extend(xp._report_sections())
    if xp._watch is not None:  # a crash during this test: its report says so, passed or failed
        xp._look()
        report.sections.extend(xp._watch.sections(item.nodeid))


@pytest.hookimpl(trylast=True)  # after the session fixtures' teardown, which may still use them
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    xp = config.stash.get(_XPROCESS_KEY, None)
    if xp is None or not xp._session:
        return
    xp._release()  # this session's use ends (an xdist worker's, before the controller hears of it)
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
    results = xp._stop_unused([xp.getinfo(n) for n in wanted])
    if not worker:
        for name, result in results.items():
            with contextlib.suppress(OSError):  # kept in memory: the summary has it
                xp._record({"name": name, "terminated": result})


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    xp = config.stash.get(_XPROCESS_KEY, None)
    if xp is None or not xp._session or hasattr(config, "workerinput"):
        return
    uses = xp._session_uses()
    if not uses:
        return
    if all(use.get("event", "reused") == "reused" and not {"terminated", "died"} & set(use) for use in uses.values()):
        if terminalreporter.verbosity >= 0:  # nothing happened worth a section
            terminalreporter.write_line("xprocess: reused " + ", ".join(_escape(name) for name in sorted(uses)))
        return
    terminalreporter.write_sep("=", "xprocess")
    for name, use in sorted(uses.items()):
        line = f"{_escape(name)}: {_summary_event(use)}"
        if use.get("more"):
            more = use["more"]
            line += f"; then {'another start' if more == 1 else f'{more} more starts, the last'}: "
            line += _summary_event(use["then"])
        done = use.get("terminated")
        ended = use.get("event") == "interrupted" or str(use.get("event")).startswith("failed")
        if done is not None and not (done == 0 and ended):  # a failed start ended it: nothing to add
            line += {
                1: ", terminated at end",
                0: ", already gone at end",
                -1: ", FAILED to terminate at end",
                "in use": ", left running (in use by another session)",
            }.get(done, "")
        terminalreporter.write_line(line)
        for during in use.get("died", {}).values():
            terminalreporter.write_line(f"{name}: DIED during {during}")


def _summary_event(use: Mapping[str, Any]) -> str:
    """The summary's words for one recorded event of a session (see ``XProcess._note_use``)."""
    event = use.get("event", "reused")
    if event == "reused":
        return "reused"
    if event == "starting":  # no outcome was recorded: the xdist worker starting it ended first
        return "its start did not finish (the xdist worker starting it ended during the start)"
    if event == "interrupted":
        return "interrupted during its start"
    head, _, why = str(event).partition(": ")
    if head == "failed":
        return f"FAILED to start: {why}"
    line = f"{head} in {use.get('seconds', 0):.2f} s"
    if use.get("stop"):
        line += f" after a {use['stop']:.1f} s stop"
    return line + (f" ({why})" if why else "")


def pytest_unconfigure(config: pytest.Config) -> None:
    xp = config.stash.get(_XPROCESS_KEY, None)
    if xp is None:
        return
    xp.close()
    if xp._session and not hasattr(config, "workerinput"):
        with contextlib.suppress(OSError):
            xp._session_path().unlink()
