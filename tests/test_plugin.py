"""Section 12, the pytest glue and the command line through pytester: --xshow, --xkill,
--xforget, the stop switch, xdist, interrupts."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys

import pytest
from conftest import (
    SLEEPER,
    alive,
    conftest_source,
    recorded_pid,
    run_until_waiting,
    sleeper_project,
    starter,
)

import xprocess
from xprocess import XProcess, XProcessInfo, _show


def test_xshow_escapes_what_the_terminal_cannot_print(pytester_xp, monkeypatch):
    pytester_xp.makeconftest(conftest_source(None, names=("café",), code="# café\n" + SLEEPER))
    pytester_xp.makepyfile("def test_a(café):\n    pass\n")
    assert pytester_xp.runpytest_subprocess().ret == 0
    monkeypatch.setenv("LC_ALL", "C")
    monkeypatch.setenv("PYTHONUTF8", "0")
    monkeypatch.setenv("PYTHONIOENCODING", "ascii")
    result = pytester_xp.runpytest_subprocess("--xshow")
    assert result.ret == 0, result.stderr.str()
    # the name as this locale decodes the directory's bytes; the argument escaped
    result.stdout.fnmatch_lines(["NAME *STATUS *PID*", "caf* LIVE *", "    $ *# caf\\xe9\\nimport*"])
    header, row = result.stdout.lines[:2]
    assert row.index("LIVE") == header.index("STATUS")  # aligned as printed, escapes and all


def test_an_xdist_worker_dying_mid_start_under_xstop_leaves_nothing(pytester_xp):
    code = "import time; time.sleep(2); print('ready', flush=True); time.sleep(600)"
    dies = "def startup_check(self):\n    __import__('os')._exit(3)  # the worker dies while the server boots\n"
    pytester_xp.makeconftest(conftest_source(None, code=code, extra=dies))
    pytester_xp.makepyfile("def test_a(srv):\n    pass\n")
    result = pytester_xp.runpytest_subprocess("-n", "1", "--xstop")
    assert result.ret != 0
    info = XProcess(None, pytester_xp.path).getinfo("srv")
    assert info.pid is not None and not alive(info.pid)
    result.stdout.fnmatch_lines(["srv: its start did not finish*"])


def test_xshow_is_an_aligned_table_with_the_command_beneath(pytester_xp):
    long_arg = "x" * 300
    code = SLEEPER + " # " + long_arg
    pytester_xp.makeconftest(
        conftest_source(None, names=("srv", "other"), code=code).replace(
            "ensure('other'", "ensure('a-much-longer-name'"
        )
    )
    pytester_xp.makepyfile("def test_a(srv, other):\n    pass\n")
    pytester_xp.runpytest_subprocess().assert_outcomes(passed=1)
    show = pytester_xp.runpytest_subprocess("--xshow")
    assert show.ret == 0
    lines = show.stdout.lines
    header = next(line for line in lines if line.startswith("NAME"))
    assert header.split() == ["NAME", "STATUS", "PID", "PORT", "UPTIME", "USERS"]
    rows = [line for line in lines if line.startswith(("srv ", "a-much-longer-name "))]
    assert len(rows) == 2
    for row in rows:  # each cell starts under its heading
        for heading in ("STATUS", "PID", "UPTIME"):
            at = header.index(heading)
            assert row[at - 2 : at] == "  " and row[at] != " ", (header, row)
    assert re.match(r"a-much-longer-name +LIVE +\d+ +- +\d+s +-$", rows[0]), rows
    commands = [line for line in lines if line.startswith("    $ ")]
    assert len(commands) == 2 and all(len(c) <= 100 and c.endswith("...") and len(c) == 100 for c in commands), commands
    assert sum(line.startswith("    log: ") and line.endswith("xprocess.log") for line in lines) == 2
    named = pytester_xp.runpytest_subprocess("--xshow", "srv")  # issue 28, 12: asked for by name, it is whole
    whole = [line for line in named.stdout.lines if line.startswith("    $ ")]
    assert len(whole) == 1 and whole[0].endswith(long_arg + "'"), whole  # the shell-quoted code, to its end


def test_xshow_lists_no_name_that_never_recorded_a_start_but_shows_it_when_asked(pytester_xp):
    """Issue 28, 12: a name whose start never got as far as its state showed as a DEAD row."""
    (pytester_xp.path / ".xprocess" / "never").mkdir(parents=True, mode=0o700)
    os.chmod(pytester_xp.path / ".xprocess", 0o700)
    listed = pytester_xp.runpytest_subprocess("--xshow")
    assert listed.ret == 0
    assert listed.stdout.lines[-1].startswith("no processes recorded in "), listed.stdout.str()
    asked = pytester_xp.runpytest_subprocess("--xshow", "never")
    asked.stdout.fnmatch_lines(["never *DEAD *- *"])


def test_xshow_escapes_control_characters_in_commands(xp):
    # sh -c SCRIPT ARG0 ARG1: the arguments ride along, short enough to show whole
    xp.ensure("esc", starter("", args=["sh", "-c", "echo ready; exec sleep 600", "red \x1b[31m", "two\nlines"]))
    lines = _show([xp.getinfo("esc")], {})
    command = next(line for line in lines if line.startswith("    $ "))
    assert "\x1b" not in command and "\n" not in command
    assert "red \\x1b[31m" in command and "two\\nlines" in command


def test_xforget_removes_dead_records_only(pytester_xp):
    sleeper_project(pytester_xp).runpytest_subprocess().assert_outcomes(passed=1)
    pytester_xp.makeconftest(conftest_source(None, names=("srv", "bad"), code=SLEEPER))
    controldir = pytester_xp.path / ".xprocess"
    (controldir / "gone").mkdir()  # a record left by a failed start: no state, a log
    (controldir / "gone" / "xprocess.log").write_text("boom\n")
    pid = recorded_pid(pytester_xp)

    live = pytester_xp.runpytest_subprocess("--xforget", "srv")
    assert live.ret != 0
    live.stdout.fnmatch_lines([f"srv NOT FORGOTTEN: it is LIVE (pid {pid}); stop it first: pytest --xkill srv"])
    assert alive(pid) and (controldir / "srv").is_dir()

    every = pytester_xp.runpytest_subprocess("--xforget")
    assert every.ret == 0
    every.stdout.fnmatch_lines(["gone FORGOTTEN", f"srv KEPT: it is LIVE (pid {pid})"])
    assert not (controldir / "gone").exists() and (controldir / "srv").is_dir()

    pytester_xp.runpytest_subprocess("--xkill", "srv").stdout.fnmatch_lines([f"{pid} srv TERMINATED"])
    dead = pytester_xp.runpytest_subprocess("--xforget", "srv")
    assert dead.ret == 0
    dead.stdout.fnmatch_lines(["srv FORGOTTEN"])
    assert not (controldir / "srv").exists()
    show = pytester_xp.runpytest_subprocess("--xshow")
    show.stdout.fnmatch_lines(["no processes recorded in *"])


@pytest.mark.parametrize("command", ["--xshow", "--xkill", "--xforget"])
@pytest.mark.parametrize("planted", ["symlink", "other-user", "writable"])
def test_the_commands_refuse_a_state_directory_that_ensure_refuses(pytester_xp, tmp_path, command, planted):
    """Issue 26, case 3: a .xprocess that is a symbolic link (planted by another account in a shared
    sticky directory, say), another user's, or writable by others is refused by ensure(); the
    commands followed it: --xshow and --xkill to the processes it names, and --xforget, as root,
    removed the directories there. Now each refuses, saying why, and touches nothing."""
    if planted == "other-user" and os.geteuid() != 0:
        pytest.skip("giving a directory to another user needs root")
    with XProcess(None, tmp_path / "victim") as victim:
        pid = victim.ensure("srv", starter(SLEEPER))[0]
        victim.ensure("dead", starter(SLEEPER))
        victim.getinfo("dead").terminate()
        statedir = pytester_xp.path / ".xprocess"
        if planted == "symlink":
            statedir.symlink_to(victim.statedir)
        else:
            statedir.mkdir(mode=0o700)
            (statedir / "gone").mkdir(mode=0o700)
            if planted == "other-user":
                os.chown(statedir, 65534, 65534)
            else:
                statedir.chmod(0o777)
        try:
            result = pytester_xp.runpytest_subprocess(command)
            assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str()
            result.stderr.fnmatch_lines([f"xprocess: {statedir} * it is not safe to keep processes there. Remove it*"])
            assert alive(pid)
            assert (victim.statedir / "dead").is_dir()
            assert (statedir.resolve() / ("dead" if planted == "symlink" else "gone")).is_dir()
        finally:
            victim.getinfo("srv").terminate()


@pytest.mark.parametrize("command", ["--xshow", "--xkill", "--xforget"])
def test_a_named_control_directory_that_is_a_link_is_not_followed(pytester_xp, tmp_path, command):
    """As ensure() refuses it, a command given a name whose control directory is a symbolic link
    (to another project's) does not follow it: the name is not recorded here."""
    with XProcess(None, tmp_path / "victim") as victim:
        pid = victim.ensure("srv", starter(SLEEPER))[0]
        (pytester_xp.path / ".xprocess").mkdir(mode=0o700)
        (pytester_xp.path / ".xprocess" / "srv").symlink_to(victim.getinfo("srv").controldir)
        try:
            result = pytester_xp.runpytest_subprocess(command, "srv")
            assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str()
            result.stderr.fnmatch_lines(["xprocess: no process recorded as 'srv' in *"])
            assert alive(pid) and victim.getinfo("srv").controldir.is_dir()
        finally:
            victim.getinfo("srv").terminate()


@pytest.mark.parametrize("name", ["nope", "../up"])
def test_xforget_names_are_checked_as_for_xshow(pytester_xp, name):
    sleeper_project(pytester_xp).runpytest_subprocess().assert_outcomes(passed=1)
    result = pytester_xp.runpytest_subprocess("--xforget", name)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "Traceback" not in result.stderr.str()
    result.stderr.fnmatch_lines(["xprocess: *"])
    assert alive(recorded_pid(pytester_xp))


def test_first_run_starts_second_reuses(project):
    first = project.runpytest_subprocess()
    first.assert_outcomes(passed=1)
    first.stdout.fnmatch_lines(["*= xprocess =*", "srv: started in * s"])
    second = project.runpytest_subprocess()
    second.assert_outcomes(passed=1)
    second.stdout.fnmatch_lines(["xprocess: reused srv"])
    assert (project.path / "starts").read_text() == "x"


def test_works_without_the_cache_plugin_and_can_be_disabled(project):
    project.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)
    assert XProcessInfo(project.path / ".xprocess", "srv").isrunning()
    result = project.runpytest_subprocess("-p", "no:xprocess")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'xprocess' not found*"])


