"""The files under .xprocess, unit by unit, in milliseconds: what ``_read_state`` trusts and takes
from a state.jsonl written by hand (owner, mode, size, JSON lines, each field), and the leases
(``_lease_files``: the log files a name's processes write to; ``_lock_out``: locking each of them
exclusively, which proves no session holds a shared lease, else ``_InUse``). The files, the locks
and the processes writing to a log are real: children of the test, and locks held through a
second open file description or by a child."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator

import pytest

import xprocess
from xprocess import STATE_VERSION, _InUse, _lease_files, _lock_out, _read_state

TOKEN = "0123456789abcdef:fedcba9876543210"
RECORD: dict[str, Any] = {
    "version": STATE_VERSION,
    "pid": 4242,
    "start": "boot:123",
    "token": TOKEN,
    "log": [2049, 1234],
    "fingerprint": {"args": "sleep 600"},
}


def write(path: Path, *lines: object, end: str = "\n", mode: int = 0o600) -> Path:
    """A state file of JSON ``lines`` (a str is written as it is), the last one ended by ``end``."""
    text = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + end
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    path.chmod(mode)
    return path


def read(path: Path) -> tuple[xprocess._State | None, list[str]]:
    """What ``_read_state`` returns, and the messages of the warnings it gives."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        state = _read_state(path)
    assert all(w.category is xprocess.XProcessWarning for w in caught)
    return state, [str(w.message) for w in caught]


def refused(path: Path) -> str:
    """Why the state at ``path`` is not used: the one warning, which says the process is taken as not running."""
    state, messages = read(path)
    assert state is None and len(messages) == 1
    prefix, suffix = f"{path} ", "; treating the process as not running"
    assert messages[0].startswith(prefix) and messages[0].endswith(suffix)
    return messages[0][len(prefix) : -len(suffix)]


def trusted(path: Path) -> dict[str, Any]:
    """The fields of the state at ``path``, read without a warning."""
    state, messages = read(path)
    assert messages == [] and state is not None
    names = ["pid", "start", "token", "log", "fingerprint", "args", "port", "forks", "ready", "spawned_at", "match"]
    return {name: getattr(state, name) for name in [*names, "pattern"]}


NOTHING_MORE = dict(args=None, port=None, forks=None, ready=False, spawned_at=None, match=None, pattern=None)
BASIC = dict(pid=4242, start="boot:123", token=TOKEN, log=(2049, 1234), fingerprint={"args": "sleep 600"})


@pytest.fixture
def statepath(tmp_path: Path) -> Path:
    return tmp_path / "state.jsonl"


# --- _read_state: what is trusted ---


def test_no_state_file_is_nothing_recorded_without_a_warning(statepath):
    assert read(statepath) == (None, [])


def test_a_start_record_is_read_back_with_nothing_more_than_it_holds(statepath):
    assert trusted(write(statepath, RECORD)) == {**BASIC, **NOTHING_MORE}


def test_every_field_a_start_records_is_read_back(statepath):
    extras = dict(args=["sleep", "600"], port=8080, forks=9000, match="ready\n", pattern=["ready", 0])
    fields = trusted(write(statepath, {**RECORD, **extras, "ready": True, "started": 1_700_000_000.5}))
    assert fields == {**BASIC, **extras, "ready": True, "spawned_at": 1_700_000_000.5}
    assert type(fields["log"]) is tuple  # (device, inode), as os.stat gives them


def test_a_start_time_in_whole_seconds_is_read_back(statepath):
    assert trusted(write(statepath, {**RECORD, "started": 1_700_000_000}))["spawned_at"] == 1_700_000_000


@pytest.mark.parametrize(
    "field, value",
    [
        ("port", "8080"),
        ("port", True),
        ("forks", 9000.0),
        ("args", "sleep 600"),
        ("match", 5),
        ("pattern", "ready"),
        ("started", "yesterday"),
        ("started", True),
    ],
)
def test_an_optional_field_of_the_wrong_type_is_left_out(statepath, field, value):
    assert trusted(write(statepath, {**RECORD, field: value})) == {**BASIC, **NOTHING_MORE}


