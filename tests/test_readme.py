"""Every code block of README.rst, run: no snippet there can rot.

How a block is read (``readme_blocks``): a literal block (after ``::``) or a ``.. code-block::``
whose first line is ``# NAME.py`` (or ``.ini``/``.cfg``/``.toml``; under a directory too:
``# src/app.py``) is that file of the project of its section (the quick start, each recipe); a
block whose first line starts with ``$ `` is a shell session: ``$ command`` lines, each followed
by the output it shows. Any other block fails ``test_every_block_is_covered``, as does a command
or a project no test here runs.

- ``test_project``: each project's files in a fresh pytester project, run twice (the first run
  starts its servers, the second reuses the very same processes), then ``--xkill``.
- ``test_readme_output``: the quick start's shell sessions replayed, each ``pytest`` command's
  output matched against what the README shows (numbers, paths and column padding as wildcards).
  It reads the summary and ``--xshow`` formats of issue 21.
- ``test_install_commands``, ``test_scripts``: the install commands build what they say; the
  scripts named exist and parse.
- ``test_troubleshooting_messages_are_the_codes``: every message the Troubleshooting section
  quotes is made of text in xprocess.py's string literals (placeholders as wildcards).
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import terminate_all

from xprocess import XProcessInfo

ROOT = Path(__file__).parents[1]
README = ROOT / "README.rst"

FILE_RE = re.compile(r"# ((?:[\w.-]+/)*[\w.-]+\.(?:py|ini|cfg|toml))$")  # under a directory too (src/app.py)

# the projects of the README (section title -> the server program each needs, None: only Python)
PROJECTS: dict[str, str | None] = {
    "Quick start": None,
    "PostgreSQL": "postgres",
    "Redis": "redis-server",
    "nginx": "nginx",
    "memcached": "memcached",
    "Config files, processes that need others, and crashes": None,
    "An app restarted when its source changes": None,
}

# shell commands of the README outside the projects, and the test that checks each
INSTALL_COMMANDS = {
    "pip install .",
    "pip wheel --no-deps --wheel-dir dist .",
    "pip install dist/xprocess-0.3.0-py3-none-any.whl",
    'pip install "git+file://$PWD"',
    ".venv/bin/python -m pip install ../xprocess",
}
SCRIPT_COMMANDS = {"bash examples/run", "bash tests/run", "bash tests/run --all"}


@dataclass
class Block:
    line: int  # where it starts in README.rst (1-based)
    section: str  # the innermost section title above it
    text: str

    @property
    def filename(self) -> str | None:
        match = FILE_RE.match(self.text.split("\n", 1)[0])
        return match.group(1) if match else None

    @property
    def commands(self) -> list[tuple[str, list[str]]]:
        """A shell session's commands (``$`` and any comment stripped), each with its output lines."""
        session: list[tuple[str, list[str]]] = []
        for line in self.text.splitlines():
            if line.startswith("$ "):
                session.append((line[2:].split("  #", 1)[0].strip(), []))
            elif session:
                session[-1][1].append(line)
        return session


def readme_blocks(text: str | None = None) -> list[Block]:
    """The code blocks of README.rst: ``::`` literal blocks and ``.. code-block::`` directives."""
    lines = (README.read_text(encoding="utf-8") if text is None else text).splitlines()
    blocks = []
    section = ""
    i = 0
    while i < len(lines):
        line = lines[i]
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if line.strip() and nxt and len(nxt) >= len(line.rstrip()) and set(nxt) <= set("-=~^") and len(set(nxt)) == 1:
            section = line.strip()
        opens = (line.rstrip().endswith("::") and not line.lstrip().startswith(".. ")) or re.match(
            r"\s*\.\. code-block::", line
        )
        i += 1
        if not opens:
            continue
        indent = len(line) - len(line.lstrip())
        while i < len(lines) and not lines[i].strip():
            i += 1
        start = i
        while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent):
            i += 1
        body = textwrap.dedent("\n".join(lines[start:i])).strip("\n")
        if body:
            blocks.append(Block(start + 1, section, body))
    return blocks


