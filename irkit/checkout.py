"""A source checkout imports its own `passes/`, `runtimes/` and `models/` as irkit.passes,
irkit.runtimes and irkit.models (an installed copy has them inside the package folder).

The project keeps those three folders at the top of the repository and maps them into the
package at install time. Python started in a clone (a notebook saved there, `python -m
pytest`) imports the clone's `irkit/` first; this finder then serves the clone's own
folders, whatever is installed, so the code that runs is always the working tree's.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(PACKAGE_DIR)
MAPPED = ("passes", "runtimes", "models")  # irkit.<name> <- <checkout>/<name>


def is_checkout(root: str = ROOT) -> bool:
    """Whether `root` is an irkit source tree (irkit/ beside passes/ and pyproject.toml)."""
    return (os.path.isfile(os.path.join(root, "pyproject.toml"))
            and os.path.isfile(os.path.join(root, "passes", "__init__.py"))
            and os.path.isfile(os.path.join(root, "irkit", "__init__.py")))


class CheckoutFinder(importlib.abc.MetaPathFinder):
    """Finds irkit.passes / irkit.runtimes / irkit.models in the checkout's top-level folders
    (their submodules then load from the package's own path)."""

    def __init__(self, root: str) -> None:
        self.root = root

    def find_spec(self, fullname, path=None, target=None):
        package, _, name = fullname.partition(".")
        if package != "irkit" or name not in MAPPED:
            return None
        folder = os.path.join(self.root, name)
        init = os.path.join(folder, "__init__.py")
        if not os.path.isfile(init):
            return None
        return importlib.util.spec_from_file_location(fullname, init,
                                                      submodule_search_locations=[folder])


def install() -> None:
    """Serve the checkout's folders when this package is a checkout's (not an installed copy,
    whose passes/ and runtimes/ are inside it)."""
    if os.path.isdir(os.path.join(PACKAGE_DIR, "passes")) or not is_checkout():
        return
    if not any(isinstance(f, CheckoutFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, CheckoutFinder(ROOT))


def installed_elsewhere_note(cwd: str | None = None) -> str | None:
    """A one-line note when the working directory is an irkit checkout but the irkit that
    runs is another copy (an installed one): edits to the checkout would not apply."""
    cwd = os.path.abspath(cwd or os.getcwd())
    if not is_checkout(cwd) or os.path.samefile(os.path.join(cwd, "irkit"), PACKAGE_DIR):
        return None
    return (f"irkit: note: this runs the irkit in {PACKAGE_DIR}, not the checkout in {cwd}; "
            "run `pip install -e .` there so the two agree")
