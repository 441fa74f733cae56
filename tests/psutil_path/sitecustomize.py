"""Makes every Python that starts with this directory on PYTHONPATH (tox -e psutil) run xprocess
through psutil instead of its /proc readers, as on macOS: right after the module is executed (the
test's import, pytest's entry-point import, child pytest runs alike) its ``_PROC_FS`` is set
False. The tests themselves do not know."""

import sys


class _Loader:
    """The loader that found xprocess, and then the switch."""

    def __init__(self, loader):  # type: ignore[no-untyped-def]
        self._loader = loader

    def create_module(self, spec):  # type: ignore[no-untyped-def]
        return self._loader.create_module(spec)

    def exec_module(self, module):  # type: ignore[no-untyped-def]
        self._loader.exec_module(module)
        module._PROC_FS = False
        module._OS = module._Portable()

    def __getattr__(self, name):  # type: ignore[no-untyped-def]
        return getattr(self._loader, name)


class _ThroughPsutil:
    def find_spec(self, name, path=None, target=None):  # type: ignore[no-untyped-def]
        if name != "xprocess":
            return None
        for finder in sys.meta_path:
            if finder is not self and hasattr(finder, "find_spec"):
                spec = finder.find_spec(name, path, target)
                if spec is not None and spec.loader is not None:
                    spec.loader = _Loader(spec.loader)
                    return spec
        return None


class _FirstStaysFirst(list):  # type: ignore[type-arg]
    """sys.meta_path, where a finder inserted at the front (pytest's assertion rewriter) goes after
    ours: the switch must see every import of xprocess, whoever loads it."""

    def insert(self, index, finder):  # type: ignore[no-untyped-def]
        super().insert(1 if index == 0 and self and isinstance(self[0], _ThroughPsutil) else index, finder)


sys.meta_path = _FirstStaysFirst([_ThroughPsutil(), *sys.meta_path])