def project_files(section: str) -> dict[str, str]:
    files = {b.filename: b.text + "\n" for b in readme_blocks() if b.section == section and b.filename}
    assert files, f"README.rst has no files under {section!r}"
    return files  # type: ignore[return-value]


def server_missing(program: str | None) -> str | None:
    """Why a project cannot run here (its server is not installed), or None."""
    if program is None:
        return None
    if program == "postgres":
        dirs = [os.environ.get("PG_BIN", ""), *map(str, Path("/usr/lib/postgresql").glob("*/bin"))]
        if any(d and (Path(d) / "postgres").exists() for d in dirs) or shutil.which("postgres"):
            return None
        return "PostgreSQL is not installed (apt-get install postgresql, or set PG_BIN)"
    return None if shutil.which(program) else f"{program} is not installed"


def need_server(program: str | None) -> None:
    """Skip when the project's server is missing, except on CI, where that is a failure."""
    why = server_missing(program)
    if why is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{why} (CI must run every README recipe: .ci/install-servers installs them)")
    pytest.skip(why)


def reachable_by_other_users(path: Path) -> None:
    """Let a server run as another user (PostgreSQL as root) enter ``path``: add o+x to the
    directories this test's temporary tree made without it (pytest's are 0700)."""
    top = Path(tempfile.gettempdir()).resolve()
    for directory in [path, *path.parents]:
        if directory == top or top not in directory.parents:
            break
        mode = directory.stat().st_mode
        if not mode & 0o001:
            directory.chmod(mode | 0o001)


def write_project(pytester: pytest.Pytester, section: str, where: Path | None = None) -> dict[str, str]:
    files = project_files(section)
    for name, source in files.items():
        ((where or pytester.path) / name).parent.mkdir(parents=True, exist_ok=True)
        ((where or pytester.path) / name).write_text(source, encoding="utf-8")
    if os.geteuid() == 0 and where is None:
        reachable_by_other_users(pytester.path)
    return files


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(*args, timeout=180)


# --- every block is run ---


def test_every_block_is_covered():
    blocks = readme_blocks()
    assert len(blocks) >= 10, blocks
    projects = set()
    for block in blocks:
        where = f"README.rst line {block.line} ({block.section})"
        if block.filename:
            assert block.section in PROJECTS, f"{where}: a file of a project no test runs: add it to PROJECTS"
            projects.add(block.section)
        elif block.text.startswith("$ "):
            for command, _ in block.commands:
                if command == "pytest" or command.startswith("pytest "):
                    assert block.section in PROJECTS, f"{where}: {command!r} outside a project"
                else:
                    known = INSTALL_COMMANDS | SCRIPT_COMMANDS
                    assert command in known, f"{where}: no test runs {command!r}: add it to test_readme.py"
        else:
            pytest.fail(f"{where}: a block that is neither a file ('# name.py') nor a shell session ('$ ')")
    assert projects == set(PROJECTS), "a project of PROJECTS is no longer in README.rst"
    commands = {c for b in blocks if b.text.startswith("$ ") for c, _ in b.commands}
    assert commands >= INSTALL_COMMANDS | SCRIPT_COMMANDS, "a command checked here left README.rst"


def test_blocks_are_found_in_both_forms():
    text = "Title\n=====\n\nA file::\n\n    # a.py\n    x = 1\n\n"
    text += ".. code-block:: python\n\n    # b.py\n\n    y = 2\nafter\n"
    blocks = readme_blocks(text)
    assert [(b.section, b.filename, b.text.splitlines()[-1]) for b in blocks] == [
        ("Title", "a.py", "x = 1"),
        ("Title", "b.py", "y = 2"),
    ]


