"""The decisions of ownership and stopping over a synthetic process table (issue 27): which
processes are ours (``_owned``, ``_find_ours``), which pids can be new (``handed_out``) and what a
stop takes as forks (``_forked``), case by case in milliseconds. The table stands in for
``/proc`` only where no real process shows a case on demand (a pid wrap-around, a recycling in
the same clock tick, a thread id, a file of another account); the files the proof opens are real.
The tests with real processes stay in test_ownership.py and test_stopping.py."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

import xprocess
from xprocess import _COPIED, _FOREIGN, _NOTHING, _RECYCLED, _STOPPED

ME = os.geteuid()
BASE = 3_000_000  # the table's pids: far from this process and its ancestors (exempt whatever a table says)


class Row(SimpleNamespace):
    """One process of the table: ``out`` maps fd 1 and 2 to (path, (device, inode) or None, owner)."""

    pid: int
    ticks: int
    ppid: int
    sid: int
    zombie: bool = False
    marker: str | None = ""
    out: dict
    thread_of: int | None = None
    vanished: bool = False  # gone between two reads: its environment read, its stat no more


class Table(xprocess._ProcFS):
    """``/proc`` as a list of rows, and the pids handed out: the last one and the forks so far."""

    def __init__(self, *rows: Row, last: int | None = None, forks: int | None = 10_000, pid_max: int = 4_194_304):
        self.rows = {r.pid: r for r in rows}
        self.last = last if last is not None else max([BASE, *self.rows])
        self.forks_so_far, self.max = forks, pid_max

    def proc(self, pid: int) -> xprocess._Proc | None:
        r = self.rows.get(pid)
        if r is None or r.vanished:
            return None
        return xprocess._Proc(pid, f"{xprocess._boot_id()}:{r.ticks}", r.ticks, r.ppid, r.sid, r.zombie)

    def pids(self) -> list[int]:
        return [pid for pid, r in self.rows.items() if r.thread_of is None]  # /proc lists no thread ids

    def marker(self, pid: int) -> str | None:
        r = self.rows.get(pid)
        return None if r is None else "" if r.zombie else r.marker

    def is_process(self, pid: int) -> bool:
        return pid in self.rows and self.rows[pid].thread_of is None

    def stdout_files(self, pid: int) -> list[tuple[str, tuple[int, int], int, int]]:
        r = self.rows.get(pid)
        if r is None or r.zombie:
            return []
        return [(path, ident, uid, fd) for fd, (path, ident, uid) in sorted(r.out.items()) if ident is not None]

    def output_dirs(self, pid: int) -> list[str]:
        r = self.rows.get(pid)
        if r is None or r.zombie or 1 not in r.out:
            return []
        path = r.out[1][0] if r.out[1][0] != "/dev/null" else r.out.get(2, ("",))[0]
        d = xprocess._control_dir_of(path)
        return [d] if d else []

    lists_children = True

    def children(self, pid: int, exempt: frozenset[int]) -> list[xprocess._Proc]:
        kids = [p for p, r in self.rows.items() if r.ppid == pid and r.thread_of is None and p not in exempt]
        return [self.proc(p) for p in kids]  # type: ignore[misc]

    def forks(self) -> int | None:
        return self.forks_so_far

    def mark(self) -> tuple[int, int | None] | None:
        return (self.last, self.forks_so_far) if self.last is not None else None

    def pid_max(self) -> int | None:
        return self.max

    def clock(self) -> float:
        return 1_000_000

    def lock_holders(self, ident: tuple[int, ...]) -> list[int]:
        return []

    def in_use(self) -> int:
        return len(self.rows)


@pytest.fixture
def project(tmp_path: Path) -> SimpleNamespace:
    """A project with a name "srv" (its log a real file) and what the table needs of it."""
    info = xprocess.XProcessInfo(tmp_path / ".xprocess", "srv")
    info.controldir.mkdir(parents=True)
    info.logpath.write_text("ready\n")
    st = info.logpath.stat()
    token = info._marker_prefix + "0123456789abcdef"
    return SimpleNamespace(
        info=info,
        log=(st.st_dev, st.st_ino),
        token=token,
        out={1: (info._kernel_dir + "/xprocess.log", (st.st_dev, st.st_ino), ME), 2: ("/dev/null", None, ME)},
        elsewhere={1: ("pipe:[7]", None, ME), 2: ("/dev/null", None, ME)},
    )


def state(p: SimpleNamespace, pid: int = BASE, ticks: int = 500, **kw: object) -> xprocess._State:
    fields = dict(pid=pid, start=f"{xprocess._boot_id()}:{ticks}", token=p.token, log=p.log, fingerprint={})
    return xprocess._State(**{**fields, "forks": 9_000, **kw})


@pytest.fixture
def table(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Swap in a Table made of the rows given: ``table(*rows, last=..., forks=...)``."""

    def use(*rows: Row, **kw: object) -> Table:
        t = Table(*rows, **kw)  # type: ignore[arg-type]
        monkeypatch.setattr(xprocess, "_OS", t)
        assert not set(t.rows) & xprocess._exempt() - {os.getpid()}
        return t

    return use