def test_xshow_and_xkill(project):
    project.runpytest_subprocess().assert_outcomes(passed=1)
    pid = recorded_pid(project)
    show = project.runpytest_subprocess("--xshow")
    assert show.ret == 0
    show.stdout.fnmatch_lines(
        ["NAME *STATUS *PID *", f"srv *LIVE *{pid} *", "    $ *", "    log: */.xprocess/srv/xprocess.log"]
    )
    assert "passed" not in show.stdout.str()  # no tests ran
    kill = project.runpytest_subprocess("--xkill", "srv")
    assert kill.ret == 0
    kill.stdout.fnmatch_lines([f"{pid} srv TERMINATED"])
    assert not alive(pid)
    project.runpytest_subprocess("--xshow", "srv").stdout.fnmatch_lines([f"srv *DEAD *{pid} *"])
    again = project.runpytest_subprocess("--xkill")
    assert again.ret == 0
    again.stdout.fnmatch_lines([f"{pid} srv NO PROCESS FOUND"])


@pytest.fixture
def live_and_dead(pytester_xp):
    """``live`` running, ``dead`` started then stopped; their pids."""
    pytester_xp.makeconftest(conftest_source(None, names=("live", "dead"), code=SLEEPER))
    pytester_xp.makepyfile("def test_a(live, dead):\n    pass\n")
    pytester_xp.runpytest_subprocess().assert_outcomes(passed=1)
    pids = {name: recorded_pid(pytester_xp, name) for name in ("live", "dead")}
    assert XProcessInfo(pytester_xp.path / ".xprocess", "dead").terminate() == 1
    return pytester_xp, pids