@pytest.mark.parametrize("section", list(PROJECTS))
def test_project(
    pytester_xp: pytest.Pytester, section: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    """A project as pasted: the first run starts its servers, the second reuses them, --xkill
    stops them."""
    need_server(PROJECTS[section])
    pytester = pytester_xp
    project = pytester.path
    if os.geteuid() == 0 and PROJECTS[section] == "postgres":
        # PostgreSQL runs as the postgres user, which must enter the project: outside pytest's
        # temporary tree, whose top directory every pytest starting meanwhile makes 0700 again
        project = Path(tempfile.mkdtemp(prefix=f"xprocess-it-{os.getpid()}-"))
        project.chmod(0o755)
        (project / "pytest.ini").write_text("[pytest]\n")
        monkeypatch.chdir(project)  # where pytester's runs start

        def remove() -> None:
            terminate_all(project / ".xprocess")
            shutil.rmtree(project, ignore_errors=True)

        request.addfinalizer(remove)
    files = write_project(pytester, section, None if project == pytester.path else project)
    tests = sum(len(re.findall(r"^def test_", source, re.M)) for source in files.values())

    first = run(pytester)
    first.assert_outcomes(passed=tests)
    statedir = project / ".xprocess"
    names = sorted(p.name for p in statedir.iterdir() if p.is_dir())
    assert names, first.stdout.str()
    for name in names:
        first.stdout.fnmatch_lines([f"{name}: started in * s*"])  # (after the time in its starter: initdb)
    pids = {name: XProcessInfo(statedir, name).pid for name in names}
    assert all(XProcessInfo(statedir, name).isrunning() for name in names)

    second = run(pytester)
    second.assert_outcomes(passed=tests)
    assert "started in" not in second.stdout.str()
    assert {name: XProcessInfo(statedir, name).pid for name in names} == pids  # the very same processes

    killed = run(pytester, "--xkill")
    assert killed.ret == 0, killed.stdout.str()
    killed.stdout.fnmatch_lines([f"{pids[name]} {name} TERMINATED" for name in names])
    assert not any(XProcessInfo(statedir, name).isrunning() for name in names)


@pytest.mark.parametrize(
    "section, program, name, edits, restarted",
    [
        # issue 28, 2: the recipe wrote its configuration inside ``args`` and declared no file, so
        # an edited template was not noticed and the old nginx was reused; it names the file it writes
        (
            "nginx", "nginx", "nginx", ("conftest.py", "test_nginx.py", "hello from nginx", "hello again"),
            "nginx: restarted in * s (its configuration changed (config file */nginx.conf))",
        ),
        # issue 30: the app's source is part of its configuration; the summary names the file
        (
            "An app restarted when its source changes", None, "app",
            ("src/app.py", "test_app.py", "hello from", "hello again from"),
            "app: restarted in * s (src/app.py changed)",
        ),
    ],
    ids=["nginx", "app"],
)  # fmt: skip
def test_an_edit_of_what_a_recipe_declares_restarts_its_server(
    pytester_xp: pytest.Pytester, section: str, program: str | None, name: str, edits: tuple[str, ...], restarted: str
) -> None:
    need_server(program)
    files = write_project(pytester_xp, section)
    run(pytester_xp).assert_outcomes(passed=1)
    pid = XProcessInfo(pytester_xp.path / ".xprocess", name).pid
    *paths, old, replacement = edits
    for path in paths:
        edited = files[path].replace(old, replacement)
        assert edited != files[path]
        (pytester_xp.path / path).write_text(edited, encoding="utf-8")
    again = run(pytester_xp)
    again.assert_outcomes(passed=1)  # the new configuration answers
    again.stdout.fnmatch_lines([restarted])
    assert XProcessInfo(pytester_xp.path / ".xprocess", name).pid != pid


# --- what the README shows is what pytest prints ---

_HEADER = re.compile(r"(platform|rootdir|configfile|plugins|cachedir|cwd): ")
# numbers, absolute paths, runs of '=' (separator width), column padding
_VARIABLE = re.compile(r"\d+(?:\.\d+)?|(?<!\S)/\S*|={3,}| {2,}")


def output_pattern(line: str) -> str:
    """An fnmatch pattern for a line of output the README shows."""
    parts = _VARIABLE.split(line.strip())
    return ("*" if line[:1].isspace() else "") + "*".join(re.sub(r"([\[\]?*])", r"[\1]", part) for part in parts)


def test_output_pattern():
    from fnmatch import fnmatch

    assert output_pattern("test_http.py .      [100%]") == "test_http.py .*[[]*%[]]"
    pattern = output_pattern("http  LIVE    27141  53661  12s     -")
    assert fnmatch("http  LIVE    9  61000  3m05s   -", pattern)
    assert not fnmatch("http  DEAD    9  61000  3m05s   -", pattern)
    assert fnmatch("    $ /work/venv/bin/python -m x 1", output_pattern("    $ /usr/bin/python3 -m x 2"))


def test_readme_output(pytester_xp: pytest.Pytester) -> None:
    """The quick start's shell sessions, replayed: each pytest command prints what the README
    shows. Depends on the summary and --xshow formats of issue 21 (the summary's own section
    with 'started in', one 'xprocess: reused' line, --xshow's NAME STATUS PID ... table)."""
    pytester = pytester_xp
    write_project(pytester, "Quick start")
    sessions = [b for b in readme_blocks() if b.section == "Quick start" and b.text.startswith("$ pytest")]
    assert len(sessions) >= 3  # run 1, run 2, --xshow and --xkill
    for block in sessions:
        for command, shown in block.commands:
            result = run(pytester, *command.split()[1:])
            expected = [output_pattern(line) for line in shown if line.strip() and not _HEADER.match(line)]
            result.stdout.fnmatch_lines(expected)


# --- installing and the scripts ---


def test_install_commands(tmp_path: Path) -> None:
    """``pip wheel`` from the checkout makes the wheel the README installs, and the git URL and
    the path from a project beside the checkout build it (what ``pip install .``, ``pip install
    "git+file://$PWD"`` and ``pip install ../xprocess`` install)."""
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not a git checkout")
    isolation = ["--no-build-isolation"] if _has("setuptools") and _has("wheel") else []
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "--disable-pip-version-check", *isolation]
    subprocess.run([*pip, "--wheel-dir", str(tmp_path / "dist"), "."], cwd=ROOT, check=True, timeout=300)
    wheel = next(c.split()[-1] for c in INSTALL_COMMANDS if c.startswith("pip install dist/"))
    assert (tmp_path / wheel).exists(), sorted(p.name for p in (tmp_path / "dist").iterdir())
    subprocess.run([*pip, "--wheel-dir", str(tmp_path / "git"), f"git+file://{ROOT}"], check=True, timeout=300)
    assert [p.name for p in (tmp_path / "git").iterdir()] == [Path(wheel).name]
    # from one's own project, the checkout beside it: the path as given there builds the same wheel
    (tmp_path / "xprocess").symlink_to(ROOT)
    (tmp_path / "project").mkdir()
    outside = [*pip, "--wheel-dir", str(tmp_path / "outside"), "../xprocess"]
    subprocess.run(outside, cwd=tmp_path / "project", check=True, timeout=300)
    assert [p.name for p in (tmp_path / "outside").iterdir()] == [Path(wheel).name]


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def test_scripts():
    for command in SCRIPT_COMMANDS:
        script = ROOT / command.split()[1]
        assert script.is_file(), command
        subprocess.run(["bash", "-n", str(script)], check=True)
    assert "--all" in (ROOT / "tests" / "run").read_text()


