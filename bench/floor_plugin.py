"""The start-up floor: a plugin with xprocess's hooks, options and fixture and empty bodies.

bench.py loads it with ``-p floor_plugin -p no:xprocess`` (pytest rewrites a ``-p`` plugin as it
does an entry-point one), so the start-up row can say how much of the cost any plugin registering
these hooks pays, and how much is this module's own.
"""

from __future__ import annotations

from typing import Any, Iterator

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("xprocess", "managing external processes across test runs")
    group.addoption("--xshow", nargs="*", metavar="NAME", help="-")
    group.addoption("--xkill", nargs="*", metavar="NAME", help="-")
    group.addoption("--xstop", action="store_true", dest="xprocess_stop", default=None, help="-")
    group.addoption("--no-xstop", action="store_false", dest="xprocess_stop", help="-")
    parser.addini("xprocess_stop", "-", type="bool", default=False)


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> int | None:
    return None


def pytest_configure(config: pytest.Config) -> None:
    pass


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    pass


@pytest.fixture(scope="session")
def xprocess(pytestconfig: pytest.Config) -> Iterator[None]:
    yield None


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    pass


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    yield


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    pass


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    pass


def pytest_unconfigure(config: pytest.Config) -> None:
    pass
