"""irkit's version and distribution name, in a module of its own so any layer can read them.

The import name and the command are `irkit`; the distribution on PyPI is `irkit-nn` (PyPI's
`irkit` is an unrelated project). Every install hint irkit prints is built by `install_hint`.
"""

from __future__ import annotations

__version__ = "0.1.0"
DISTRIBUTION = "irkit-nn"  # what `pip install` names; `import irkit` and `irkit ...` stay


def install_hint(extra: str | None = None) -> str:
    """The pip command that installs irkit, with `extra` if given:
    `pip install "irkit-nn[distributed]"`."""
    target = DISTRIBUTION if extra is None else f"{DISTRIBUTION}[{extra}]"
    return f'pip install "{target}"'