# --- the messages Troubleshooting quotes are the code's ---

MODULE = ROOT / "xprocess.py"

# What stands for a value the code interpolates, in the quotes of the Troubleshooting section.
# ``PATH`` is not one: it is literal there (``executable 'X' not found on PATH``).
PLACEHOLDERS = [
    r"'(?:NAME|OTHER|X|x)'",  # a repr: the name, another process's name, a value given
    r"\bNAME\b",
    r"\bN\b",  # a number
    r"stdout, \.\.\.",  # popen_kwargs' keys the plugin owns, the first as an example
    r"\.\.\.(?:/[\w.]+)*",  # anything, or a path ending in the names shown (.../NAME, .../lock)
    r"<reason>",
    r"<test>",
]
_PLACEHOLDER = re.compile("|".join(f"(?:{p})" for p in PLACEHOLDERS))

# quoted under Troubleshooting, but the words of another program
FOREIGN = {
    "fixture 'xprocess' not found": "pytest's error for a fixture no plugin provides",
    "AttributeError: 'HttpServer' object has no attribute 'port'": "Python's, with pytest-xprocess's ProcessStarter",
}

_NAME = re.compile(r"[\w.]+\(\)|--[\w-]+")  # ``ensure()``, ``--xstop`` in the prose: names, not messages
_WARNING = re.compile(r"(\w+): ")  # how pytest shows a warning: "XProcessWarning: <message>"
_HOLE = "\0"  # where a value is interpolated into a literal
_START, _END = "\1", "\2"  # the ends of each literal


