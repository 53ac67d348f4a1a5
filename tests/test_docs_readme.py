"""The README is the user guide: its commands, options and Python names must exist.

Every `phenolens ...` line of the README's bash blocks must name a real command and only options
that command has; every `pl.x.y` chain and `from phenolens... import` of its Python blocks must
resolve.
"""

from __future__ import annotations

import ast
import importlib
import re
import shlex
from pathlib import Path

import typer

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()

TWO_COMMANDS = """```bash
make demo    # creates .venv, installs phenolens, runs `phenolens demo --out runs/demo --overwrite` on the built-in real datasets
make test    # creates .venv, installs dev extras, runs ruff and pytest
```"""

# Commands and names the README documents that the issue-19 branches add (images group, settings objects).


def code_blocks(language: str) -> list[str]:
    """The bodies of the README's fenced blocks in `language`."""
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.DOTALL)


def command_lines() -> list[list[str]]:
    """Each `phenolens ...` line of the bash blocks as tokens (continuations joined, comments dropped)."""
    lines = []
    for block in code_blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            tokens = shlex.split(line, comments=True)
            if tokens[:1] == ["phenolens"]:
                lines.append(tokens[1:])
    return lines


def is_group(command) -> bool:
    """Whether a click-style command has sub-commands (typer may bring its own copy of click)."""
    return hasattr(command, "commands")


def resolve(group, tokens: list[str]) -> tuple[object | None, str]:
    """The command named by the leading tokens, and its name ("images train"); None when there is none."""
    command = group
    names: list[str] = []
    for token in tokens:
        if not is_group(command) or token.startswith("-"):
            break
        sub = command.commands.get(token)
        if sub is None:
            return None, " ".join([*names, token])
        command, names = sub, [*names, token]
    return command, " ".join(names)


def missing_or_fail(missing: set[str]) -> None:
    """Fail on anything the README documents that does not exist."""
    assert not missing, f"the README documents what does not exist: {sorted(missing)}"


def test_readme_starts_with_the_two_commands():
    assert README.split("\n", 2)[2].startswith(TWO_COMMANDS)


def test_readme_commands_and_options_exist():
    from phenolens.cli.main import app

    group = typer.main.get_command(app)
    lines = command_lines()
    assert len(lines) >= 15, "the README should show each pipeline's commands"
    missing: set[str] = set()
    for tokens in lines:
        command, name = resolve(group, tokens)
        if command is None or is_group(command):
            missing.add(name)
            continue
        options = {option for parameter in command.params for option in parameter.opts + parameter.secondary_opts}
        for token in tokens:
            if token.startswith("--") and token.split("=")[0] not in options:
                missing.add(f"{name} {token}")
    missing_or_fail(missing)


def python_names() -> set[str]:
    """Dotted names the Python blocks use: imports, and attribute chains on `pl` or on an imported name."""
    aliases = {"pl": "phenolens"}  # the README's convention, `import phenolens as pl`
    names: set[str] = set()
    for block in code_blocks("python"):
        tree = ast.parse(block)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("phenolens"):
                for alias in node.names:
                    aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
                    names.add(f"{node.module}.{alias.name}")
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute):
                chain, root = [node.attr], node.value
                while isinstance(root, ast.Attribute):
                    chain, root = [root.attr, *chain], root.value
                if isinstance(root, ast.Name) and root.id in aliases:
                    names.add(".".join([aliases[root.id], *chain]))
    return names


def resolves(dotted: str) -> bool:
    """Whether `dotted` names a module or an attribute reachable from the longest importable module prefix."""
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):
        try:
            target = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        try:
            for attribute in parts[split:]:
                target = getattr(target, attribute)
        except AttributeError:
            return False
        return True
    return False


def test_readme_python_names_exist():
    names = python_names()
    assert len(names) >= 10, "the README should show each pipeline's Python API"
    # Chains are checked up to the first name that does not resolve (a method of a returned object is not checked).
    missing = {name for name in names if not resolves(name) and resolves(name.rsplit(".", 1)[0])}
    missing_or_fail(missing)


def cli_parameters() -> dict[str, list]:
    """Every option string of every command -> the click parameters that carry it."""
    from phenolens.cli.main import app

    found: dict[str, list] = {}
    pending = [typer.main.get_command(app)]
    while pending:
        command = pending.pop()
        pending.extend(getattr(command, "commands", {}).values())
        for parameter in command.params:
            for option in parameter.opts + parameter.secondary_opts:
                found.setdefault(option, []).append(parameter)
    return found


def allowed_values(parameter) -> list[str] | None:
    """The words an option accepts, as its help lists them ("One of: a, b."), or None for a free value."""
    match = re.search(r"One of: ([^.]+(?:\.\d[^.]*)*)\.", parameter.help or "")
    return None if match is None else [word.strip() for word in match.group(1).split(",")]


def test_readme_option_values_are_allowed():
    """`--option value` in the README (commands and prose) names a value the option accepts."""
    parameters = cli_parameters()
    pairs = [tokens[i : i + 2] for tokens in command_lines() for i in range(len(tokens) - 1) if tokens[i].startswith("--")]
    pairs += [match.groups() for match in re.finditer(r"`(--[a-z0-9-]+) ([a-z0-9_,-]+)`", README)]
    wrong = set()
    for option, value in pairs:
        choices = [allowed_values(parameter) for parameter in parameters.get(option, [])]
        choices = [words for words in choices if words is not None]
        if choices and not any(all(item in words for item in value.split(",")) for words in choices):
            wrong.add(f"{option} {value}")
    assert len(pairs) >= 30
    missing_or_fail(wrong)


def test_readme_defaults_are_the_defaults():
    """ "`--option value` (default)" and "`--option`, default `value`" in the README name the option's default."""
    parameters = cli_parameters()
    claims = re.findall(r"`(--[a-z0-9-]+) ([^`]+)` \(default\b", README) + re.findall(r"`(--[a-z0-9-]+)`, default `([^`]+)`", README)
    assert len(claims) >= 4
    wrong = {f"{option} {value}" for option, value in claims if not any(str(p.default) == value for p in parameters.get(option, []))}
    missing_or_fail(wrong)
