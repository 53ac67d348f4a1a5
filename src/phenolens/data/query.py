"""Safe row queries: select the rows of a table with a comparison expression, never by evaluating code.

Options such as ``--controls "Metadata_pert_type == 'control'"`` used to go to `DataFrame.query`,
which resolves ``@name`` to Python objects and so runs whatever a user (or an attacker writing a
shared script) puts there. This module parses the expression with Python's `ast` and accepts only a
small whitelist, then evaluates it with vectorised pandas comparisons:

- column names, bare (``Metadata_Plate``) or backtick-quoted (```Metadata plate```);
- string, number and true/false literals (``'control'``, ``3``, ``-0.5``, ``True``) and lists or
  tuples of them (``['a', 'b']``);
- comparisons ``==, !=, <, <=, >, >=, in, not in`` (chains such as ``1 < x <= 3`` too);
- ``and``, ``or``, ``not`` and parentheses; a true/false column may stand alone.

Anything else (function calls, attribute access, subscripts, ``@`` names, arithmetic, lambdas,
f-strings, comprehensions, ...) is refused with one line naming the expression and what is allowed.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from phenolens.core.errors import PhenolensError

ALLOWED = (
    "a query may use only column names (bare or in `backticks`), string/number literals and lists of them, "
    "==, !=, <, <=, >, >=, in, not in, and, or, not and parentheses"
)
MAX_LENGTH = 20_000  # characters: a list of a few hundred treatment names fits; a parser bomb does not
MAX_DEPTH = 64  # nesting of parentheses / not / and / or
_PLACEHOLDER = "_phenolens_backtick_column_"

_COMPARISONS: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}
_REFUSED = {
    ast.Call: "function calls",
    ast.Attribute: "attribute access (a.b)",
    ast.Subscript: "subscripts (a[b])",
    ast.Lambda: "lambdas",
    ast.JoinedStr: "f-strings",
    ast.FormattedValue: "f-strings",
    ast.BinOp: "arithmetic and bitwise operators (use and/or/not instead of &, |, ~)",
    ast.IfExp: "conditional expressions",
    ast.NamedExpr: "assignments (:=)",
    ast.Starred: "starred expressions",
    ast.Dict: "dictionaries",
    ast.Set: "sets (use a list)",
    ast.ListComp: "comprehensions",
    ast.SetComp: "comprehensions",
    ast.DictComp: "comprehensions",
    ast.GeneratorExp: "comprehensions",
    ast.Await: "await",
    ast.Yield: "yield",
    ast.YieldFrom: "yield",
    ast.Slice: "slices",
}


class QueryError(PhenolensError):
    """A row query that is not allowed or cannot be evaluated; `problem` says why, in a few words."""

    def __init__(self, expression: str, problem: str, option: str = "query") -> None:
        self.expression = expression
        self.problem = problem
        shown = expression if len(expression) <= 200 else expression[:200] + "..."
        super().__init__(f"{option} {shown!r}: {problem}")


def _replace_backticks(expression: str, option: str) -> tuple[str, dict[str, str]]:
    """Swap each backtick-quoted column name for a placeholder identifier, leaving string literals alone."""
    pieces: list[str] = []
    columns: dict[str, str] = {}
    position, length = 0, len(expression)
    while position < length:
        char = expression[position]
        if char in "'\"":
            end = position + 1
            while end < length and expression[end] != char:
                end += 2 if expression[end] == "\\" else 1
            pieces.append(expression[position : end + 1])
            position = end + 1
        elif char == "`":
            end = expression.find("`", position + 1)
            if end < 0:
                raise QueryError(expression, f"unclosed backtick; {ALLOWED}", option)
            placeholder = f"{_PLACEHOLDER}{len(columns)}"
            columns[placeholder] = expression[position + 1 : end]
            pieces.append(f" {placeholder} ")
            position = end + 1
        else:
            pieces.append(char)
            position += 1
    return "".join(pieces), columns


@dataclass(frozen=True)
class RowQuery:
    """A parsed, whitelisted row query; `mask(table)` evaluates it on a table.

    Parameters
    ----------
    expression : str
        The text the user gave.
    option : str
        The option it came from (named in error messages), e.g. ``--controls``.
    tree : ast.Expression
        The checked syntax tree (placeholders stand for backtick-quoted names).
    backticked : dict
        Placeholder identifier -> the column name written in backticks.
    """

    expression: str
    option: str
    tree: ast.Expression
    backticked: dict[str, str]

    @property
    def columns(self) -> list[str]:
        """Every column the query names, in order of appearance."""
        names = [self.backticked.get(node.id, node.id) for node in ast.walk(self.tree) if isinstance(node, ast.Name)]
        return list(dict.fromkeys(names))

    def mask(self, table: pd.DataFrame, source: str = "table") -> np.ndarray:
        """Boolean mask (one entry per row of `table`) of the rows the query selects.

        Parameters
        ----------
        table : pandas.DataFrame
            The table to select from; it is not modified.
        source : str
            The table's name for messages (a file path).

        Returns
        -------
        numpy.ndarray
            Boolean, ``len(table)`` long.

        Raises
        ------
        QueryError
            When the query names a column `table` lacks, or compares values that cannot be compared.
        """
        unknown = [c for c in self.columns if c not in table.columns]
        if unknown:
            known = ", ".join(map(str, list(table.columns)[:12])) + (", ..." if len(table.columns) > 12 else "")
            raise self._error(f"{source} has no column {unknown[0]!r} (columns: {known})")
        if table.columns.duplicated().any():
            duplicated = table.columns[table.columns.duplicated()][0]
            raise self._error(f"{source} has two columns named {duplicated!r}; rename one")
        return self._predicate(self.tree.body, table).to_numpy(dtype=bool)

    def _error(self, problem: str) -> QueryError:
        return QueryError(self.expression, problem, self.option)

    def _evaluate(self, node: ast.AST, table: pd.DataFrame) -> Any:
        if isinstance(node, ast.BoolOp):
            parts = [self._predicate(value, table) for value in node.values]
            combine = np.logical_and if isinstance(node.op, ast.And) else np.logical_or
            result = parts[0]
            for part in parts[1:]:
                result = pd.Series(combine(result.to_numpy(), part.to_numpy()), index=table.index)
            return result
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return ~self._predicate(node.operand, table)
        if isinstance(node, ast.Compare):
            return self._compare(node, table)
        if isinstance(node, ast.Name):
            return self._column(node, table)
        return _literal(node)

    def _predicate(self, node: ast.AST, table: pd.DataFrame) -> pd.Series:
        """A true/false value per row: a comparison, a combination of them, or a true/false column."""
        value = self._evaluate(node, table)
        if not isinstance(value, pd.Series):
            raise self._error(f"{ast.unparse(node)!r} is a value, not a condition; compare a column with it")
        if not pd.api.types.is_bool_dtype(value):
            raise self._error(f"column {ast.unparse(node)!r} is not true/false; compare it with a value, e.g. {ast.unparse(node)} == 'x'")
        return value.fillna(False).astype(bool)

    def _column(self, node: ast.Name, table: pd.DataFrame) -> pd.Series:
        return table[self.backticked.get(node.id, node.id)]

    def _compare(self, node: ast.Compare, table: pd.DataFrame) -> pd.Series:
        left = self._evaluate(node.left, table)
        result: pd.Series | None = None
        for op, right_node in zip(node.ops, node.comparators):
            right = self._evaluate(right_node, table)
            if not isinstance(left, pd.Series) and not isinstance(right, pd.Series):
                raise self._error(f"{ast.unparse(node)!r} compares two values; one side must be a column")
            try:
                if isinstance(op, (ast.In, ast.NotIn)):
                    if not isinstance(left, pd.Series):
                        raise self._error(f"{ast.unparse(node)!r}: put the column on the left of 'in'")
                    values = list(right) if isinstance(right, tuple) else [right] if not isinstance(right, pd.Series) else right.unique()
                    part = left.isin(values)
                    part = ~part if isinstance(op, ast.NotIn) else part
                else:
                    if isinstance(left, tuple) or isinstance(right, tuple):
                        raise self._error(f"{ast.unparse(node)!r}: a list can only follow 'in' or 'not in'")
                    part = _COMPARISONS[type(op)](left, right)
            except TypeError as error:
                raise self._error(f"cannot evaluate {ast.unparse(node)!r} ({error}); compare a column with values of its type") from None
            part = pd.Series(part, index=table.index).fillna(False).astype(bool)
            result = part if result is None else result & part
            left = right
        assert result is not None
        return result


def _literal(node: ast.AST) -> Any:
    """The value of a checked literal node (a constant, a negated number, a list/tuple of them)."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.UnaryOp):
        value = _literal(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, (ast.List, ast.Tuple)):
        return tuple(_literal(element) for element in node.elts)
    raise AssertionError(f"unchecked node {type(node).__name__}")


