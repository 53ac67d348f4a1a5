"""Griffe extension: document each field of a `Settings` class from its `setting(...)` declaration.

A settings field is declared once, `window: int = setting(5, "Window length.", minimum=1)`, and that
declaration is what the CLI's `--help` shows. The API reference shows the same words: the help text becomes
the field's docstring (with its command-line option, allowed values and bounds), and the field's value is
shown as its default instead of the `setting(...)` call.
"""

from __future__ import annotations

import ast
from typing import Any

import griffe

_BOUNDS = {"minimum": ">=", "maximum": "<="}


def _literal(node: ast.expr, attribute: griffe.Attribute) -> Any:
    """The value of a literal, or of a module-level string constant it names; None if neither."""
    try:
        return ast.literal_eval(node)
    except ValueError:
        pass
    if isinstance(node, ast.Name) and node.id in attribute.module.members:
        constant = attribute.module.members[node.id]
        if isinstance(constant, griffe.Attribute) and constant.value is not None:
            try:
                return ast.literal_eval(str(constant.value))
            except (ValueError, SyntaxError):
                return None
    return None


def field_description(call: ast.Call, name: str, attribute: griffe.Attribute) -> str | None:
    """The docstring of a field declared by `call` (a `setting(...)` call), or None if it has no literal help.

    Parameters
    ----------
    call : ast.Call
        The field's `setting(default, help, ...)` call.
    name : str
        The field's name (its option is ``--name-with-dashes`` unless `option=` says otherwise).
    attribute : griffe.Attribute
        The field, to look up a help text that is a module constant.

    Returns
    -------
    str or None
        Help text, then the command-line option (or "API only"), the allowed values and the bounds.
    """
    keywords = {keyword.arg: keyword.value for keyword in call.keywords if keyword.arg}
    help_node = call.args[1] if len(call.args) > 1 else keywords.get("help")
    help_text = None if help_node is None else _literal(help_node, attribute)
    if not isinstance(help_text, str):
        return None
    facts = []
    if "cli" in keywords and _literal(keywords["cli"], attribute) is False:
        facts.append("API only (no command-line option)")
    else:
        option = _literal(keywords["option"], attribute) if "option" in keywords else None
        facts.append(f"Option `{option or '--' + name.replace('_', '-')}`")
    if "choices" in keywords:
        choices = _literal(keywords["choices"], attribute)
        facts.append("one of " + (", ".join(f"`{choice}`" for choice in choices) if choices else f"`{ast.unparse(keywords['choices'])}`"))
    exclusive = "exclusive_minimum" in keywords and _literal(keywords["exclusive_minimum"], attribute) is True
    for bound, relation in _BOUNDS.items():
        if bound in keywords:
            relation = ">" if bound == "minimum" and exclusive else relation
            facts.append(f"{relation} {ast.unparse(keywords[bound])}")
    return f"{help_text}\n\n{'; '.join(facts)}."


class SettingsFields(griffe.Extension):
    """Turn `x: T = setting(default, help, ...)` into an attribute documented by `help`, valued `default`."""

    def on_attribute_instance(self, *, node: ast.AST | griffe.ObjectNode, attr: griffe.Attribute, **kwargs: Any) -> None:
        """Document a settings field (griffe event); other attributes are left alone."""
        call = getattr(node, "value", None)
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "setting" and call.args):
            return
        description = field_description(call, attr.name, attr)
        if description is None:
            return
        attr.value = ast.unparse(call.args[0])
        if attr.docstring is None:
            attr.docstring = griffe.Docstring(description, parent=attr, lineno=attr.lineno, endlineno=attr.endlineno)
