"""What the command line does before anything else, to start fast (bench/cli.py).

These tricks are the command's alone: importing lowbridge as a library changes no module of
anyone else's.

* :func:`trim_pyroute2`: ``import pyroute2.<submodule>`` skips the package's ``__init__``.
* :func:`defer_inspect`: ``inspect`` is loaded on its first use.
* :class:`Formatter`: argparse's help formatter, sized without importing ``shutil``.
"""

from __future__ import annotations

import argparse
import os
import sys
import types


def trim_pyroute2() -> None:
    """Let ``import pyroute2.<submodule>`` skip the package's ``__init__`` until something
    asks the package itself for a name.

    pyroute2/__init__.py imports nearly everything it has (NDB, IPDB, conntrack, WireGuard,
    ...): ~265 ms of a command's start-up here, where lowbridge needs pyroute2's message
    classes (~65 ms) and, for some verbs, IPRoute (~100 ms more; imported on first use).
    The package is registered as a module whose ``__path__`` finds its submodules; its first
    attribute lookup (``from pyroute2 import NDB`` anywhere) runs the real ``__init__`` in it
    (PEP 562 module ``__getattr__``), so other users see the usual package."""
    import importlib
    import importlib.util
    import sys

    if "pyroute2" in sys.modules:
        return
    spec = importlib.util.find_spec("pyroute2")
    if spec is None or spec.loader is None or not spec.submodule_search_locations:
        return
    pkg = importlib.util.module_from_spec(spec)

    def complete(name: str):  # noqa: ANN202
        if not name.startswith("__") and importlib.util.find_spec(f"pyroute2.{name}"):
            return importlib.import_module(f"pyroute2.{name}")  # ``from pyroute2 import config``
        del pkg.__getattr__
        spec.loader.exec_module(pkg)
        return getattr(pkg, name)

    pkg.__getattr__ = complete
    sys.modules["pyroute2"] = pkg


def defer_inspect() -> None:
    """Load ``inspect`` on its first use: a stand-in module takes its place in sys.modules.

    Every dataclass module imports dataclasses, which imports inspect (with ast, dis, tokenize:
    ~12 ms of a command's start-up here, bench/cli.py) and calls it only for a class without a
    docstring; lowbridge's have docstrings.  (importlib.util.LazyLoader does not help: an
    ``import inspect`` statement reads the module's ``__spec__``, which loads it.)"""
    if "inspect" not in sys.modules:
        sys.modules["inspect"] = Deferred("inspect")


class Deferred(types.ModuleType):
    """A module that imports the real one at the first attribute it is asked for, puts it in
    sys.modules and takes on its contents."""

    def __getattr__(self, name: str) -> object:
        if sys.modules.get(self.__name__) is self:
            del sys.modules[self.__name__]
        real = __import__(self.__name__)
        self.__dict__.update(real.__dict__)
        return getattr(real, name)


class Formatter(argparse.HelpFormatter):
    """argparse's formatter, sized without ``shutil``: argparse makes one per argument added and
    imports shutil (with bz2, lzma ...: ~4 ms here) for its terminal size.  The same size:
    $COLUMNS, else the terminal's, else 80 columns; less 2."""

    def __init__(self, prog: str, **kwargs: object) -> None:
        if kwargs.get("width") is None:
            try:
                columns = int(os.environ["COLUMNS"])
            except (KeyError, ValueError):
                try:
                    columns = os.get_terminal_size(sys.__stdout__.fileno()).columns
                except (AttributeError, ValueError, OSError):
                    columns = 80
            kwargs["width"] = columns - 2
        super().__init__(prog, **kwargs)  # type: ignore[arg-type]

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("Example:"):  # a command line to copy: never wrapped
            return indent + text
        return super()._fill_text(text, width, indent)