def json_of(result: pytest.RunResult) -> dict[str, object]:
    """The whole of stdout, which must be one JSON document and nothing else."""
    return json.loads("\n".join(result.outlines))  # type: ignore[no-any-return]


def test_xshow_xjson_is_one_document_of_the_tables_rows(live_and_dead):
    project, pids = live_and_dead
    show = project.runpytest_subprocess("--xshow", "--xjson")
    assert show.ret == 0
    document = json_of(show)
    assert document["version"] == 1
    live, dead = sorted(document["processes"], key=lambda p: p["name"] != "live")  # type: ignore[attr-defined]
    statedir = project.path / ".xprocess"
    assert live == {
        "name": "live", "status": "LIVE", "pid": pids["live"], "port": None, "uptime_s": live["uptime_s"],
        "command": [sys.executable, "-c", SLEEPER], "log": str(statedir / "live" / "xprocess.log"),
        "holders": [], "idle_stop_in_s": None, "idle_timeout_s": None, "lost_pids": [],
    }  # fmt: skip
    assert isinstance(live["uptime_s"], float) and live["uptime_s"] >= 0
    assert dead["status"] == "DEAD" and dead["pid"] == pids["dead"] and dead["uptime_s"] is None
    assert dead["command"] == live["command"] and dead["log"] == str(statedir / "dead" / "xprocess.log")
    table = project.runpytest_subprocess("--xshow")  # the same rows
    table.stdout.fnmatch_lines([f"dead *DEAD *{pids['dead']} *- *- *-", f"live *LIVE *{pids['live']} *- *"])


