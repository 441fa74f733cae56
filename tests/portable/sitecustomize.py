"""Hides Linux's inotify, pidfd and os.waitid from every Python that starts with this directory on
PYTHONPATH (tox -e portable), so that the whole suite runs xprocess's portable path, the one
macOS and other POSIX systems take, on Linux. The tests themselves do not know."""

import ctypes
import os
import signal

for name in ("waitid", "WNOWAIT", "pidfd_open"):
    if hasattr(os, name):
        delattr(os, name)
if hasattr(signal, "pidfd_send_signal"):
    del signal.pidfd_send_signal


class _WithoutInotify(ctypes.CDLL):
    def __getattr__(self, name: str) -> object:
        if name.startswith("inotify_"):
            raise AttributeError(name)
        return super().__getattr__(name)


ctypes.CDLL = _WithoutInotify  # type: ignore[misc]