def row(pid: int, ticks: int = 600, ppid: int = 1, sid: int | None = None, **kw: object) -> Row:
    return Row(pid=pid, ticks=ticks, ppid=ppid, sid=pid if sid is None else sid, **{"out": {}, **kw})


def server(p: SimpleNamespace, **kw: object) -> Row:
    """The recorded process: its log on fd 1, its marker shown."""
    return row(BASE, **{"ticks": 500, "out": p.out, "marker": p.token, **kw})


# --- _owned: is the recorded process ours ---


def owned(p: SimpleNamespace, st: xprocess._State | None) -> str:
    proc, why = xprocess._owned(st, p.info)
    assert (proc is None) == bool(why)  # a reason exactly when it is not proven
    return "ours" if proc is not None else why


def test_the_recorded_process_with_its_pid_start_and_log_is_ours(project, table):
    table(server(project))
    assert owned(project, state(project)) == "ours"


def test_nothing_recorded_is_nothing(project, table):
    table(server(project))
    assert owned(project, None) == _NOTHING


def test_a_pid_no_process_has_is_a_start_that_stopped(project, table):
    table(row(BASE + 1, out=project.out))
    assert owned(project, state(project)) == _STOPPED


def test_a_pid_recycled_with_another_start_is_not_ours_even_writing_to_our_log(project, table):
    table(server(project, ticks=501))
    assert owned(project, state(project)) == _RECYCLED


def test_a_thread_id_is_no_process(project, table):
    table(row(BASE + 1, out=project.out), server(project, thread_of=BASE + 1))
    assert owned(project, state(project)) == _RECYCLED


def test_this_process_is_never_ours_whatever_it_shows(project, table):
    table(row(os.getpid(), ticks=500, out=project.out, marker=project.token))
    assert owned(project, state(project, pid=os.getpid())) == _RECYCLED


def test_a_zombie_of_the_recorded_process_is_ours_with_nothing_to_prove(project, table):
    table(server(project, zombie=True, out={}, marker=""))
    assert owned(project, state(project)) == "ours"


def test_a_pid_recycled_in_the_same_tick_proves_nothing_without_our_log_or_marker(project, table):
    table(server(project, out=project.elsewhere, marker=""))
    assert owned(project, state(project)) == _FOREIGN


@pytest.mark.parametrize(
    "marker, expected",
    [("token", "ours"), ("", _FOREIGN), (None, _FOREIGN), ("other start", _FOREIGN), ("other project", _FOREIGN)],
)
def test_without_our_log_only_the_very_marker_recorded_proves_it(project, table, marker, expected):
    shown = {
        "token": project.token,
        "other start": project.token[:-1] + "0",
        "other project": "f" * 16 + project.token[16:],
    }.get(marker, marker)
    table(server(project, out=project.elsewhere, marker=shown))
    recorded = state(project, token=shown) if marker == "other project" else state(project)
    assert owned(project, recorded) == expected