@pytest.mark.parametrize(
    "args",
    [("--xshow", "--xjson", "dead"), ("--xjson", "--xshow", "dead"), ("--xshow", "dead", "--xjson"),
     ("--xshow", "dead", "--xjson", "live")],
)  # fmt: skip
def test_names_may_follow_xjson(live_and_dead, args):
    project, _ = live_and_dead
    show = project.runpytest_subprocess(*args)
    assert show.ret == 0
    names = [p["name"] for p in json_of(show)["processes"]]  # type: ignore[attr-defined]
    assert names == sorted(name for name in ("dead", "live") if name in args)


def test_xkill_xjson_gives_each_result(live_and_dead):
    project, pids = live_and_dead
    kill = project.runpytest_subprocess("--xkill", "--xjson", "live", "dead")
    assert kill.ret == 0
    assert json_of(kill) == {
        "version": 1,
        "results": [
            {"name": "live", "pid": pids["live"], "result": "TERMINATED"},
            {"name": "dead", "pid": pids["dead"], "result": "NO PROCESS FOUND"},
        ],
    }
    assert not alive(pids["live"])


def test_xjson_with_nothing_recorded_is_an_empty_document_the_words_on_stderr(pytester_xp):
    for option, key in (("--xshow", "processes"), ("--xkill", "results")):
        result = pytester_xp.runpytest_subprocess(option, "--xjson")
        assert result.ret == 0
        assert json_of(result) == {"version": 1, key: []}
        result.stderr.fnmatch_lines(["no processes recorded in *.xprocess"])


