"""Section 5, the record: state.jsonl as written, read back, cut short, unreadable or garbage."""

from __future__ import annotations

import contextlib
import json
import os

import pytest
from conftest import (
    SLEEPER,
    Good,
    alive,
    make_project,
    ours_still_running,
    recorded_pid,
    starter,
)

import xprocess
from xprocess import XProcess


@pytest.mark.parametrize("content", ["", '{"version": 1, "pid": 12', "garbage\x00", '{"version": 99}', "[]"])
def test_unreadable_state_means_not_running_with_a_warning(xp, content):
    control = xp.statedir / "bad"
    control.mkdir(parents=True)
    (control / "state.jsonl").write_text(content)
    with pytest.warns(xprocess.XProcessWarning, match="not running"):
        assert not xp.getinfo("bad").isrunning()
    with pytest.warns(xprocess.XProcessWarning):
        assert xp.ensure("bad", starter(SLEEPER)).match.string == "ready\n"
    assert xp.getinfo("bad").isrunning()


def test_state_is_a_start_record_and_a_whole_ready_line(xp):
    xp.ensure("atomic", starter(SLEEPER))
    control = xp.statedir / "atomic"
    assert sorted(p.name for p in control.iterdir()) == ["lock", "state.jsonl", "xprocess.log"]
    start, ready = (json.loads(line) for line in (control / "state.jsonl").read_text().splitlines())
    assert start["ready"] is False and ready == {
        "ready": True,
        "match": "ready\n",
        "pattern": ["ready", 32],
        "port": None,
    }


def test_a_ready_line_of_the_longest_kind_is_reused(xp):
    """A ready line cut to its 1 MiB of bytes that JSON writes six times longer (non-UTF-8 bytes,
    control characters): its record is still read back, and the server reused (issue 26, case 12)."""
    code = (
        "import sys, time; sys.stdout.buffer.write(b'ready ' + b'\\xff\\x01' * 2**20 + b'\\n');"
        " sys.stdout.flush(); time.sleep(600)"
    )
    first = xp.ensure("long", starter(code))
    assert (xp.statedir / "long" / "state.jsonl").stat().st_size > 6 * 2**20
    again = xp.ensure("long", starter(code))
    assert again[0] == first[0]
    assert again.match.string == first.match.string and len(first.match.string) == 2**20 + 1


def test_a_state_bigger_than_any_xprocess_writes_is_not_trusted(xp):
    xp.ensure("big", starter(SLEEPER))
    path = xp.statedir / "big" / "state.jsonl"
    os.truncate(path, xprocess._MAX_STATE + 1)  # its records, then zeros without a newline
    with pytest.warns(xprocess.XProcessWarning, match="bigger than 32 MiB"):
        assert not xp.getinfo("big").isrunning()


def test_a_state_is_read_in_memory_of_its_own_size(xp):
    """A reuse reads the state: reading it allocated the 32 MiB it may hold, each time (the bench's
    warm reuse peaked at 33.6 MB)."""
    import tracemalloc

    xp.ensure("small", starter(SLEEPER))
    tracemalloc.start()
    try:
        state = xprocess._read_state(xp.statedir / "small" / "state.jsonl")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert state is not None and state.ready
    assert peak < 2**20, peak


def test_a_ready_line_cut_short_means_never_ready(xp):
    """A crash while appending the ready line: the process is not trusted, it is restarted."""
    first = xp.ensure("torn", starter(SLEEPER))[0]
    path = xp.statedir / "torn" / "state.jsonl"
    path.write_text(path.read_text().splitlines()[0] + '\n{"ready": tr')
    assert xp.getinfo("torn").isrunning()  # alive, but never became ready as far as we know
    second = xp.ensure("torn", starter(SLEEPER))[0]
    assert second != first and not alive(first)


def test_a_failed_state_write_terminates_the_child_it_just_spawned(tiny_disk):
    """The state of the running process is there; the restart's write fails (disk full)."""
    with XProcess(None, tiny_disk) as xp:
        first = xp.ensure("full", starter(SLEEPER))[0]
        fd = os.open(tiny_disk / "filler", os.O_WRONLY | os.O_CREAT)
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"x" * 4096)
        os.close(fd)
        with pytest.raises(xprocess.XProcessError, match="No space left"):
            xp.ensure("full", starter(SLEEPER), restart=True)
        assert not alive(first)
        assert ours_still_running(tiny_disk) == []


@pytest.mark.parametrize(
    "garbage",
    [
        *('{"pid": -5}', '{"pid": NaN}', '{"pid": 99999999999999999999}', '{"pid": {"a": [1]}}'),
        *('{"log": [1180591620717411303424, 1]}', '{"log": [-1, 1]}', '{"log": [1, 18446744073709551616]}'),
        *("[" * 100_000, "\x00"),
    ],
)
def test_bad_state_for_one_name_is_a_warning_and_the_others_are_handled(pytester_xp, garbage):
    make_project(pytester_xp.path)
    assert pytester_xp.runpytest_subprocess().ret == 0
    good = XProcess(None, pytester_xp.path).getinfo("srv").pid
    state = pytester_xp.path / ".xprocess" / "bad" / "state.jsonl"
    state.parent.mkdir()
    recorded = json.loads((pytester_xp.path / ".xprocess" / "srv" / "state.jsonl").read_text().splitlines()[0])
    if garbage.startswith('{"'):  # a real record but for one value
        key = garbage[2:].partition('"')[0]
        garbage = json.dumps({**recorded, key: None}).replace(f'"{key}": null', garbage[1:-1])
    state.write_text(garbage)
    for option in ("--xshow", "--xkill"):
        result = pytester_xp.runpytest_subprocess(option)
        assert result.ret == 0, result.stdout.str() + result.stderr.str()
        assert "Traceback" not in result.stdout.str() + result.stderr.str()
        result.stdout.fnmatch_lines(["bad *DEAD *- *" if option == "--xshow" else "- bad NO PROCESS FOUND"])
    assert not alive(good)  # --xkill went on to the healthy one


def test_xkill_ends_a_server_whose_state_is_garbage(project):
    project.runpytest_subprocess().assert_outcomes(passed=1)
    pid = recorded_pid(project)
    (project.path / ".xprocess" / "srv" / "state.jsonl").write_text("garbage")
    kill = project.runpytest_subprocess("--xkill")
    assert kill.ret == 0
    kill.stdout.fnmatch_lines(["- srv TERMINATED"])
    kill.stderr.fnmatch_lines(["*state.jsonl is not valid JSON lines*"])
    assert not alive(pid)


def test_a_stop_on_purpose_is_noted_only_in_the_state_of_the_start_it_stopped(xp):
    """The note that makes the next start a start, not "restarted (it had stopped)", goes to the
    state of the start it stopped: not to one another session wrote since."""
    info = xp.getinfo("srv")
    xp.ensure("srv", Good)
    old = xprocess._Recorded.read(info)
    xp.ensure("srv", Good, restart=True)  # the file is replaced by the new start's
    xprocess._mark_stopped(old, "--xkill")
    assert xprocess._read_state(info.statepath).stopped is None
    xprocess._mark_stopped(xprocess._Recorded.read(info), "--xkill")
    assert xprocess._read_state(info.statepath).stopped == "--xkill"
    assert info.terminate() == 1