def test_a_log_renamed_in_its_control_directory_still_proves_its_process(project, table):
    rotated = project.info.controldir / "xprocess.log-20261206"
    project.info.logpath.rename(rotated)
    project.info.logpath.write_text("")  # the next start's log
    out = {1: (project.info._kernel_dir + "/xprocess.log-20261206", project.log, ME)}
    table(server(project, out=out, marker=""))
    assert owned(project, state(project)) == "ours"


def test_a_copied_state_names_the_originals_process_which_is_not_the_copys(project, table, tmp_path):
    project.info.logpath.rename(tmp_path / "original's log")  # (kept: its inode is not handed out again)
    project.info.logpath.write_text("")  # the copy's own log; its state, copied, names the original's
    out = {1: (str(tmp_path / "original/.xprocess/srv/xprocess.log"), project.log, ME)}
    table(server(project, out=out))
    assert owned(project, state(project)) == _COPIED


@pytest.mark.parametrize("opened_by", ["this project's path", "the copy's path"])
def test_a_hard_linked_log_proves_only_through_the_path_it_was_opened_by(project, table, tmp_path, opened_by):
    copy = tmp_path / "copy/.xprocess/srv"
    copy.mkdir(parents=True)
    os.link(project.info.logpath, copy / "xprocess.log")
    path = project.out[1][0] if opened_by == "this project's path" else str(copy / "xprocess.log")
    table(server(project, out={1: (path, project.log, ME)}))
    assert owned(project, state(project)) == ("ours" if opened_by == "this project's path" else _COPIED)


def test_our_very_log_named_by_another_path_proves_its_process(project, table):
    out = {1: ("/another/mount/view/.xprocess/srv/xprocess.log", project.log, ME)}  # one file, one name
    table(server(project, out=out, marker=""))
    assert owned(project, state(project)) == "ours"


def test_with_our_log_gone_a_log_held_through_another_existing_projects_path_is_that_projects(project, table, tmp_path):
    (tmp_path / "other/.xprocess/srv").mkdir(parents=True)
    project.info.logpath.unlink()  # (.xprocess lost but its state)
    out = {1: (str(tmp_path / "other/.xprocess/srv/xprocess.log"), project.log, ME)}
    table(server(project, out=out))
    assert owned(project, state(project)) == _COPIED


@pytest.mark.parametrize(
    "case, expected",
    [
        ("moved, its marker hidden", "ours"),
        ("moved, its marker shown", "ours"),
        ("moved, another marker shown", _COPIED),
        ("copied: the original is still there", _COPIED),
        ("the token's key is another directory's", _COPIED),
        ("the log of another name", _COPIED),
        ("a log outside a .xprocess", _COPIED),
        ("a project at /, which is always there", _COPIED),
    ],
)
def test_a_project_moved_to_another_file_system_is_told_by_its_removed_log_and_its_key(
    project, table, tmp_path, case, expected
):
    """``mv`` across file systems: the server holds the removed log of a project that is gone, and
    the state, copied with the project, holds the marker minted for the old path."""
    old = tmp_path / "old"
    if case.startswith("copied"):
        old.mkdir()
    name = "other" if case == "the log of another name" else "srv"
    statedir = str(old / ("elsewhere" if case == "a log outside a .xprocess" else ".xprocess"))
    if case.startswith("a project at /"):
        statedir = "/.xprocess"
    key = xprocess._key(str(tmp_path / "unrelated/.xprocess") if "key" in case else statedir, name)
    token = key + ":" + "0" * 16
    shown = {"moved, its marker shown": token, "moved, another marker shown": key + ":" + "1" * 16}.get(case, "")
    project.info.logpath.rename(tmp_path / "kept")  # this project's log is another file
    project.info.logpath.write_text("")
    out = {1: (f"{statedir}/{name}/xprocess.log (deleted)", project.log, ME)}
    table(server(project, out=out, marker=shown))
    assert owned(project, state(project, token=token)) == expected


# --- _find_ours: what runs under a name ---


def find(p: SimpleNamespace, st: xprocess._State | None, tree: bool = True) -> list[int]:
    found = xprocess._find_ours({"srv": xprocess._Recorded(p.info, st)}, tree)["srv"]
    return sorted(proc.pid - BASE for proc in found)