@pytest.mark.parametrize("args", [("--xjson",), ("--xjson", "srv"), ("--xforget", "--xjson")])
def test_xjson_without_xshow_or_xkill_is_a_usage_error(project, args):
    result = project.runpytest_subprocess(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --xjson goes with --xshow or --xkill*"])
    assert result.outlines == []


@pytest.mark.skipif(not xprocess._PROC_FS, reason="a removed log is seen through /proc/<pid>/fd only (Linux)")
@pytest.mark.parametrize("named", [False, True])
def test_xshow_and_xkill_find_what_a_removed_state_directory_left(project, named):
    """Issue 28, 6: after ``git clean -xdf`` both said "no processes recorded" while the servers
    ran. They find them by their logs (held open, removed) as the next ensure() would."""
    project.runpytest_subprocess().assert_outcomes(passed=1)
    pid = recorded_pid(project)
    shutil.rmtree(project.path / ".xprocess")
    names = ("srv",) if named else ()
    show = project.runpytest_subprocess("--xshow", *names)
    assert show.ret == 0
    show.stdout.fnmatch_lines(
        [
            "NAME *STATUS *PID *",
            f"srv *LIVE *{pid} *",
            f"    its record is gone (*.xprocess/srv was removed); found by its log or marker: pid {pid}",
            "    stop it: pytest --xkill srv *",
        ]
    )
    assert alive(pid)
    [row] = json_of(project.runpytest_subprocess("--xshow", "--xjson", *names))["processes"]  # type: ignore[misc]
    assert (row["name"], row["status"], row["pid"], row["lost_pids"]) == ("srv", "LIVE", pid, [pid])
    kill = project.runpytest_subprocess("--xkill", *names)
    assert kill.ret == 0
    kill.stdout.fnmatch_lines([f"{pid} srv TERMINATED"])
    assert not alive(pid)
    again = project.runpytest_subprocess("--xshow", *names)
    if named:
        again.stderr.fnmatch_lines(["xprocess: no process recorded as 'srv' in *"])
    else:
        again.stdout.fnmatch_lines(["no processes recorded in *.xprocess"])


def test_what_another_projects_removed_state_left_is_not_listed_or_stopped(pytester_xp):
    """The logs looked for are this project's: another one, lost too, keeps its server."""
    other = pytester_xp.mkdir("other")
    (other / "pytest.ini").write_text("[pytest]\n")
    (other / "conftest.py").write_text(conftest_source(None))
    (other / "test_a.py").write_text("def test_a(srv):\n    pass\n")
    pytester_xp.makeconftest(conftest_source(None))
    pytester_xp.makepyfile("def test_a(srv):\n    pass\n")
    theirs = subprocess.run([sys.executable, "-m", "pytest", "-q"], cwd=other, capture_output=True, text=True)
    assert theirs.returncode == 0, theirs.stdout
    pid = XProcessInfo(other / ".xprocess", "srv").pid
    try:
        shutil.rmtree(other / ".xprocess")
        for option in ("--xshow", "--xkill"):
            result = pytester_xp.runpytest_subprocess(option)
            assert result.ret == 0
            result.stdout.fnmatch_lines(["no processes recorded in *.xprocess"])
            assert str(pid) not in result.stdout.str()
        assert alive(pid)
    finally:
        os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("xdist_worker", [False, True])
def test_a_wait_for_another_sessions_start_is_told_at_once_naming_it(pytester_xp, xdist_worker):
    """Issue 28, 9: a wait for another session was silent until its timeout ended. A holder that
    is an xdist worker is named by its controller's command (its own says only how execnet runs it)."""
    sleeper_project(pytester_xp, extra="timeout = 2")
    control = pytester_xp.path / ".xprocess" / "srv"
    code = (
        "import fcntl, os, sys, time\n"
        f"os.makedirs({str(control)!r}, mode=0o700)\n"
        f"fd = os.open({str(control / 'lock')!r}, os.O_RDONLY | os.O_CREAT, 0o600)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(600)\n"
    )
    boot = "import sys;exec(eval(sys.stdin.readline()))"  # how execnet starts a worker
    holder = subprocess.Popen(
        [sys.executable, "-c", boot if xdist_worker else code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        if xdist_worker:
            holder.stdin.write(repr(code) + "\n")
            holder.stdin.flush()
        assert holder.stdout.readline() == "held\n"
        result = pytester_xp.runpytest_subprocess()
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
        holder.stdin.close()
    result.assert_outcomes(errors=1)
    lines = result.stdout.lines
    told = [i for i, line in enumerate(lines) if line.startswith("xprocess: 'srv' is being started by ")]
    assert len(told) == 1, result.stdout.str()
    who = f"pid {holder.pid}: {sys.executable} -c "
    if xdist_worker:
        who = f"pid {holder.pid}: an xdist worker of pid {os.getpid()}: {xprocess._OS.cmdline(os.getpid())[:60]}"
    who = who if xprocess._PROC_FS else "another session"  # /proc/locks
    assert lines[told[0]].startswith(f"xprocess: 'srv' is being started by {who}")
    assert lines[told[0]].endswith(": waiting, at most the starter's timeout of 2 s")
    errors = [i for i, line in enumerate(lines) if "another session held" in line]
    assert errors and told[0] < errors[0]  # told before the error, not with it


def test_a_start_after_a_stop_on_purpose_is_a_start_and_after_a_lost_record_says_what_it_stopped(project):
    """Issue 28, 11: "restarted (it had stopped)" followed a deliberate --xkill or terminate(),
    and a start that first stopped what a removed record left said nothing of it."""
    project.runpytest_subprocess().stdout.fnmatch_lines(["srv: started in * s"])
    assert project.runpytest_subprocess("--xkill").ret == 0
    again = project.runpytest_subprocess()
    again.stdout.fnmatch_lines(["srv: started in * s"])
    assert "restarted" not in again.stdout.str()
    XProcessInfo(project.path / ".xprocess", "srv").terminate()
    project.runpytest_subprocess().stdout.fnmatch_lines(["srv: started in * s"])
    os.kill(recorded_pid(project), signal.SIGKILL)  # not on purpose: a crash between runs
    project.runpytest_subprocess().stdout.fnmatch_lines(["srv: restarted in * s (it had stopped)"])
    pid = recorded_pid(project)
    shutil.rmtree(project.path / ".xprocess")
    lost = project.runpytest_subprocess()
    said = "srv: restarted in * s (its record was gone: what it left running was found and stopped)"
    lost.stdout.fnmatch_lines([said])
    assert not alive(pid)


@pytest.mark.parametrize("options", [("--xshow",), ("--xkill",), ("--xshow", "--xjson"), ("--xkill", "--xjson")])
def test_unknown_name_is_an_error_not_a_traceback(project, options):
    """With --xjson as without: stdout stays empty (no document: a script reads the exit status)."""
    project.runpytest_subprocess().assert_outcomes(passed=1)
    result = project.runpytest_subprocess(*options, "nope")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["xprocess: no process recorded as 'nope' in *"])
    assert result.outlines == []
    assert "Traceback" not in result.stderr.str()
    assert alive(recorded_pid(project))


def test_xshow_with_nothing_recorded(pytester_xp):
    result = pytester_xp.runpytest_subprocess("--xshow")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["no processes recorded in *.xprocess"])


@pytest.mark.parametrize(
    "args, env, ini, stops",
    [
        ((), None, None, False),
        (("--xstop",), None, None, True),
        ((), "1", None, True),
        ((), None, "true", True),
        (("--no-xstop",), "1", None, False),
        ((), "0", "true", False),
    ],
)
def test_stop_switch_and_its_precedence(project, monkeypatch, args, env, ini, stops):
    if env is not None:
        monkeypatch.setenv("XPROCESS_STOP", env)
    if ini is not None:
        project.makeini(f"[pytest]\nxprocess_stop = {ini}\n")
    result = project.runpytest_subprocess(*args)
    result.assert_outcomes(passed=1)
    assert alive(recorded_pid(project)) is not stops
    if stops:
        result.stdout.fnmatch_lines(["srv: started in * s, terminated at end"])
    says = (
        "processes are stopped at the end of the session (the stop switch is on)"
        if stops
        else "processes keep running for the next run (--xstop stops them at the end)"
    )
    header = [line for line in result.stdout.lines if line.startswith("xprocess: ")]
    assert header == [f"xprocess: state in {project.path / '.xprocess'}; {says}"]


def test_the_header_says_where_the_state_is_and_why_when_pytest_found_no_config_file(pytester):
    """Issue 28, 5: without a config file the rootdir, so .xprocess, follows where pytest runs."""
    (pytester.path / "sub").mkdir()
    (pytester.path / "sub" / "test_a.py").write_text("def test_a():\n    pass\n")
    result = pytester.runpytest_subprocess("sub")
    result.assert_outcomes(passed=1)
    header = [line for line in result.stdout.lines if line.startswith("xprocess: ")]
    assert len(header) == 1 and header[0].startswith(f"xprocess: state in {pytester.path / '.xprocess'} ")
    assert "(pytest found no config file, so this depends on where it runs: add a pytest.ini at the root)" in header[0]
    assert not (pytester.path / ".xprocess").exists()  # nothing made by a run that ensured nothing


def test_bad_stop_environment_is_a_usage_error(project, monkeypatch):
    monkeypatch.setenv("XPROCESS_STOP", "maybe")
    result = project.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*XPROCESS_STOP='maybe'*"])


def sixteen_tests(pytester, names=("srv",)):
    body = "".join(
        f"def test_{i}({names[i % len(names)]}):\n    assert {names[i % len(names)]}[0] > 0\n\n" for i in range(16)
    )
    pytester.makepyfile(body)


def test_xdist_workers_start_one_server_once(pytester_xp):
    pytester_xp.makeconftest(conftest_source(pytester_xp.path / "starts"))
    sixteen_tests(pytester_xp)
    result = pytester_xp.runpytest_subprocess("-n", "4")
    result.assert_outcomes(passed=16)
    assert (pytester_xp.path / "starts").read_text() == "x"
    assert result.stdout.str().count("srv: started in") == 1  # the summary once, in the controller


def test_xdist_two_servers_each_start_once(pytester_xp):
    pytester_xp.makeconftest(conftest_source(pytester_xp.path / "starts", names=("one", "two")))
    sixteen_tests(pytester_xp, names=("one", "two"))
    pytester_xp.runpytest_subprocess("-n", "4").assert_outcomes(passed=16)
    assert (pytester_xp.path / "starts").read_text() == "xx"
    assert alive(recorded_pid(pytester_xp, "one")) and alive(recorded_pid(pytester_xp, "two"))


def test_xdist_stop_at_end_leaves_nothing_and_only_the_controller_stops(pytester_xp):
    pytester_xp.makeconftest(conftest_source(pytester_xp.path / "starts"))
    sixteen_tests(pytester_xp)
    result = pytester_xp.runpytest_subprocess("-n", "4", "--xstop")
    result.assert_outcomes(passed=16)  # no worker lost its server to another's teardown
    result.stdout.fnmatch_lines(["srv: started in * s, terminated at end"])
    assert not alive(recorded_pid(pytester_xp))
    assert (pytester_xp.path / "starts").read_text() == "x"


@pytest.mark.parametrize("xdist", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_terminate_on_interrupt(pytester_xp, xdist):
    pytester_xp.makeconftest(
        conftest_source(None, names=("flagged", "kept")).replace(
            "return xprocess.ensure('flagged', Starter)", "return xprocess.ensure('flagged', Flagged)"
        )
        + "\nclass Flagged(Starter):\n    terminate_on_interrupt = True\n"
    )
    pytester_xp.makepyfile("def test_a(flagged, kept):\n    raise KeyboardInterrupt\n")
    result = pytester_xp.runpytest_subprocess(*xdist)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    assert not alive(recorded_pid(pytester_xp, "flagged"))
    assert alive(recorded_pid(pytester_xp, "kept"))


def test_sigint_while_waiting_terminates_the_half_started_process(pytester_xp):
    run, pid = run_until_waiting(pytester_xp)
    run.send_signal(signal.SIGINT)
    out = run.communicate(timeout=60)[0]
    assert run.returncode == pytest.ExitCode.INTERRUPTED, out
    assert not alive(pid)


def test_sigkill_while_waiting_then_the_next_run_starts_afresh(pytester_xp):
    run, pid = run_until_waiting(pytester_xp)
    run.kill()
    run.communicate(timeout=60)
    assert alive(pid)  # its own session: it outlives the killed pytest
    pytester_xp.makeconftest(conftest_source(pytester_xp.path / "starts"))
    result = pytester_xp.runpytest_subprocess()
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["srv: restarted in * s (it never became ready)"])
    assert not alive(pid)


def test_a_run_that_never_ensures_needs_nothing_posix_only(pytester_xp):
    """As on Windows: no fcntl, termios, resource, pwd or grp, no O_NOFOLLOW, O_NONBLOCK or
    O_CLOEXEC; the plugin loads and the run passes."""
    pytester_xp.makepyfile("def test_a():\n    pass\n")
    code = (
        "import sys\n"
        "for name in ('fcntl', 'termios', 'resource', 'pwd', 'grp'):\n"
        "    sys.modules[name] = None  # importing it now raises ImportError\n"
        "import os\n"
        "for flag in ('O_NOFOLLOW', 'O_NONBLOCK', 'O_CLOEXEC'):\n"
        "    delattr(os, flag)\n"
        "import pytest\n"
        "sys.exit(pytest.main(['-p', 'xprocess', '-p', 'no:cacheprovider', '-q']))\n"
    )
    result = pytester_xp.run(sys.executable, "-c", code)
    assert result.ret == 0, result.stdout.str() + result.stderr.str()
    result.stdout.fnmatch_lines(["1 passed*"])


def test_ensure_on_windows_says_it_is_not_supported(tmp_path, monkeypatch):
    from xprocess import XProcess, XProcessError

    monkeypatch.setattr(sys, "platform", "win32")
    with XProcess(None, tmp_path) as xp, pytest.raises(XProcessError, match="Windows is not supported"):
        xp.ensure("srv", lambda cwd: ("ready", [sys.executable, "-c", "print('ready')"]))
    assert not (tmp_path / ".xprocess").exists()


def test_terminate_on_interrupt_after_an_internal_error(pytester_xp):
    """pytest ending with INTERNALERROR (a plugin's hook raised) stops what it would stop on Ctrl-C."""
    pytester_xp.makeconftest(
        conftest_source(None, names=("flagged", "kept")).replace(
            "return xprocess.ensure('flagged', Starter)", "return xprocess.ensure('flagged', Flagged)"
        )
        + "\nclass Flagged(Starter):\n    terminate_on_interrupt = True\n"
        + "\ndef pytest_runtest_logfinish(nodeid, location):\n    raise RuntimeError('a broken hook')\n"
    )
    pytester_xp.makepyfile("def test_a(flagged, kept):\n    pass\n")
    result = pytester_xp.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.INTERNAL_ERROR
    assert "INTERNALERROR" in result.stdout.str() + result.stderr.str() and "a broken hook" in result.stdout.str()
    assert not alive(recorded_pid(pytester_xp, "flagged"))
    assert alive(recorded_pid(pytester_xp, "kept"))