def _check(node: ast.AST, expression: str, option: str, depth: int = 0) -> None:
    """Refuse every node outside the whitelist (raises QueryError naming the first one found)."""
    if depth > MAX_DEPTH:
        raise QueryError(expression, f"nested more than {MAX_DEPTH} levels deep; simplify it", option)
    kind = type(node)
    if kind in _REFUSED:
        raise QueryError(expression, f"not allowed: {_REFUSED[kind]}; {ALLOWED}", option)
    if isinstance(node, ast.Name):
        if node.id.startswith("__"):
            raise QueryError(expression, f"the name {node.id!r} is not allowed; {ALLOWED}", option)
        return
    if isinstance(node, ast.Constant):
        if type(node.value) not in (str, int, float, bool):
            raise QueryError(expression, f"the literal {ast.unparse(node)} is not allowed; {ALLOWED}", option)
        return
    if isinstance(node, ast.UnaryOp):
        if isinstance(node.op, ast.Not):
            return _check(node.operand, expression, option, depth + 1)
        if isinstance(node.op, (ast.USub, ast.UAdd)) and isinstance(node.operand, ast.Constant) and type(node.operand.value) in (int, float):
            return None
        raise QueryError(expression, f"the operator in {ast.unparse(node)!r} is not allowed; {ALLOWED}", option)
    if isinstance(node, (ast.List, ast.Tuple)):
        for element in node.elts:
            if not (isinstance(element, ast.Constant) or (isinstance(element, ast.UnaryOp) and not isinstance(element.op, ast.Not))):
                raise QueryError(expression, f"lists may hold only string/number literals, not {ast.unparse(element)!r}; {ALLOWED}", option)
            _check(element, expression, option, depth + 1)
        return
    if isinstance(node, ast.BoolOp):
        for value in node.values:
            _check(value, expression, option, depth + 1)
        return
    if isinstance(node, ast.Compare):
        for op in node.ops:
            if type(op) not in _COMPARISONS and not isinstance(op, (ast.In, ast.NotIn)):
                raise QueryError(expression, f"the comparison '{_OPERATOR_WORDS.get(type(op), type(op).__name__)}' is not allowed; {ALLOWED}", option)
        for operand in (node.left, *node.comparators):
            if isinstance(operand, (ast.BoolOp, ast.Compare)) or (isinstance(operand, ast.UnaryOp) and isinstance(operand.op, ast.Not)):
                raise QueryError(expression, f"put parentheses around the condition {ast.unparse(operand)!r}; {ALLOWED}", option)
            _check(operand, expression, option, depth + 1)
        return
    raise QueryError(expression, f"not allowed: {kind.__name__} expressions; {ALLOWED}", option)