def test_descendants_and_session_members_are_found_strangers_are_not(project, table):
    table(
        server(project),
        row(BASE + 1, ppid=BASE, sid=BASE),  # a child, nothing of ours on it
        row(BASE + 2, ppid=BASE + 1, sid=BASE + 2),  # its child, in a session of its own
        row(BASE + 3, ppid=1, sid=BASE),  # adopted, still in the session
        row(BASE + 4, ppid=BASE + 3, sid=BASE + 4, out={1: ("/dev/null", None, ME)}),  # left the session
        row(BASE + 5, ppid=1, sid=BASE + 5),  # a same-user stranger, started after the server
        row(BASE + 6, ppid=BASE + 5, sid=BASE + 5, marker="f" * 16 + ":" + "0" * 16),  # another project's
    )
    assert find(project, state(project)) == [0, 1, 2, 3, 4]
    assert find(project, state(project), tree=False) == [0]


def test_an_adopted_grandchild_that_left_the_session_is_found_by_what_it_writes_to(project, table):
    table(
        server(project),
        row(BASE + 1, ppid=1, sid=BASE + 1, out={1: ("/dev/null", None, ME), 2: project.out[1]}),
        row(BASE + 2, ppid=1, sid=BASE + 2, out={1: ("/dev/null", None, ME), 2: ("/dev/null", None, ME)}),
    )
    assert find(project, state(project)) == [0, 1]  # the other shows nothing of ours: not taken


def test_a_zombie_is_never_among_what_is_found(project, table):
    table(server(project), row(BASE + 1, ppid=BASE, sid=BASE, zombie=True))
    assert find(project, state(project)) == [0]


def test_a_log_of_another_account_in_our_control_directory_is_no_evidence(project, table):
    theirs = {1: (project.out[1][0], project.log, ME + 1)}
    table(row(BASE + 1, out=theirs), row(BASE + 2, out=project.out))
    assert find(project, None) == [2]


@pytest.mark.parametrize("lists_children", [True, False], ids=["children listed", "a map of parents"])
def test_after_a_lost_state_what_writes_to_our_log_or_shows_our_marker_is_found_with_its_children(
    project, table, lists_children
):
    table(
        row(os.getpid(), ppid=BASE + 1, out=project.out, marker=project.token),  # never this process
        row(BASE + 11, marker=project.token, vanished=True),  # ended as it was looked at
        row(BASE + 8, marker=None),  # another account's: its environment unreadable
        row(BASE + 9, marker=project.info._marker_prefix + "not a start id"),
        row(
            BASE + 10,
            marker=project.token,
            out={1: (str(project.info.controldir.parent.parent / "app.log"), project.log, ME)},
        ),  # a log of its own, no project's
        row(BASE + 1, out=project.out),
        row(BASE + 2, ppid=BASE + 1, sid=BASE + 1, out=project.elsewhere),  # its child, output of its own
        row(BASE + 12, ppid=BASE + 2, sid=BASE + 12),  # and its grandchild
        row(BASE + 3, marker=project.token),  # found by its marker
        row(BASE + 4, ppid=BASE + 3, sid=BASE + 4, out=project.elsewhere),  # and its child
        row(BASE + 5, out=project.elsewhere),  # a stranger
        row(BASE + 6, ppid=BASE + 5, sid=BASE + 5),  # and its child
        row(BASE + 7, ppid=BASE + 4, sid=BASE + 4, thread_of=BASE + 4),  # a thread of the child
    ).lists_children = lists_children
    assert find(project, None) == [1, 2, 3, 4, 10, 12]


def test_a_marker_is_no_evidence_for_a_process_that_or_whose_kin_writes_to_another_projects_log(
    project, table, tmp_path
):
    renamed = {1: (str(tmp_path / "q/.xprocess/srv/xprocess.log"), project.log, ME)}
    table(
        row(BASE + 1, marker=project.token, out=renamed),  # the renamed project's server
        row(BASE + 2, ppid=BASE + 1, sid=BASE + 1, marker=project.token, out=project.elsewhere),  # its child
        row(BASE + 3, ppid=1, sid=BASE + 1, marker=project.token, out=project.elsewhere),  # adopted: its leader
        row(BASE + 4, marker=project.token, out=project.elsewhere),  # ours
    )
    assert find(project, None) == [4]