def test_updates_after_the_start_record_are_applied_in_order_and_a_line_cut_short_is_not(statepath):
    updates = [{"ready": True, "match": "first"}, {"port": 8080}, {"match": "second"}]
    write(statepath, RECORD, *updates, '{"forks": 1', end="")
    fields = trusted(statepath)
    assert (fields["ready"], fields["port"], fields["match"], fields["forks"]) == (True, 8080, "second", None)


def test_an_update_line_ended_by_its_newline_is_applied(statepath):
    assert trusted(write(statepath, RECORD, {"ready": True}))["ready"] is True


def test_an_update_cut_short_even_the_first_is_ignored(statepath):
    assert trusted(write(statepath, RECORD, '{"ready": true}', end=""))["ready"] is False


# --- _read_state: what is not trusted, and the warning saying why ---


@pytest.mark.skipif(os.geteuid() != 0, reason="a file of another account: root chowns it")
def test_a_state_of_another_account_is_not_trusted(statepath):
    os.chown(write(statepath, RECORD), 54321, -1)
    assert refused(statepath) == "belongs to uid 54321 or is writable by others: not trusted (remove it)"


@pytest.mark.parametrize("mode", [0o620, 0o602, 0o666])
def test_a_state_others_may_write_to_is_not_trusted(statepath, mode):
    write(statepath, RECORD, mode=mode)
    assert refused(statepath) == f"belongs to uid {os.geteuid()} or is writable by others: not trusted (remove it)"


@pytest.mark.parametrize("mode", [0o644, 0o601, 0o700, 0o400])
def test_a_state_others_may_read_or_run_but_not_write_is_trusted(statepath, mode):
    assert trusted(write(statepath, RECORD, mode=mode))["pid"] == 4242


@pytest.fixture
def small_limit(monkeypatch: pytest.MonkeyPatch) -> int:
    """The size limit of a state, 2 MiB here (32 MiB in xprocess): files that size stay cheap."""
    monkeypatch.setattr(xprocess, "_MAX_STATE", 2 << 20)
    return 2 << 20


def test_a_state_bigger_than_the_limit_is_not_read(statepath, small_limit):
    with open(write(statepath, RECORD), "r+b") as f:
        f.truncate(small_limit + 1)
    assert refused(statepath) == "is bigger than 2 MiB, which xprocess never writes"


def test_a_state_of_exactly_the_limit_is_read_to_its_last_newline(statepath, small_limit):
    head = json.dumps(RECORD) + "\n"
    last = '{"ready": true}\n'
    statepath.write_text(head + " " * (small_limit - len(head) - len(last)) + last)
    statepath.chmod(0o600)
    assert statepath.stat().st_size == small_limit
    assert trusted(statepath)["ready"] is True


def test_a_symbolic_link_is_refused_saying_so(statepath, tmp_path):
    statepath.symlink_to(write(tmp_path / "elsewhere.jsonl", RECORD))
    assert refused(statepath) == "cannot be read (Too many levels of symbolic links; a symbolic link is refused)"


def test_a_directory_in_its_place_cannot_be_read(statepath):
    statepath.mkdir()
    assert refused(statepath) == "cannot be read (Is a directory; a symbolic link is refused)"


def test_a_state_that_is_not_utf8_cannot_be_read_saying_why(statepath):
    statepath.write_bytes(b'{"version": 3, "start": "\xff"}\n')
    statepath.chmod(0o600)
    why = refused(statepath)
    assert why.startswith("cannot be read ('utf-8' codec can't decode byte 0xff")
    assert why.endswith("; a symbolic link is refused)")


@pytest.mark.parametrize(
    "lines",
    [
        [""],
        ['{"version": 3, "pid": 12'],
        ["garbage\x00"],
        ["[" * 100_000],  # nested deeper than the parser recurses
        [[1, 2]],  # JSON, not a record
        [[1, 2], {"ready": True}],  # a list updated
        [RECORD, 5],  # an update that is no record
        [RECORD, "garbage"],
        [RECORD, "", {"ready": True}],  # an empty line in between
    ],
)
def test_what_is_not_json_lines_of_records_is_refused(statepath, lines):
    write(statepath, *lines)
    assert refused(statepath) == "is not valid JSON lines (empty, truncated or garbage)"


def test_a_state_of_a_newer_format_is_refused_naming_it(statepath):
    write(statepath, {**RECORD, "version": STATE_VERSION + 1})
    assert refused(statepath) == f"was written by a newer xprocess (format {STATE_VERSION + 1})"


