"""Safe row queries (phenolens.data.query): known escape payloads are refused and never run; valid queries match DataFrame.query."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phenolens.data.query import ALLOWED, QueryError, parse_query, select_rows

TABLE = pd.DataFrame(
    {
        "Metadata_pert_type": ["control", "trt", "trt", "control", "trt", "poscon"],
        "Metadata_dose": [0.0, 1.0, 10.0, 0.0, np.nan, 3.0],
        "Metadata_count": [1, 2, 3, 4, 5, 6],
        "Metadata_is_control": [True, False, False, True, False, False],
        "Metadata plate": ["P1", "P1", "P2", "P2", "P3", "P3"],
    }
)


def payloads(sentinel: str) -> list[str]:
    """Known pandas.eval / numexpr / Python-sandbox escapes, each of which would create `sentinel` if executed."""
    touch = f"touch {sentinel}"
    system = f"__import__('os').system('{touch}')"
    return [
        f"@pd.io.common.os.system('{touch}') != 0 or Metadata_pert_type == 'control'",
        f"@np.os.system('{touch}')",
        f"Metadata_pert_type == 'control' or @pd.io.common.os.system('{touch}')",
        system,
        f"{system} == 0",
        f"Metadata_pert_type == {system}",
        f"Metadata_pert_type in [{system}]",
        f"pd.io.common.os.system('{touch}')",
        f"Metadata_pert_type.__class__.__mro__[-1].__subclasses__()[0]('{touch}')",
        "().__class__.__bases__[0].__subclasses__()",
        "Metadata_pert_type.__class__ == 1",
        "__class__ == 1",
        "__builtins__ == 1",
        f"(lambda: {system})() == 0",
        f"f'{{{system}}}' == 'x'",
        f"[x for x in [{system}]] == 1",
        "(x := 1) == 1",
        f"1 if {system} else 0",
        "Metadata_pert_type.str.contains('con')",
        "Metadata_pert_type[0] == 'c'",
        "Metadata_count[:2] == 1",
        "sin(Metadata_dose) > 0",
        "exp(Metadata_dose) > 0",
        "where(Metadata_dose > 0, 1, 0) == 1",
        "arctan2(Metadata_dose, 1) > 0",
        "globals() == 1",
        "Metadata_pert_type == 'control'; import os",
        f"Metadata_pert_type == 'control'\n{system}",
        "'a' * 10**9 == Metadata_pert_type",
        "Metadata_count ** 99999999 > 1",
        "Metadata_count + 1 > 2",
        "Metadata_is_control & Metadata_is_control",
        "~Metadata_is_control",
        "Metadata_pert_type == b'control'",
        "Metadata_count == 1j",
        "Metadata_count == ...",
        "Metadata_count in {'a': 1}",
        "Metadata_count is 1",
        "*Metadata_count == 1",
        "Metadata_pert_type == 'control' \x00",
        "(" * 300 + "Metadata_count == 1" + ")" * 300,
        "not " * 500 + "Metadata_is_control",
        "Metadata_count == 1" + " or Metadata_count == 1" * 2000,
        "`Metadata_pert_type`.__class__ == 1",
        f"`{system}` == 1",
        "Metadata_pert_type == `unclosed",
        "@Metadata_pert_type == 'control'",
        "",
    ]


@pytest.mark.parametrize("index", range(len(payloads("S"))))
def test_escape_payloads_are_refused_and_never_run(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sentinel = tmp_path / "pwned"
    payload = payloads(str(sentinel))[index]
    with pytest.raises(QueryError) as caught:
        select_rows(TABLE, payload, "wells.csv", "--controls")
    message = str(caught.value)
    assert "\n" not in message and message.startswith("--controls ")
    assert not sentinel.exists()
    # a backtick-quoted payload is only a (missing) column name; everything else names what is allowed
    assert any(part in message for part in (ALLOWED, "characters, more than", "nested more than", "has no column"))


def test_pandas_query_does_run_the_first_payload(tmp_path):
    """The defect this module closes: DataFrame.query executes an @-name call (so the test above can fail)."""
    sentinel = tmp_path / "pwned"
    TABLE.query(payloads(str(sentinel))[0])
    assert sentinel.exists()


@pytest.mark.parametrize(
    "expression",
    [
        "Metadata_pert_type == 'control'",
        "Metadata_pert_type != 'control' and Metadata_dose > 0.5",
        "Metadata_pert_type in ['control', 'poscon']",
        "Metadata_pert_type not in ('control',)",
        "not (Metadata_count >= 3) or Metadata_dose == 10",
        "1 < Metadata_count <= 4",
        "`Metadata plate` == 'P2'",
        "Metadata_is_control",
        "not Metadata_is_control and Metadata_count < 5",
        "Metadata_dose != 3 or Metadata_dose == -1.5",
        'Metadata_pert_type == "it\'s"',
    ],
)
def test_valid_queries_select_the_rows_pandas_query_selects(expression):
    assert select_rows(TABLE, expression).tolist() == TABLE.index.isin(TABLE.query(expression).index).tolist()


def test_unknown_columns_and_bad_comparisons_are_one_line_errors():
    with pytest.raises(QueryError, match=r"--group 'Metadata_moa == 1': wells.csv has no column 'Metadata_moa'"):
        select_rows(TABLE, "Metadata_moa == 1", "wells.csv", "--group")
    with pytest.raises(QueryError, match="not true/false"):
        select_rows(TABLE, "Metadata_count", "wells.csv")
    with pytest.raises(QueryError, match="one side must be a column"):
        select_rows(TABLE, "1 == 1", "wells.csv")
    duplicated = pd.concat([TABLE, TABLE[["Metadata_count"]]], axis=1)
    with pytest.raises(QueryError, match="two columns named 'Metadata_count'"):
        select_rows(duplicated, "Metadata_count == 1", "wells.csv")
    assert parse_query("`Metadata plate` == 'P1' and Metadata_count > 1").columns == ["Metadata plate", "Metadata_count"]


NUMERIC = {"Metadata_dose": st.floats(-20, 20, allow_nan=False).map(lambda v: round(v, 2)), "Metadata_count": st.integers(-3, 9)}
TEXT = {"Metadata_pert_type": st.sampled_from(["control", "trt", "poscon", "other"]), "`Metadata plate`": st.sampled_from(["P1", "P2", "P9"])}


def _comparison():
    numeric = st.tuples(st.sampled_from(sorted(NUMERIC)), st.sampled_from(["==", "!=", "<", "<=", ">", ">="])).flatmap(
        lambda pair: NUMERIC[pair[0]].map(lambda value: f"{pair[0]} {pair[1]} {value!r}")
    )
    text = st.tuples(st.sampled_from(sorted(TEXT)), st.sampled_from(["==", "!="])).flatmap(
        lambda pair: TEXT[pair[0]].map(lambda value: f"{pair[0]} {pair[1]} {value!r}")
    )
    membership = st.tuples(st.sampled_from(sorted(TEXT)), st.sampled_from(["in", "not in"])).flatmap(
        lambda pair: st.lists(TEXT[pair[0]], min_size=1, max_size=3).map(lambda values: f"{pair[0]} {pair[1]} {values!r}")
    )
    return st.one_of(numeric, text, membership, st.just("Metadata_is_control"))


QUERIES = st.recursive(
    _comparison(),
    lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from(["and", "or"]), inner).map(lambda t: f"({t[0]}) {t[1]} ({t[2]})"),
        inner.map(lambda q: f"not ({q})"),
    ),
    max_leaves=6,
)


@settings(max_examples=150, deadline=None)
@given(QUERIES)
def test_generated_queries_agree_with_pandas_query(expression):
    expected = TABLE.index.isin(TABLE.query(expression, engine="python").index)
    assert select_rows(TABLE, expression).tolist() == expected.tolist()