def test_a_process_older_than_the_recorded_start_is_not_taken_for_one_of_its_name(project, table):
    table(
        server(project),
        row(BASE + 1, ticks=400, marker=project.token),  # older than the recorded start
        row(BASE + 2, ticks=600, marker=project.token),
        row(BASE + 3, ticks=500, marker=project.token),  # started in the same tick
    )
    assert find(project, state(project)) == [0, 2, 3]


def test_the_start_of_a_recorded_process_that_stopped_still_bounds_what_is_taken_for_its_leftovers(project, table):
    table(row(BASE + 1, ticks=400, out=project.out), row(BASE + 2, ticks=500, out=project.out))
    assert find(project, state(project)) == [2]  # the recorded pid has no process: a start that stopped


def test_a_renamed_projects_old_key_is_searched_only_when_the_proven_process_carries_it(project, table):
    old_key = "e" * 16 + ":"
    table(server(project, marker=old_key + "0" * 16), row(BASE + 1, marker=old_key + "1" * 16))
    assert find(project, state(project, token=old_key + "0" * 16)) == [0, 1]
    table(server(project, marker=""), row(BASE + 1, marker=old_key + "1" * 16))
    assert find(project, state(project, token=old_key + "0" * 16)) == [0]


def test_of_two_names_each_takes_only_its_own_though_one_runs_in_the_others_session(project, table):
    other = xprocess.XProcessInfo(project.info.controldir.parent, "other")
    other.controldir.mkdir()
    other.logpath.write_text("")
    st = other.logpath.stat()
    other_out = {1: (other._kernel_dir + "/xprocess.log", (st.st_dev, st.st_ino), ME)}
    table(server(project), row(BASE + 1, ticks=500, sid=BASE, out=other_out))  # started from srv's session
    other_state = state(project, pid=BASE + 1, token=other._marker_prefix + "0" * 16, log=(st.st_dev, st.st_ino))
    targets = {"srv": xprocess._Recorded(project.info, state(project)), "other": xprocess._Recorded(other, other_state)}
    found = xprocess._find_ours(targets, True)
    assert {name: [p.pid - BASE for p in procs] for name, procs in found.items()} == {"srv": [0], "other": [1]}


# --- handed_out: which pids can be new since a mark ---


@pytest.mark.parametrize(
    "mark, last, forks, pid_max, new, old",
    [
        ((100, 5_000), 200, 5_050, 32_768, [101, 150, 200], [50, 100, 201, 30_000]),  # no wrap
        ((32_000, 5_000), 400, 5_900, 32_768, [32_001, 32_767, 300, 400], [31_999, 32_000, 401, 1_000]),  # wrapped
        ((100, 5_000), 200, 5_000 + 32_768, 32_768, [50, 100, 201], []),  # forks enough to wrap past it: all
        ((100, None), 200, 5_050, 32_768, [50, 100, 201], []),  # no fork count then: all
        (None, 200, 5_050, 32_768, [50, 100, 201], []),  # no mark: all
        ((100, 5_050), 200, 5_000, 32_768, [50, 100, 201], []),  # a count going back (another boot): all
        ((100, 5_000), 100, 5_000, 32_768, [], [50, 99, 100, 101]),  # nothing since
        ((100, 5_000), 200, 5_000 + 32_457, 32_768, [101, 200], [100, 201]),  # one fork short of a wrap
        ((100, 5_000), 200, 5_000 + 32_458, 32_768, [100, 201], []),  # enough for one: all
        ((100, 5_000), 200, None, 32_768, [50, 100, 201], []),  # no fork count now: all
        ((100, 5_000), 200, 5_050, None, [50, 100, 201], []),  # no pid_max: all
        ((100, 5_000), None, 5_050, 32_768, [50, 100, 201], []),  # no last pid now: all
    ],
)
def test_the_pids_handed_out_since_a_mark(table, mark, last, forks, pid_max, new, old):
    t = table(forks=forks, pid_max=pid_max)
    t.last = last
    is_new = t.handed_out([mark], 10)  # 10 pids in use: 32_768 - 300 - 10 to hand out before a wrap
    assert [pid for pid in new + old if is_new(pid)] == new