def test_a_state_of_an_older_format_is_refused_naming_it(statepath):
    write(statepath, {**RECORD, "version": STATE_VERSION - 1})
    assert refused(statepath) == (
        f"was written by an older xprocess (format {STATE_VERSION - 1}); its processes are found by their marker"
    )


def test_an_update_can_make_a_state_a_newer_formats(statepath):
    write(statepath, RECORD, {"version": STATE_VERSION + 1})
    assert refused(statepath) == f"was written by a newer xprocess (format {STATE_VERSION + 1})"


@pytest.mark.parametrize(
    "change",
    [
        {"version": None},
        {"version": str(STATE_VERSION)},
        {"pid": None},
        {"pid": "4242"},
        {"pid": 4242.0},
        {"pid": True},
        {"pid": 1},  # init
        {"pid": 0},
        {"pid": -5},
        {"pid": 2**31},
        {"start": None},
        {"start": 123},
        {"token": None},
        {"token": 5},
        {"token": "0123456789abcdef"},
        {"token": TOKEN + "0"},
        {"token": TOKEN.upper()},
        {"fingerprint": None},
        {"fingerprint": ["args"]},
        {"log": None},
        {"log": "ab"},
        {"log": {"2049": 1, "1234": 2}},
        {"log": [2049]},
        {"log": [2049, 1234, 5]},
        {"log": [2049, "1234"]},
        {"log": [2049, 1234.0]},
        {"log": [True, 1234]},
        {"log": [2049, -1]},
        {"log": [-1, 1234]},
        {"log": [2049, 2**64]},
        {"log": [2**64, 1234]},
    ],
)
def test_a_record_missing_a_field_or_with_one_out_of_range_holds_no_recorded_process(statepath, change):
    write(statepath, {**RECORD, **change})
    assert refused(statepath) == "does not hold a recorded process"


@pytest.mark.parametrize("field", ["version", "pid", "start", "token", "fingerprint", "log"])
def test_a_record_without_one_of_its_fields_holds_no_recorded_process(statepath, field):
    write(statepath, {k: v for k, v in RECORD.items() if k != field})
    assert refused(statepath) == "does not hold a recorded process"


@pytest.mark.parametrize(
    "change, read_back",
    [
        ({"pid": 2}, {"pid": 2}),
        ({"pid": 2**31 - 1}, {"pid": 2**31 - 1}),
        ({"log": [0, 0]}, {"log": (0, 0)}),
        ({"log": [2**64 - 1, 2**64 - 1]}, {"log": (2**64 - 1, 2**64 - 1)}),
        ({"version": float(STATE_VERSION)}, {}),
    ],
)
def test_the_edges_of_each_range_still_hold_a_recorded_process(statepath, change, read_back):
    assert trusted(write(statepath, {**RECORD, **change})) == {**BASIC, **NOTHING_MORE, **read_back}


# --- _lease_files: the log files a name's processes write to ---


@pytest.fixture
def spawn() -> Iterator[Any]:
    """Start ``sleep 600`` with its stdout and stderr on the files given; killed and reaped at the end."""
    children: list[subprocess.Popen[bytes]] = []

    def start(stdout: Path | int, stderr: Path | int | None = None) -> subprocess.Popen[bytes]:
        files = []
        try:
            for target in (stdout, stdout if stderr is None else stderr):
                files.append(open(target, "ab") if isinstance(target, Path) else target)  # noqa: SIM115
            child = subprocess.Popen(["sleep", "600"], stdin=subprocess.DEVNULL, stdout=files[0], stderr=files[1])
        finally:
            for f in files:
                if not isinstance(f, int):
                    f.close()
        children.append(child)
        return child

    yield start
    for child in children:
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signal.SIGKILL)
        child.wait()
        for pipe in (child.stdout, child.stderr):
            if pipe is not None:
                pipe.close()