def section_lines(title: str, text: str | None = None) -> list[str]:
    """The lines of README.rst's section ``title``, up to the next title of its level or above."""
    lines = (README.read_text(encoding="utf-8") if text is None else text).splitlines()
    levels: list[str] = []  # underline characters in the order they first appear: rst's levels
    start = level = None
    for i, (line, nxt) in enumerate(zip(lines, [*lines[1:], ""])):
        if not (line.strip() and nxt and len(nxt) >= len(line.rstrip()) and len(set(nxt)) == 1 and nxt[0] in "-=~^"):
            continue
        if nxt[0] not in levels:
            levels.append(nxt[0])
        if start is not None and levels.index(nxt[0]) <= level:
            return lines[start:i]
        if start is None and line.strip() == title:
            start, level = i + 2, levels.index(nxt[0])
    assert start is not None, f"README.rst has no section {title!r}"
    return lines[start:]


def troubleshooting_quotes(text: str | None = None) -> list[str]:
    """The messages Troubleshooting quotes: the ````...```` of its unindented text (the terms of
    its definition list, ````A```` / ````B```` for several, and the paragraph on the summary's
    lines), but names (``ensure()``, ``--xstop``); the indented definitions quote advice."""
    paragraphs = [""]
    for line in section_lines("Troubleshooting", text):
        if line[:1].strip():
            paragraphs[-1] += " " + line
        elif paragraphs[-1]:
            paragraphs.append("")
    return [q for p in paragraphs for q in re.findall(r"``(.+?)``", p) if not _NAME.fullmatch(q)]


def fragments(quote: str) -> list[str]:
    """The literal text of ``quote`` between its placeholders, each piece stripped."""
    return [f.strip() for f in _PLACEHOLDER.split(quote) if f.strip()]