# --- pids_after: the pids a search or a stop reads (the few handed out since probed, or all listed) ---


@pytest.mark.parametrize(
    "marks, last, forks, found",
    [
        ([(BASE + 10, 9_990)], BASE + 14, 10_000, [11, 12, 14]),  # few since the mark: the processes among them
        ([(BASE + 12, 9_995), (BASE + 10, 9_990)], BASE + 14, 10_000, [11, 12, 14]),  # since the oldest mark
        ([(BASE + 10, 9_990)], BASE + 10, 10_000, []),  # none since
        ([(BASE + 10, 9_990)], BASE + 90, 10_000, [11, 12, 14, 15, 90]),  # more than are probed: listed, the same
        ([(BASE + 10, 9_990), None], BASE + 14, 10_000, [5, 10, 11, 12, 14, 15, 90]),  # a state with no mark: all
        ([(BASE + 10, 9_990)], BASE + 14, 9_990 + 4_194_304, [5, 10, 11, 12, 14, 15, 90]),  # forks enough to wrap: all
        ([(BASE + 10, None)], BASE + 14, 10_000, [5, 10, 11, 12, 14, 15, 90]),  # no fork count then: all
        ([(BASE + 10, 9_990)], BASE + 14, None, [5, 10, 11, 12, 14, 15, 90]),  # no fork count now: all
        ([], BASE + 14, 10_000, []),  # nothing asked
    ],
)
def test_the_pids_read_after_marks_are_every_process_handed_out_since(table, marks, last, forks, found):
    rows = [row(BASE + n, ticks=1_000) for n in (5, 10, 11, 12, 14, 15, 90)]  # 10: the mark's; 15, 90: before a wrap
    t = table(*rows, row(BASE + 13, ticks=1_000, thread_of=BASE + 11), forks=forks)  # a thread id: no process
    t.last = last
    assert sorted(pid - BASE for pid in t.pids_after(marks)) == found


# --- _forked: what a stop takes as forks of what it stops ---


def forked(stopping: list[int], existed: frozenset[int] = frozenset(), mark: object = (BASE + 10, 9_990)) -> list[int]:
    procs = [xprocess._OS.proc(pid) for pid in stopping]
    owner = {pid: "srv" for pid in stopping}
    born = xprocess._forked(mark, 1_000, existed, procs, owner)  # type: ignore[arg-type]
    return sorted(p.pid - BASE for p in born)


def test_a_child_or_an_adopted_session_member_born_during_the_stop_is_a_fork(table):
    table(
        row(BASE, ticks=500),
        row(BASE + 13, ticks=999, ppid=BASE, sid=BASE),  # born before the stop
        row(BASE + 11, ticks=1_000, ppid=BASE, sid=BASE + 11),  # its child
        row(BASE + 12, ticks=1_000, ppid=1, sid=BASE),  # adopted, in the session it leads
        row(BASE + 5, ticks=1_000, ppid=BASE, sid=BASE),  # a pid not handed out since the mark
        row(BASE + 14, ticks=1_000, ppid=1, sid=BASE + 14),  # a stranger
    )
    assert forked([BASE]) == [11, 12]


def test_each_round_of_a_stop_takes_the_forks_made_since_the_last_past_those_gone_or_taken(table):
    t = table(
        row(BASE, ticks=500),
        row(BASE + 11, ticks=1_000, ppid=BASE, vanished=True),  # ended between the listing and its read
        row(BASE + 12, ticks=1_000, ppid=BASE, sid=BASE),
        last=BASE + 12,
    )
    stopping, owner = [xprocess._OS.proc(BASE)], {BASE: "srv"}
    first = xprocess._forked((BASE + 10, 9_990), 1_000, frozenset(), stopping, owner)  # type: ignore[list-item]
    t.rows[BASE + 13] = row(BASE + 13, ticks=1_001, ppid=BASE + 12, sid=BASE)  # the fork's own child, later
    t.last = BASE + 13
    second = xprocess._forked((BASE + 10, 9_990), 1_000, frozenset(), stopping, owner)  # type: ignore[list-item]
    assert ([p.pid - BASE for p in first], [p.pid - BASE for p in second]) == ([12], [13])
    assert owner == {BASE: "srv", BASE + 12: "srv", BASE + 13: "srv"}