@pytest.fixture(params=["procfs", "portable"])
def reader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """The process table of either reader (/proc, or psutil as on macOS), and the path each gives to
    open a file a process holds: /proc's link to the open file itself, or the path it has now."""
    if request.param == "procfs":
        if not xprocess._PROC_FS:
            pytest.skip("no /proc here")
        monkeypatch.setattr(xprocess, "_OS", xprocess._ProcFS())
        return SimpleNamespace(held=lambda pid, fd, path: f"/proc/{pid}/fd/{fd}")
    monkeypatch.setattr(xprocess, "_OS", xprocess._Portable())
    return SimpleNamespace(held=lambda pid, fd, path: path)


@pytest.fixture
def name(tmp_path: Path) -> SimpleNamespace:
    """A name "srv" of a project in ``tmp_path``, its log a real file."""
    info = xprocess.XProcessInfo(tmp_path / ".xprocess", "srv")
    info.controldir.mkdir(parents=True)
    info.logpath.write_text("")
    st = info.logpath.stat()
    return SimpleNamespace(info=info, log=(st.st_dev, st.st_ino), path=info._kernel_dir + "/xprocess.log")


def ident(path: Path) -> tuple[int, int]:
    st = path.stat()
    return (st.st_dev, st.st_ino)


def recorded(name: SimpleNamespace, child: subprocess.Popen[bytes] | None) -> xprocess._Recorded:
    """What is recorded for ``name``: the start of ``child``, or nothing (a lost state)."""
    if child is None:
        return xprocess._Recorded(name.info, None)
    proc = xprocess._OS.proc(child.pid)
    assert proc is not None
    state = xprocess._State(pid=child.pid, start=proc.start, token=TOKEN, log=name.log, fingerprint={})
    return xprocess._Recorded(name.info, state)


def procs(*children: subprocess.Popen[bytes]) -> list[xprocess._Proc]:
    found = [xprocess._OS.proc(c.pid) for c in children]
    assert None not in found
    return found  # type: ignore[return-value]


def test_the_recorded_log_is_leased_by_its_path_and_by_each_output_of_the_server(reader, name, spawn):
    server = spawn(name.info.logpath)
    held = [reader.held(server.pid, fd, name.path) for fd in (1, 2)]
    assert _lease_files(procs(server), recorded(name, server)) == {name.log: [str(name.info.logpath), *held]}


def test_with_no_process_left_there_is_nothing_to_lease(reader, name, spawn):
    server = spawn(name.info.logpath)
    assert _lease_files([], recorded(name, server)) == {}


def test_a_lost_states_processes_lease_the_logs_of_the_control_directory_they_write_to(reader, name, spawn):
    earlier = name.info.controldir / "xprocess.log.1"
    server, other = spawn(name.info.logpath, subprocess.DEVNULL), spawn(earlier)
    leases = _lease_files(procs(server, other), recorded(name, None))
    assert leases == {
        name.log: [reader.held(server.pid, 1, name.path)],
        ident(earlier): [reader.held(other.pid, fd, name.info._kernel_dir + "/xprocess.log.1") for fd in (1, 2)],
    }


def test_a_file_of_its_own_in_the_control_directory_is_leased_under_its_own_identity(reader, name, spawn):
    own = name.info.controldir / "server.err"
    server = spawn(name.info.logpath, own)
    assert _lease_files(procs(server), recorded(name, server)) == {
        name.log: [str(name.info.logpath), reader.held(server.pid, 1, name.path)],
        ident(own): [reader.held(server.pid, 2, name.info._kernel_dir + "/server.err")],
    }


def test_outputs_outside_the_control_directory_lease_nothing(reader, name, spawn, tmp_path):
    elsewhere = tmp_path / "elsewhere.log"
    server = spawn(name.info.logpath, subprocess.DEVNULL)
    child = spawn(elsewhere)
    piped = spawn(subprocess.PIPE)
    leases = _lease_files(procs(server, child, piped), recorded(name, server))
    assert leases == {name.log: [str(name.info.logpath), reader.held(server.pid, 1, name.path)]}


def test_the_recorded_log_moved_out_of_the_control_directory_is_leased_still(reader, name, spawn, tmp_path):
    server = spawn(name.info.logpath)
    state = recorded(name, server)
    moved = tmp_path / "moved.log"
    name.info.logpath.rename(moved)
    held = [reader.held(server.pid, fd, str(moved)) for fd in (1, 2)]
    assert _lease_files(procs(server), state) == {name.log: [str(name.info.logpath), *held]}


# --- _lock_out: locking each lease's file exclusively ---


