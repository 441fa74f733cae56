"""Re-run the mutation check: each mutation below is applied to a copy of xprocess.py, and the
test named beside it must fail on that copy (it passes on the real one).

    python tests/mutate.py            # all of them; exit status 1 if one survives
    python tests/mutate.py -k flags   # only those whose description or test contains "flags"

The list holds the audits of issues 13, 20, 26 and 32 (the mutations no test caught then) and
decisions of issue 30, kept so they can be rerun, two at a time. Those of the functions
tests/mutants.py mutates are left to it: the table-driven tests catch each of them (issue 27). The mutated copy is what the test
imports, and what every Python it starts imports too (child pytest runs, pid namespace scripts):
its directory comes first on their PYTHONPATH.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# (what the mutation does, text replaced, replacement, the test that must catch it)
MUTATIONS = [
    (
        "issue 29: a lock file linked into a copy of the project (cp -al) stays shared with it",
        "                if st.st_nlink == 1 and (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino):\n",
        "                if True:\n",
        "tests/test_unattended.py::test_a_hard_link_copy_of_a_project_gets_an_idle_keeper_of_its_own",
    ),
    (
        "issue 29: the watchdog is not told the names through its pipe",
        "        if self._watchdog is not None and info.name not in self._told:\n",
        "        if False:\n",
        "tests/test_unattended.py::test_a_session_that_removed_its_state_directory_and_was_killed_still_has_its_server_stopped",
    ),
    (
        "issue 29: any pytest a member record names counts as a member of the killed session",
        "                if alive and _OS.cmdline(record[\"pid\"]).endswith(_XDIST_WORKER):  # (anything else is no member)\n",
        "                if alive:\n",
        "tests/test_unattended.py::test_a_member_record_naming_another_session_overrides_nothing",
    ),
    (
        "issue 29: the watchdog of --xstop is never armed",
        "        xp._session.arm()  # before any ensure()",
        "        pass  # before any ensure()",
        "tests/test_unattended.py::test_however_pytest_is_signalled_in_stop_mode_its_server_is_stopped[SIGKILL]",
    ),
    (
        "issue 29: the watchdog overrides the leases of other sessions too",
        "    return bool(holders) and holders <= set(members)\n",
        "    return True\n",
        "tests/test_unattended.py::test_a_server_another_session_holds_outlives_a_killed_stop_mode_session",
    ),
    (
        "issue 29: SIGTERM is left to kill pytest",
        "                    self._handlers[sig] = signal.signal(sig, _interrupt)\n",
        "                    pass\n",
        "tests/test_unattended.py::test_however_pytest_is_signalled_in_stop_mode_its_server_is_stopped[SIGTERM]",
    ),
    (
        "issue 29: the watchdog stops only once, while the workers of its session may start it again",
        "        if not members or deadline.expired():\n            break\n",
        "        break\n",
        "tests/test_unattended.py::test_the_watchdog_stops_again_what_a_worker_of_the_killed_session_started_since",
    ),
    (
        "issue 29: the idle keeper is never started",
        "            keeper = _arm_idle_keeper(self.statedir)\n",
        "            keeper = None\n",
        "tests/test_unattended.py::test_a_process_no_session_holds_stops_after_its_idle_timeout",
    ),
    (
        "issue 29: a holder the idle keeper saw end does not restart the idle time",
        "        state.released = now\n",
        "        pass\n",
        "tests/test_unattended.py::test_a_holder_killed_starts_the_idle_time_when_the_keeper_sees_it_gone",
    ),
    (
        "issue 29: an idle_timeout changed on reuse is not recorded",
        "                _write_state(info.statepath, state, {\"idle\": spec.idle})\n",
        "                pass\n",
        "tests/test_unattended.py::test_a_changed_idle_timeout_alone_restarts_nothing_and_applies_from_then_on",
    ),
    (
        "popen_kwargs dropped from Popen",
        "        **spec.popen_kwargs,\n",
        "",
        "tests/test_starter.py::test_popen_kwargs_reach_popen",
    ),
    (
        "kill_proc_tree ignored",
        "_find_ours({self.name: recorded}, kill_proc_tree)",
        "_find_ours({self.name: recorded}, True)",
        "tests/test_stopping.py::test_terminate_without_the_tree_leaves_the_children",
    ),
    (
        "env left out of the configuration",
        '            "env": self.env,\n',
        "",
        "tests/test_starter.py::test_a_changed_env_restarts",
    ),
    (
        "the lock wait never times out",
        "                if deadline.expired():\n                    raise StartupTimeoutError(\n                        f\"xprocess {info.name!r}: another session held",
        "                if False:\n                    raise StartupTimeoutError(\n                        f\"xprocess {info.name!r}: another session held",
        "tests/test_files.py::test_the_lock_wait_times_out_while_another_session_starts_it",
    ),
    (
        "a last line without newline not matched when the child exits",
        "if idle >= _PAUSE or exitcode is not None:",
        "if idle >= _PAUSE:",
        "tests/test_wait.py::test_a_last_line_without_newline_matches_when_the_child_exits",
    ),
    (
        "a child reaped elsewhere treated as still running",
        "return popen.poll() if popen.returncode is None else popen.returncode  # reaped elsewhere",
        "return None",
        "tests/test_wait.py::test_a_child_reaped_by_someone_else_is_an_exit_not_a_hang",
    ),
    (
        "the wait ignores its events and polls every 10 ms",
        "        if self._watch is None or self._pidfd is None:  # a write or an exit would go unnoticed\n"
        "            timeout = min(timeout, _POLL)",
        "        timeout = min(timeout, _POLL)",
        "tests/test_wait.py::test_the_wait_sleeps_on_events_not_on_a_timer",
    ),
    (
        "a finished wait's watch is never removed",
        "                self._libc.inotify_rm_watch(self._inotify, self._spent)",
        "                pass",
        "tests/test_wait.py::test_a_finished_watch_never_wakes_the_next_wait",
    ),
    (
        "an inner wait's watch outlives it",
        "                else:  # an inner watch: its server's writes would keep waking the outer wait\n"
        "                    self._libc.inotify_rm_watch(self._inotify, self._watch)",
        "                else:\n                    self._spent = self._watch",
        "tests/test_wait.py::test_a_finished_watch_never_wakes_the_next_wait",
    ),
    (
        "terminate() never returns -1",
        "(-1 if name in failed else 1 if procs else 0)",
        "(1 if procs else 0)",
        "tests/test_stopping.py::test_a_server_this_pytest_may_not_signal_is_reported_as_failed_to_terminate",
    ),
    # issue 20: behaviours no test pinned down
    (
        "a session that only reuses a server holds no lease on it",
        "        self._session.hold(info, proc.pid, state.log)\n",
        "",
        "tests/test_stopping.py::test_xstop_leaves_running_what_another_session_only_reuses",
    ),
    (
        "the lease wait of a restart takes the kill grace, not the starter's timeout",
        '    if deadline.expired():\n        raise XProcessError(\n            f"xprocess {name!r} was not restarted',
        '    if time.monotonic() >= deadline.at + TERMINATE_TIMEOUT:\n        raise XProcessError(\n            f"xprocess {name!r} was not restarted',
        "tests/test_stopping.py::test_a_restart_waits_for_the_lease_within_the_starters_timeout",
    ),
    (
        "the bytes cut from an overlong line left out of the offset",
        "self.offset += len(raw) + self._dropped",
        "self.offset += len(raw)",
        "tests/test_wait.py::test_logfile_after_an_overlong_line_is_right_after_the_ready_line",
    ),
    (
        "max_read_lines counts blank lines",
        "if spec.max_read_lines and line.strip():",
        "if spec.max_read_lines:",
        "tests/test_wait.py::test_max_read_lines_counts_only_non_blank_lines",
    ),
    (
        "terminate_on_interrupt ignored after an internal error",
        "(pytest.ExitCode.INTERRUPTED, pytest.ExitCode.INTERNAL_ERROR)",
        "(pytest.ExitCode.INTERRUPTED,)",
        "tests/test_plugin.py::test_terminate_on_interrupt_after_an_internal_error",
    ),
    (
        "a failed record of use in an xdist worker is silent",
        "if self.worker:  # the controller",
        "if False:  # the controller",
        "tests/test_session.py::test_a_worker_that_cannot_record_its_use_warns",
    ),
    (
        "the pattern's flags left out of the configuration",
        "pattern = (self.pattern.pattern, self.pattern.flags) if self.pattern else None",
        "pattern = self.pattern.pattern if self.pattern else None",
        "tests/test_starter.py::test_the_patterns_flags_are_part_of_the_configuration",
    ),
    (
        "a kept port with TIME_WAIT connections counts as taken",
        "        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n        try:\n            sock.bind",
        "        try:\n            sock.bind",
        "tests/test_starter.py::test_a_kept_port_with_connections_in_time_wait_is_kept",
    ),
    (
        "isrunning() counts a zombie",
        "return proc is not None and not (ignore_zombies and proc.zombie)",
        "return proc is not None",
        "tests/test_ownership.py::test_isrunning_ignores_a_zombie",
    ),
    (
        "--xshow calls a zombie LIVE",
        "state, running = recorded.state, recorded.running\n",
        "state, running = recorded.state, recorded.proc is not None\n",
        "tests/test_ownership.py::test_xshow_does_not_call_a_zombie_live",
    ),
    # issues 18 and 19: identity and hardening
    (
        "what a lost state left is stopped only after the starter ran",
        "                        stopped, left = self._stop(old)\n",
        "                        stopped, left = None, \"\"\n",
        "tests/test_ownership.py::test_what_a_lost_state_left_is_stopped_before_the_starter_runs",
    ),
    (
        "the lease of a process found by its log only (its control directory deleted) is not looked at",
        "            if file == ident or _control_dir_of(path) == recorded.info._kernel_dir:",
        "            if file == ident:",
        "tests/test_stopping.py::test_a_server_in_use_survives_its_control_directory_being_deleted",
    ),
    (
        "a restart that gives up drops this session's lease",
        "                        if _flock(own, shared=True):\n                            leases[name] = own",
        "                        if False:\n                            leases[name] = own",
        "tests/test_stopping.py::test_a_restart_that_gives_up_keeps_this_sessions_lease",
    ),
    (
        "the start gets a whole timeout of its own after the lock wait",
        "                    deadline.at += stopped  # the stop of the old process is not counted\n",
        "                    deadline.at = time.monotonic() + spec.timeout\n",
        "tests/test_wait.py::test_the_lock_wait_and_the_start_share_one_deadline",
    ),
    (
        "directories made with the umask's mode",
        "                os.mkdir(path, 0o700)",
        "                os.mkdir(path)",
        "tests/test_files.py::test_dirs_are_0700_and_files_0600_whatever_the_umask",
    ),
    (
        "a directory others may write to is used",
        "    elif st.st_mode & 0o022:",
        "    elif False:",
        "tests/test_files.py::test_a_directory_others_may_write_to_is_refused",
    ),
    (
        "a directory of another account is used",
        "    elif st.st_uid != os.geteuid():",
        "    elif False:",
        "tests/test_files.py::test_a_directory_of_another_account_is_refused_saying_whose",
    ),
    (
        "a FIFO as the lock is used",
        '    elif not stat.S_ISREG(st.st_mode):\n        problem = "it is not a regular file"',
        '    elif False:\n        problem = "it is not a regular file"',
        "tests/test_files.py::test_a_fifo_in_the_control_directory_never_hangs_a_start",
    ),
    (
        "a function in popen_kwargs fingerprinted by its repr (an address)",
        '    if callable(value) and hasattr(value, "__qualname__"):',
        "    if False:",
        "tests/test_starter.py::test_a_function_in_popen_kwargs_does_not_restart_every_run",
    ),
    (
        "a missing .gitignore is not written again",
        "        if blank:",
        "        if False:",
        "tests/test_files.py::test_a_removed_gitignore_comes_back",
    ),
    (
        "popen_kwargs values not checked before the running process is stopped",
        "        _check_popen_value(where, key, value)\n",
        "        pass\n",
        "tests/test_starter.py::test_bad_starter_values_stop_nothing",
    ),
    (
        "an unknown user name taken for a known one",
        "        return isinstance(one, str) and bool(lookup(one))\n    except KeyError:\n        return False",
        "        return isinstance(one, str)\n    except KeyError:\n        return False",
        "tests/test_starter.py::test_bad_starter_values_stop_nothing",
    ),
    (
        "a NUL byte in args left for Popen to refuse after the stop",
        '    if any("\\0" in arg for arg in argv):',
        "    if False:",
        "tests/test_starter.py::test_bad_starter_values_stop_nothing",
    ),
    (
        "what Popen refuses once it runs left as its bare traceback",
        "                except (TypeError, ValueError, LookupError, subprocess.SubprocessError) as exc:",
        "                except () as exc:",
        "tests/test_starter.py::test_what_popen_refuses_once_it_runs_is_the_plugins_error",
    ),
    (
        "terminate() keeps this session's lease on what it stops",
        "        info._before_stop = self._session.let_go",
        "        info._before_stop = self._session.unwatch",
        "tests/test_session.py::test_a_server_per_test_under_its_own_name_keeps_no_descriptor",
    ),
    (
        "a kept file that cannot be opened for want of descriptors read as missing or bad",
        "    except OSError as exc:\n        _raise_if_scarce(exc)\n        raise\n    st = os.fstat(fd)",
        "    except OSError as exc:\n        raise\n    st = os.fstat(fd)",
        "tests/test_ensure.py::test_at_the_descriptor_limit_a_running_server_is_neither_restarted_nor_orphaned",
    ),
    (
        "/proc unreadable for want of descriptors read as no such process",
        "    except OSError as exc:\n        _raise_if_scarce(exc)\n        return None\n    try:\n        chunks",
        "    except OSError as exc:\n        return None\n    try:\n        chunks",
        "tests/test_ensure.py::test_at_the_descriptor_limit_a_running_server_is_neither_restarted_nor_orphaned",
    ),
    (
        "a spawn out of descriptors left as a bare OSError",
        "                except OSError as exc:\n                    _raise_if_scarce(exc)\n                    raise\n",
        "",
        "tests/test_ensure.py::test_at_the_descriptor_limit_a_running_server_is_neither_restarted_nor_orphaned",
    ),
    (
        "no hint for a server run as a user who may not enter its directory",
        '    if uid not in (None, 0, os.geteuid()) and "cwd" not in spec.popen_kwargs:',
        "    if False:",
        "tests/integration/test_identity.py::test_a_server_run_as_another_user_that_cannot_enter_its_directory_gets_a_hint",
    ),
    (
        "a startup_check passing after the process exited taken for its readiness",
        "                exitcode = _exit_status(popen) if spec.check is not None else None",
        "                exitcode = None",
        "tests/test_wait.py::test_a_daemonizing_server_whose_check_passes_is_a_failed_start_naming_the_daemon",
    ),
    (
        "the lease of a crashed process not moved to the one started again",
        "        self.follow()\n",
        "",
        "tests/test_session.py::test_after_a_crash_the_lease_follows_the_server_started_again",
    ),
    (
        "the recorded log's leases ignored once its server writes elsewhere",
        "{ident: [os.fspath(recorded.info.logpath)]} if ident and procs else {}",
        "{}",
        "tests/test_stopping.py::test_a_server_that_moves_its_output_to_a_log_of_its_own_is_still_leased",
    ),
    (
        "what a process forks while it is stopped left running",
        "                born = _forked(mark, began, existed, everything, owner)",
        "                born = []",
        "tests/test_ownership.py::test_what_a_server_forks_while_it_is_stopped_is_stopped_too",
    ),
    (
        "an empty .gitignore (a full disk's) is kept",
        "os.lstat(ignore).st_size == 0",
        "False",
        "tests/test_files.py::test_a_first_start_on_a_full_disk_leaves_a_gitignore_that_works_once_space_is_back",
    ),
    (
        ".gitignore written in place (a full disk leaves it empty)",
        '            _write_private(ignore, b"*\\n")',
        '            _write_private(ignore, b"*\\n", "create")',
        "tests/test_files.py::test_a_first_start_on_a_full_disk_leaves_a_gitignore_that_works_once_space_is_back",
    ),
    (
        "a nested wait leaves its pidfd registered",
        "            if self._pidfd is not None:\n                self._poll.unregister(self._pidfd)\n                os.close(self._pidfd)\n            self._watch, self._pidfd = outer",
        "            self._watch, self._pidfd = outer",
        "tests/test_wait.py::test_a_nested_ensure_leaves_the_outer_wait_and_later_waits_evented",
    ),
    (
        "a holder's command line printed raw",
        'return _escape(data.decode("utf-8", "replace"))',
        'return data.decode("utf-8", "replace")',
        "tests/test_stopping.py::test_a_holders_command_line_reaches_the_terminal_escaped",
    ),
    (
        "a stopped (SIGSTOP) process reused",
        "    if old.proc is not None and old.proc.stopped:\n        return _SIGSTOPPED",
        "    if False:\n        return _SIGSTOPPED",
        "tests/test_stopping.py::test_a_stopped_process_is_never_reused_and_is_stopped_for_good",
    ),
    (
        "a stopped process not continued after its SIGTERM",
        "                    if sig == signal.SIGTERM and proc.stopped:",
        "                    if False:",
        "tests/test_stopping.py::test_a_stopped_process_is_never_reused_and_is_stopped_for_good",
    ),
    # the rest of the module's decisions
    (
        "a name starting with '.' escapes the check (.., .hidden)",
        'raw[:1] in (b".", b"-")',
        'raw[:1] in (b"-",)',
        "tests/test_starter.py::test_bad_names",
    ),
    (
        "a state writable by others is trusted",
        "if st.st_uid != os.geteuid() or st.st_mode & 0o022:",
        "if st.st_uid != os.geteuid():",
        "tests/test_ownership.py::test_a_state_written_by_another_user_is_not_trusted",
    ),
    (
        "a required process that is not running is taken as running",
        "        if not recorded.running or recorded.state is None:",
        "        if recorded.state is None:",
        "tests/test_starter.py::test_a_required_process_that_is_not_running_is_an_error",
    ),
    (
        "no hint for a server that went into the background",
        "    if exitcode == 0:\n        hints.append(",
        "    if False:\n        hints.append(",
        "tests/test_wait.py::test_exit_code_0_before_ready_hints_at_a_daemon",
    ),
    (
        "--xforget removes the records of a running process",
        "            if alive:\n                pids = ",
        "            if False:\n                pids = ",
        "tests/test_plugin.py::test_xforget_removes_dead_records_only",
    ),
    (
        "a crash is not noticed (the watch's poll ignored)",
        "        gone = [self._names[fd] for fd, _ in self._poll.poll(0)]",
        "        gone = []",
        "tests/test_session.py::test_a_segfault_is_reported_on_the_test_during_which_it_happened",
    ),
    (
        "a failed start reads like a started one in the summary",
        '        return f"FAILED to start: {why}"',
        '        return "started"',
        "tests/test_session.py::test_a_start_failing_says_why",
    ),
    # issue 25: the decisions the redesign merged into one place
    (
        "merge: a start lock of another account is used",
        "                fd = _open_checked(path, os.O_RDONLY | os.O_CREAT, owned=True)",
        "                fd = _open_checked(path, os.O_RDONLY | os.O_CREAT)",
        "tests/test_files.py::test_a_lock_file_of_another_account_is_refused",
    ),
    (
        "merge: an unproven state narrows the search for what runs under a name",
        "        return self.state if self.proc is not None or self.why == _STOPPED else None",
        "        return self.state",
        "tests/test_ownership.py::test_a_thread_of_our_own_server_is_not_taken_for_a_process",
    ),
    (
        "a recorded pid holding another start taken to narrow the search like a start that stopped",
        "        return self.state if self.proc is not None or self.why == _STOPPED else None",
        "        return self.state if self.proc is not None or self.why in (_STOPPED, _RECYCLED) else None",
        "tests/test_ownership.py::test_a_restart_stops_a_process_of_ours_at_the_recorded_pid_with_another_start",
    ),
    (
        "merge: the session-end stop ignores the start lock of a session starting it",
        "                if policy != _FOR_START:\n                    _lock_now(recorded.info, held)\n",
        "",
        "tests/test_stopping.py::test_xstop_leaves_running_what_another_session_is_starting",
    ),
    (
        "merge: --xkill names no holder",
        '                holders = "; ".join(_describe_holders(ident) for ident in logs if _OS.lock_holders(ident))',
        '                holders = ""',
        "tests/test_stopping.py::test_xshow_and_xkill_name_the_holder",
    ),
    (
        "merge: restart=True reuses a running process",
        "    if restart:\n        return _RESTART_ASKED\n",
        "",
        "tests/test_ensure.py::test_restart_true_restarts",
    ),
    (
        "issue 32: the session file read up to 1 MiB only",
        "lines = f.read().decode(",
        "lines = f.read(1024 * 1024).decode(",
        "tests/test_session.py::test_a_long_session_still_stops_and_reports_a_name_first_used_late",
    ),
    (
        "issue 32: a repeated reuse recorded again",
        "        if self._last.get(info.name) == record:",
        "        if False:",
        "tests/test_session.py::test_a_long_session_still_stops_and_reports_a_name_first_used_late",
    ),
    (
        "issue 32: a NaN deadline accepted (never ends)",
        "        if seconds != seconds:",
        "        if False:",
        "tests/test_stopping.py::test_a_nan_deadline_is_refused_wherever_it_comes_from",
    ),
    (
        "issue 32: terminate() takes a NaN timeout",
        " or timeout != timeout:",
        ":",
        "tests/test_stopping.py::test_a_bad_terminate_timeout_is_a_clear_error_and_signals_nothing",
    ),
    (
        "issue 26: a renamed log no longer names its control directory",
        '    return path.rpartition("/")[0] or None',
        '    return path.rpartition("/")[0] if path.endswith("xprocess.log") else None',
        "tests/test_ownership.py::test_a_renamed_log_still_proves_its_server",
    ),
    (
        "issue 26: the commands follow a state directory ensure() refuses",
        "    with contextlib.suppress(FileNotFoundError):\n        _check_private_dir(xp.statedir)\n",
        "",
        "tests/test_plugin.py::test_the_commands_refuse_a_state_directory_that_ensure_refuses",
    ),
    (
        "issue 26: a named control directory followed through a link",
        " or i.controldir.is_symlink()]",
        "]",
        "tests/test_plugin.py::test_a_named_control_directory_that_is_a_link_is_not_followed",
    ),
    (
        "issue 26: a recorded log of any int (an OverflowError in --xshow)",
        "type(n) is int and 0 <= n < 2**64 for n",
        "type(n) is int for n",
        "tests/test_record.py::test_bad_state_for_one_name_is_a_warning_and_the_others_are_handled",
    ),
    (
        "issue 26: the state reader takes 1 MiB (a long ready line's record cut off)",
        "_MAX_STATE = 32 * 1024 * 1024",
        "_MAX_STATE = 1024 * 1024",
        "tests/test_record.py::test_a_ready_line_of_the_longest_kind_is_reused",
    ),
    (
        "issue 26: a state file of any size read (its first 32 MiB)",
        "            elif st.st_size > _MAX_STATE:",
        "            elif False:",
        "tests/test_record.py::test_a_state_bigger_than_any_xprocess_writes_is_not_trusted",
    ),
    # issue 30: ports outside the ephemeral range, never two names' at once
    (
        "issue 30: a new port chosen anywhere above 1024, the ephemeral range too",
        "    low, high = max(low, 1025), min(max(high, low - 1), 65535)\n",
        "    low, high = 65536, 65535\n",
        "tests/test_starter.py::test_a_chosen_port_is_outside_the_ephemeral_range",
    ),
    (
        "issue 30: the ports other names keep are not looked at",
        "        if port not in taken and port not in _DEV_PORTS",
        "        if port not in _DEV_PORTS",
        "tests/test_starter.py::test_a_port_kept_by_another_name_is_not_given_even_when_it_is_not_running",
    ),
    (
        "issue 30: no project lock while a name chooses its port",
        "    with _port_claim(control_dir.parent):",
        "    with contextlib.nullcontext():",
        "tests/test_starter.py::test_a_name_choosing_its_port_waits_for_another_names_choice",
    ),
    # issue 30: --xshow --xjson, --xkill --xjson
    (
        "issue 30: the names after --xjson are dropped",
        " if names is not None) + (as_json or [])",
        " if names is not None)",
        "tests/test_plugin.py::test_names_may_follow_xjson",
    ),
    (
        "issue 30: --xjson's messages on stdout, beside the document",
        "    messages = sys.stderr if as_json is not None else sys.stdout",
        "    messages = sys.stdout",
        "tests/test_plugin.py::test_xjson_with_nothing_recorded_is_an_empty_document_the_words_on_stderr",
    ),
    # issue 30: source-aware restarts
    (
        "issue 30: config_files walks enter __pycache__",
        '_SKIPPED_DIRS = frozenset({"__pycache__", STATE_DIR})',
        "_SKIPPED_DIRS = frozenset({STATE_DIR})",
        "tests/test_starter.py::test_a_tree_leaves_out_pycache_and_hidden_directories",
    ),
    (
        "issue 30: a config tree's stamp leaves out its directories (a file added to one goes unseen)",
        "        stats = [st for _, st in dirs if st is not None] + [st for _, _, st in files]\n"
        "        stamp = _stamp(stats) if fresh else None  # (one string of the paths: a quarter of the JSON's cost)\n"
        '        self.stamps[given] = [stamp, digest, "\\n".join([*(d for d, _ in dirs), *entries])]\n',
        "        stamp = _stamp([st for _, _, st in files]) if fresh else None\n"
        '        self.stamps[given] = [stamp, digest, "\\n".join(entries)]\n',
        "tests/test_starter.py::test_a_tree_restarts_on_an_added_a_removed_and_an_edited_file_not_on_a_touch",
    ),
]


def caught(source: str, old: str, new: str, test: str) -> tuple[bool, str]:
    """Whether ``test`` fails on xprocess.py with ``old`` replaced by ``new`` (and its output)."""
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "xprocess.py").write_text(source.replace(old, new))
        # the mutated copy is imported as xprocess before pytest loads it as a plugin (an
        # editable install's finder would win over PYTHONPATH)
        run = (
            "import importlib.util, sys\n"
            f"spec = importlib.util.spec_from_file_location('xprocess', {str(Path(tmp) / 'xprocess.py')!r})\n"
            "module = sys.modules['xprocess'] = importlib.util.module_from_spec(spec)\n"
            "spec.loader.exec_module(module)\n"
            "import pytest\n"
            f"sys.exit(pytest.main(['-p', 'no:cacheprovider', '-q', '--timeout=60', *{test.split()!r}]))\n"
        )
        # the Pythons the test starts (pytest in a pytester project, a pid namespace's script)
        # run outside ROOT: with the copy first on their path, they import it too
        path = os.pathsep.join(filter(None, [tmp, os.environ.get("PYTHONPATH", "")]))
        env = {**os.environ, "PYTHONPATH": path}
        done = subprocess.run([sys.executable, "-c", run], cwd=ROOT, capture_output=True, text=True, env=env)
    return done.returncode != 0, done.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "-k", metavar="TEXT", default="", help="only the mutations whose description or test contains TEXT"
    )
    chosen = [m for m in MUTATIONS if parser.parse_args(argv).k in m[0] + " " + m[3]]
    if not chosen:
        print("no mutation matches")
        return 1
    source = (ROOT / "xprocess.py").read_text()
    # the baseline: every test must pass, or a "caught" means nothing
    broken, output = caught(source, "", "", " ".join(dict.fromkeys(t for m in chosen for t in m[3].split())))
    print(f"{'BROKEN  ' if broken else 'baseline'} none (the tests pass on the real module)")
    if broken:
        print(output[-3000:])
        return 1
    stale = [m for m in chosen if source.count(m[1]) != 1]
    for what, *_ in stale:
        print(f"STALE   {what}: the text to replace is not in xprocess.py once")
    chosen = [m for m in chosen if m not in stale]
    # two at a time, as the suite runs under xdist: each waits on the processes its test starts
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        results = pool.map(lambda m: caught(source, m[1], m[2], m[3])[0], chosen)
        survived = [m[0] for m in stale]
        for (what, _, _, test), found in zip(chosen, results):
            print(f"{'caught ' if found else 'SURVIVED'} {what}  ({test})", flush=True)
            if not found:
                survived.append(what)
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