def literal_texts(source: str) -> tuple[str, set[str]]:
    """The string literals of ``source`` but its docstrings (where messages are written), joined
    into one text: each literal between ``_START`` and ``_END``, what an f-string (or a ``%``
    or ``{}`` format) interpolates as ``_HOLE``, but a module constant's value (``{STOP_ENV}``),
    which is text of the message. Also the names of the classes it defines."""
    tree = ast.parse(source)
    constants = {
        target.id: node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            skip.add(id(node.value))  # a docstring (or a bare string): says, does not emit
        elif isinstance(node, ast.JoinedStr):
            skip.update(id(v) for v in node.values)  # read with their f-string

    def part(value: ast.expr) -> str:
        if isinstance(value, ast.Constant):
            return str(value.value)
        if (
            isinstance(value, ast.FormattedValue)
            and isinstance(value.value, ast.Name)
            and value.value.id in constants
            and value.format_spec is None
        ):
            constant = constants[value.value.id]
            return repr(constant) if value.conversion == ord("r") else constant
        return _HOLE

    texts = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            texts.append("".join(map(part, node.values)))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            texts.append(re.sub(r"%[-#0 +]*\d*(?:\.\d+)?[rsdifg]|\{[^{}]*\}", _HOLE, node.value))
    classes = {node.name for node in ast.walk(tree) if isinstance(node, ast.ClassDef)}
    return "".join(_START + t + _END for t in texts), classes


def occurs(fragment: str, text: str) -> bool:
    """Whether ``fragment`` is in one literal of ``text``, or in two joined where one is
    interpolated into the other: up to a hole of one, then from the start of the other (the
    command line's ``f"xprocess: {exc}"`` and the error's own words), or the other way round."""
    if fragment in text:
        return True
    for i in range(1, len(fragment)):
        head, tail = re.escape(fragment[:i].rstrip()), re.escape(fragment[i:].lstrip())
        if not head or not tail:
            continue
        into = re.search(head + r"\s*" + _HOLE, text) and re.search(_START + r"\s*" + tail, text)
        if into or (re.search(head + r"\s*" + _END, text) and re.search(_HOLE + r"\s*" + tail, text)):
            return True
    return False


def missing(quote: str, text: str, classes: set[str]) -> list[str]:
    """The fragments of ``quote`` that xprocess.py's literals ``text`` do not hold."""
    shown = _WARNING.match(quote)
    if shown and shown.group(1) in classes:
        quote = quote[shown.end() :]  # the category pytest prints before a warning's message
    return [f for f in fragments(quote) if not occurs(f, text)]


def test_troubleshooting_quotes_are_read():
    text = "Intro\n=====\n\nTroubleshooting\n---------------\n\n"
    text += "``xprocess 'NAME' failed N times`` / ``.../NAME is odd: ...``\n    Advice ``not me``.\n"
    text += "In the summary: ``DIED during <test>`` (``ensure()`` restarts it), ``left running\n"
    text += "(in use)`` what ``--xstop`` left.\n\nNext\n----\n\n``no``\n"
    quotes = troubleshooting_quotes(text)
    assert quotes == [
        "xprocess 'NAME' failed N times",
        ".../NAME is odd: ...",
        "DIED during <test>",
        "left running (in use)",  # a quote over two lines
    ]
    assert [fragments(q) for q in quotes[:3]] == [["xprocess", "failed", "times"], ["is odd:"], ["DIED during"]]
    assert fragments("... executable 'X' not found on PATH") == ["executable", "not found on PATH"]


def test_fragments_are_found_as_the_code_writes_them():
    source = textwrap.dedent(
        """
        STOP = "XSTOP"
        class BadWarning(Warning):
            "A docstring: is not a message."
        def f(name, why, path):
            print(f"xprocess {name!r} was "
                  f"{why} at {path} (held)", f"{STOP}={why!r}: use 1")
            print("xprocess: %s" % why, f"in use ({why})", f"pid {why}: x", "no process as {} here".format(why))
        """
    )
    text, classes = literal_texts(source)
    assert not missing("xprocess 'NAME' was ... at .../lock (held)", text, classes)  # one literal in two lines
    assert not missing("XSTOP='x': use 1", text, classes)  # a constant's value
    assert not missing("xprocess: no process as 'X' here", text, classes)  # a message in another's hole
    assert not missing("in use (pid N: x)", text, classes)
    assert not missing("BadWarning: xprocess 'NAME' was", text, classes)
    assert missing("is not a message", text, classes) == ["is not a message"]
    assert missing("xprocess 'NAME' was held", text, classes) == ["was held"]
    assert missing("Other: xprocess", text, classes) == ["Other: xprocess"]  # not a class of its own


def test_troubleshooting_messages_are_the_codes():
    """Each message Troubleshooting quotes is one xprocess.py can give: the literal text between
    the placeholders (``PLACEHOLDERS``) is in its string literals, whichever function holds them."""
    text, classes = literal_texts(MODULE.read_text(encoding="utf-8"))
    quotes = troubleshooting_quotes()
    assert len(quotes) >= 20, quotes
    assert set(FOREIGN) <= set(quotes), "a message of FOREIGN left README.rst"
    wrong = []
    for quote in quotes:
        if quote not in FOREIGN:
            absent = missing(quote, text, classes)
            if absent:
                wrong.append(f"``{quote}``: xprocess.py does not have {' nor '.join(map(repr, absent))}")
    assert not wrong, "README.rst's Troubleshooting quotes messages xprocess.py does not give:\n" + "\n".join(wrong)
