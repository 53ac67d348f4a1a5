"""One rule finds a class given on the command line, name first, then index: `sign graph --class` and `images explain --target`."""

import numpy as np
import pytest

from phenolens.core.errors import PhenolensError
from phenolens.data.containers import find_class


def test_a_name_wins_over_an_index_and_digits_name_no_class_are_an_index():
    names = ["1", "2", "3"]  # class folders named 1, 2, 3
    assert find_class("2", names) == 1  # the class named "2", not index 2
    assert find_class("0", names) == 0  # no class is named "0": an index
    assert find_class(2, names) == 2 and find_class(np.int64(2), names) == 2  # a number is an index
    assert find_class("b", ["a", "b"]) == 1
    assert find_class("4", None, n_classes=5) == 4  # a model without class names: indices only
    with pytest.raises(PhenolensError, match="unknown class 'x'; the model knows 1, 2, 3"):
        find_class("x", names)
    with pytest.raises(PhenolensError, match="unknown target class '-1'"):
        find_class("-1", names, what="target class")
    with pytest.raises(PhenolensError, match="class index 7 is out of range; the model has 3 classes"):
        find_class("7", names)


def test_sign_graph_and_explain_targets_use_the_one_rule(monkeypatch):
    from phenolens.explain import attribution
    from phenolens.explain.sign import graph

    monkeypatch.setattr(attribution, "find_class", lambda target, names, *_, **__: 42)
    monkeypatch.setattr(graph, "find_class", lambda target, names, *_, **__: 43)

    class Classifier:
        class_names = ["1", "2", "3"]

    assert attribution.resolve_targets(Classifier(), np.zeros((2, 1, 4, 4)), "2").tolist() == [42, 42]
    builder = object.__new__(graph.InferenceGraphBuilder)
    builder.class_names = ["1", "2", "3"]
    builder.dictionary = type("Dictionary", (), {"output_dictionary_": type("Words", (), {"n_words": 3})()})()
    assert builder.class_index("2") == 43


def test_class_by_name_takes_names_only_where_find_class_also_takes_indices():
    """`ImageClassifier.class_index` and `CounterfactualModel.class_index` share it (they were two copies)."""
    from phenolens.data.containers import class_by_name

    names = ["DMSO", "2", "taxol"]
    assert class_by_name("taxol", names) == 2 and class_by_name("2", names) == 1
    with pytest.raises(PhenolensError, match="unknown target class '0'; the model knows DMSO, 2, taxol"):
        class_by_name("0", names)
    assert find_class("0", names) == 0