def test_a_parent_or_leader_pid_held_by_another_process_now_makes_no_fork(table):
    table(
        row(BASE + 11, ticks=1_000, ppid=1, sid=BASE + 11),  # a stranger given a stopped process's pid...
        row(BASE + 12, ticks=1_000, ppid=BASE + 11, sid=BASE + 11),  # ...and its child
    )
    stopping = [xprocess._Proc(BASE + 11, f"{xprocess._boot_id()}:500", 500, 1, BASE + 11, False)]
    owner = {BASE + 11: "srv"}
    assert xprocess._forked((BASE + 10, 9_990), 1_000, frozenset(), stopping, owner) == []


@pytest.mark.parametrize("leader_pid_new", [False, True])
def test_a_member_of_a_session_whose_leader_ended_is_a_fork_unless_that_pid_was_handed_out_again(table, leader_pid_new):
    leader = BASE + 11 if leader_pid_new else BASE
    table(row(BASE + 12, ticks=1_000, ppid=1, sid=leader), last=BASE + 12)
    stopping = [xprocess._Proc(leader, f"{xprocess._boot_id()}:500", 500, 1, leader, False)]
    born = xprocess._forked((BASE + 10, 9_990), 1_000, frozenset(), stopping, {leader: "srv"})
    assert [p.pid for p in born] == ([] if leader_pid_new else [BASE + 12])


def test_without_a_mark_the_pids_there_were_when_the_stop_began_are_no_forks(table):
    table(row(BASE, ticks=500), row(BASE + 1, ticks=1_000, ppid=BASE), row(BASE + 2, ticks=1_000, ppid=BASE))
    assert forked([BASE], existed=frozenset({BASE, BASE + 1}), mark=None) == [2]


def test_a_session_led_by_no_process_being_stopped_brings_no_forks(table):
    table(row(BASE, ticks=500, sid=BASE - 1), row(BASE + 11, ticks=1_000, ppid=1, sid=BASE - 1))
    assert forked([BASE]) == []


def test_what_a_fork_forks_is_a_fork_and_each_is_added_to_what_is_stopped(table):
    table(
        row(BASE, ticks=500),
        row(BASE + 11, ticks=1_000, ppid=BASE, sid=BASE + 11),  # found by the last look
        row(BASE + 12, ticks=1_000, ppid=BASE + 11, sid=BASE + 11),  # its child: a pid handed out since
    )
    stopping = [xprocess._OS.proc(BASE), xprocess._OS.proc(BASE + 11)]
    owner = {BASE: "srv", BASE + 11: "srv"}
    born = xprocess._forked((BASE + 10, 9_990), 1_000, frozenset(), stopping, owner)  # type: ignore[arg-type]
    assert [p.pid for p in born] == [BASE + 12]
    assert [p.pid for p in stopping] == [BASE, BASE + 11, BASE + 12] and owner[BASE + 12] == "srv"


def test_the_kernel_lists_the_children_of_a_process_but_the_exempt(tmp_path):
    """The one real reader here (Linux): what the sweep after a lost state walks down by."""
    if not xprocess._ProcFS().lists_children:
        pytest.skip("this kernel lists no children (/proc/<pid>/task/<tid>/children)")
    import subprocess

    os_ = xprocess._ProcFS()
    child = subprocess.Popen(["sleep", "60"])
    try:
        assert child.pid in [p.pid for p in os_.children(os.getpid(), frozenset())]
        assert child.pid not in [p.pid for p in os_.children(os.getpid(), frozenset({child.pid}))]
        assert all(p.ppid == os.getpid() for p in os_.children(os.getpid(), frozenset()))
        assert os_.children(child.pid, frozenset()) == []
    finally:
        child.kill()
        child.wait()
    assert os_.children(child.pid, frozenset()) == []  # no such process