_OPERATOR_WORDS = {ast.Is: "is", ast.IsNot: "is not"}


def parse_query(expression: str, option: str = "query") -> RowQuery:
    """Parse and check a row query without evaluating anything.

    Parameters
    ----------
    expression : str
        E.g. ``"Metadata_pert_type == 'control' and Metadata_Plate != 'P3'"``.
    option : str
        The command-line option it came from, named in error messages.

    Returns
    -------
    RowQuery
        Evaluate it with `RowQuery.mask`.

    Raises
    ------
    QueryError
        A one-line error naming the expression and what is allowed, for anything outside the whitelist.
    """
    if not isinstance(expression, str) or not expression.strip():
        raise QueryError(str(expression), f"empty query; {ALLOWED}", option)
    if len(expression) > MAX_LENGTH:
        raise QueryError(expression, f"{len(expression)} characters, more than the {MAX_LENGTH} a query may have", option)
    text, backticked = _replace_backticks(expression, option)
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as error:
        hint = "'@' names are not allowed" if "@" in text else f"not a valid expression ({error.msg})"
        raise QueryError(expression, f"{hint}; {ALLOWED}", option) from None
    except (ValueError, RecursionError, MemoryError) as error:
        raise QueryError(expression, f"cannot be parsed ({type(error).__name__}); {ALLOWED}", option) from None
    _check(tree.body, expression, option)
    return RowQuery(expression, option, tree, backticked)


def select_rows(table: pd.DataFrame, expression: str, source: str = "table", option: str = "query") -> np.ndarray:
    """Boolean mask of the rows of `table` that `expression` selects (parsed by `parse_query`).

    Parameters
    ----------
    table : pandas.DataFrame
        The table; it is not modified.
    expression : str
        The row query.
    source : str
        The table's name for messages (a file path).
    option : str
        The option the query came from, for messages.

    Returns
    -------
    numpy.ndarray
        Boolean mask, one entry per row.

    Raises
    ------
    QueryError
        When the query is not allowed, names an unknown column, or compares incomparable values.
    """
    return parse_query(expression, option).mask(table, source)