def open_fds() -> set[str]:
    return set(os.listdir("/dev/fd"))


def lockable(path: Path, how: int = fcntl.LOCK_SH) -> bool:
    """Whether another open file description of ``path`` can take a lock on it now."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, how | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


@pytest.fixture
def logs(tmp_path: Path) -> SimpleNamespace:
    """Three log files a, b and c, and their leases' entries (identity: the paths that open it)."""
    made = SimpleNamespace()
    for n in "abc":
        path = tmp_path / f"{n}.log"
        path.write_text("")
        setattr(made, n, path)
        setattr(made, f"{n}_lease", (ident(path), [str(path)]))
    return made


@pytest.fixture
def fds() -> Iterator[list[int]]:
    """The fds a test holds, closed at its end (those still open)."""
    opened: list[int] = []
    yield opened
    for fd in opened:
        with contextlib.suppress(OSError):
            os.close(fd)


def lease(path: Path, fds: list[int]) -> int:
    """A session's lease on ``path``: a shared lock through an open file description of its own."""
    fd = os.open(path, os.O_RDONLY)
    fds.append(fd)
    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    return fd


def is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def test_free_logs_are_each_locked_out_until_their_fds_close(logs, fds):
    held = _lock_out(dict([logs.a_lease, logs.b_lease]), None)
    fds += held
    assert len(held) == 2 and not lockable(logs.a) and not lockable(logs.b)
    assert sorted((os.fstat(fd).st_dev, os.fstat(fd).st_ino) for fd in held) == sorted([ident(logs.a), ident(logs.b)])
    for fd in held:
        os.close(fd)
    assert lockable(logs.a) and lockable(logs.b)


def test_a_log_gone_meanwhile_is_skipped_and_the_next_is_locked_still(logs, fds, tmp_path):
    gone = (ident(logs.c), [str(tmp_path / "removed.log"), str(logs.a)])  # no path opens that file now
    held = _lock_out(dict([gone, logs.b_lease]), None)
    fds += held
    assert len(held) == 1 and ident(logs.b) == (os.fstat(held[0]).st_dev, os.fstat(held[0]).st_ino)
    assert not lockable(logs.b) and lockable(logs.a, fcntl.LOCK_EX) and lockable(logs.c, fcntl.LOCK_EX)


def test_this_sessions_own_lease_is_converted_not_opened_again(logs, fds):
    own = lease(logs.a, fds)
    assert _lock_out(dict([logs.a_lease]), own) == [own]
    assert not lockable(logs.a)


def test_this_sessions_own_lease_on_a_file_no_process_writes_to_is_ended(logs, fds):
    own = lease(logs.a, fds)
    held = _lock_out(dict([logs.b_lease]), own)
    fds += held
    assert not is_open(own) and lockable(logs.a, fcntl.LOCK_EX)
    assert len(held) == 1 and not lockable(logs.b)


def test_a_lease_another_session_holds_is_in_use_and_nothing_stays_locked_or_open(logs, fds):
    other = lease(logs.c, fds)  # another open file description: to flock, another session
    own = lease(logs.b, fds)
    before = open_fds()
    with pytest.raises(_InUse) as raised:
        _lock_out(dict([logs.a_lease, logs.b_lease, logs.c_lease]), own)
    assert raised.value.holders == "another session"
    assert open_fds() == before  # the fds it opened closed, this session's own kept
    assert lockable(logs.a, fcntl.LOCK_EX) and is_open(own) and is_open(other)


def test_the_holder_of_a_lease_is_named_by_pid_and_command_line(logs, fds):
    if not xprocess._PROC_FS:
        pytest.skip("who holds a lock: /proc/locks")
    code = "import fcntl, time; fcntl.flock(0, fcntl.LOCK_SH); print('locked', flush=True); time.sleep(600)"
    with open(logs.b, "rb") as log:  # its stdin: the child takes its own lock on it
        holder = subprocess.Popen([sys.executable, "-c", code], stdin=log, stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"locked\n"
        with pytest.raises(_InUse) as raised:
            _lock_out(dict([logs.a_lease, logs.b_lease]), None)
        assert raised.value.holders.startswith(f"pid {holder.pid}: {sys.executable} -c import fcntl")
        assert lockable(logs.a, fcntl.LOCK_EX)
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
