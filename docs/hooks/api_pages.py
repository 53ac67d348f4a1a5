"""MkDocs hook: expand `<!-- modules phenolens.x -->` into one mkdocstrings block per module of that package.

The module list is read from the source tree at build time, so a module added or renamed by a refactor
appears in the API reference without editing docs/api/. Each object is documented once, under the module
that defines it (a package's re-exports in `__init__.py` would otherwise appear a second time).

Syntax, alone on a line: `<!-- modules phenolens.explain exclude=sign,counterfactual -->`; `exclude`
names sub-packages documented on their own pages.
"""

from __future__ import annotations

import re
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[2] / "src"
DIRECTIVE = re.compile(r"^<!-- modules (?P<package>[\w.]+)(?: exclude=(?P<exclude>[\w,]+))? -->$", re.MULTILINE)


def package_modules(package: str, exclude: set[str]) -> list[str]:
    """Dotted names of every public module under `package`, in file order, sub-packages after modules.

    Parameters
    ----------
    package : str
        Dotted package name, e.g. ``phenolens.explain``.
    exclude : set of str
        Names of direct sub-packages to leave out.

    Returns
    -------
    list of str
        Module names; a sub-package's own ``__init__`` is listed before its modules.
    """
    folder = SOURCE.joinpath(*package.split("."))
    if not (folder / "__init__.py").is_file():
        raise ValueError(f"docs: {package} is not a package under {SOURCE}")
    modules = [f"{package}.{path.stem}" for path in sorted(folder.glob("*.py")) if not path.stem.startswith("_")]
    for child in sorted(folder.iterdir()):
        if (child / "__init__.py").is_file() and child.name not in exclude and not child.name.startswith("_"):
            modules += [f"{package}.{child.name}", *package_modules(f"{package}.{child.name}", set())]
    return modules


def _expand(match: re.Match) -> str:
    package = match["package"]
    exclude = set(filter(None, (match["exclude"] or "").split(",")))
    blocks = [f"::: {package}\n    options:\n      members: false\n      show_root_heading: false\n"]
    blocks += [f"::: {module}\n" for module in package_modules(package, exclude)]
    return "\n".join(blocks)


def on_page_markdown(markdown: str, **kwargs) -> str:
    """Expand every module directive of a page (MkDocs event)."""
    return DIRECTIVE.sub(_expand, markdown)
