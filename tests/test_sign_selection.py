"""Node selection (Algorithm 1) and co-occurrence statistics against brute force on a hand-made network."""

import itertools

import numpy as np
import pytest
import torch
from sign_networks import HandMade

from phenolens.explain.sign.dictionary import SignDictionary
from phenolens.explain.sign.gmm import GaussianDictionary
from phenolens.explain.sign.graph import InferenceGraphBuilder
from phenolens.explain.sign.layers import OUTPUT

pytestmark = pytest.mark.usefixtures("one_thread")

LAYER1_MEANS = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [2.0, 0.0]])
LAYER2_MEANS = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 3.0], [2.0, 2.0], [5.0, 1.0]])


@pytest.fixture(scope="module")
def setup():
    model = HandMade().eval()
    rng = np.random.default_rng(0)
    images = rng.choice([-1.0, 0.0, 1.0, 2.0], p=[0.35, 0.2, 0.3, 0.15], size=(40, 1, 7, 7)).astype(np.float32)
    dictionaries = {
        "layer1": GaussianDictionary.fixed(torch.tensor(LAYER1_MEANS, dtype=torch.float32), 0.4),
        "layer2": GaussianDictionary.fixed(torch.tensor(LAYER2_MEANS, dtype=torch.float32), 0.8),
    }
    dictionary = SignDictionary.from_parts(model, dictionaries, 2, torch.zeros(1, 1, 7, 7))
    builder = InferenceGraphBuilder(dictionary, nodes_per_layer=2).fit(images)
    return model, images, builder


def brute_force_words(model, images):
    """Words by explicit nearest mean (equal variances, uniform priors), per image and position."""
    with torch.no_grad():
        x = torch.tensor(images)
        a1 = model.layer1(x).numpy()
        a2 = model.layer2(model.layer1(x)).numpy()
        out = torch.softmax(model(x), 1).numpy()
    w1 = ((a1.transpose(0, 2, 3, 1)[..., None, :] - LAYER1_MEANS) ** 2).sum(-1).argmin(-1)
    w2 = ((a2.transpose(0, 2, 3, 1)[..., None, :] - LAYER2_MEANS) ** 2).sum(-1).argmin(-1)
    return w1, w2, out.argmax(1)


def field(p):
    """Positions of layer1 read by layer2 position p (3x3 window, stride 2, padding 1), clipped to 7x7."""
    return [(y, x) for y in range(2 * p[0] - 1, 2 * p[0] + 2) for x in range(2 * p[1] - 1, 2 * p[1] + 2) if 0 <= y < 7 and 0 <= x < 7]


def brute_force_graph(w1, w2, top, omega, z, smoothing=1.0):
    """Algorithm 1 with every count taken by explicit loops over images, positions and fields."""
    k1, k2 = len(LAYER1_MEANS), len(LAYER2_MEANS)
    pairs_21 = np.zeros((k2, k1))
    for n in range(len(w1)):
        for p in itertools.product(range(4), range(4)):
            for q in field(p):
                pairs_21[w2[n][p], w1[n][q]] += 1
    pairs_o2 = np.zeros((2, k2))
    for n in range(len(w1)):
        for p in itertools.product(range(4), range(4)):
            pairs_o2[top[n], w2[n][p]] += 1
    marg1 = np.bincount(w1.ravel(), minlength=k1) + smoothing
    marg2 = np.bincount(w2.ravel(), minlength=k2) + smoothing
    ratio_21 = np.log((pairs_21 + smoothing) / (pairs_21 + smoothing).sum(1, keepdims=True) / (marg1 / marg1.sum()))
    ratio_o2 = np.log((pairs_o2 + smoothing) / (pairs_o2 + smoothing).sum(1, keepdims=True) / (marg2 / marg2.sum()))

    def S(chosen, t, ratio, upper, lower, fields):  # noqa: N802 - the paper's name
        total = 0.0
        for n in omega:
            for p in np.ndindex(*upper[n].shape):
                if upper[n][p] in chosen:
                    total += sum(ratio[upper[n][p], t] for q in fields(p) if lower[n][q] == t)
        return total

    def best_subset(candidates, score):
        """Exhaustive search over every z-subset of the occurring words for the largest total S."""
        return max(itertools.combinations(candidates, min(z, len(candidates))), key=lambda subset: sum(score[t] for t in subset))

    every = lambda p: list(itertools.product(range(4), range(4)))  # noqa: E731 - the output reads all of layer2
    cls = top[omega[0]]
    top_maps = {n: np.full((1, 1), top[n]) for n in omega}
    occurring2 = sorted({w2[n][p] for n in omega for p in np.ndindex(4, 4)})
    score2 = {t: S({cls}, t, ratio_o2, top_maps, w2, every) for t in occurring2}
    chosen2 = best_subset(occurring2, score2)
    occurring1 = sorted({w1[n][q] for n in omega for p in np.ndindex(4, 4) if w2[n][p] in chosen2 for q in field(p)})
    score1 = {t: S(set(chosen2), t, ratio_21, w2, w1, field) for t in occurring1}
    chosen1 = best_subset(occurring1, score1)
    edges = {(s, t): S({s}, t, ratio_21, w2, w1, field) for s in chosen2 for t in chosen1}
    return set(chosen2), score2, set(chosen1), score1, edges


def test_words_match_brute_force(setup):
    model, images, builder = setup
    w1, w2, top = brute_force_words(model, images)
    np.testing.assert_array_equal(builder.maps_.words["layer1"], w1)
    np.testing.assert_array_equal(builder.maps_.words["layer2"], w2)
    np.testing.assert_array_equal(builder.maps_.words[OUTPUT].ravel(), top)


@pytest.mark.parametrize("cls", [0, 1])
def test_class_graph_matches_brute_force(setup, cls):
    model, images, builder = setup
    w1, w2, top = brute_force_words(model, images)
    omega = np.flatnonzero(top == cls)
    assert len(omega) > 3
    chosen2, score2, chosen1, score1, edges = brute_force_graph(w1, w2, top, omega, z=2)
    graph = builder.class_graph(cls)
    assert {n.word for n in graph.nodes_of("layer2")} == chosen2
    assert {n.word for n in graph.nodes_of("layer1")} == chosen1
    for node in graph.nodes_of("layer2"):
        assert node.score == pytest.approx(score2[node.word], rel=1e-9)
    for node in graph.nodes_of("layer1"):
        assert node.score == pytest.approx(score1[node.word], rel=1e-9)
    weights = {(int(e.upper.split(":")[1]), int(e.lower.split(":")[1])): e.weight for e in graph.edges if e.upper.startswith("layer2")}
    assert weights.keys() == edges.keys()
    for pair, weight in edges.items():
        assert weights[pair] == pytest.approx(weight, rel=1e-9, abs=1e-12)


def test_image_graph_uses_only_that_image(setup):
    model, images, builder = setup
    w1, w2, top = brute_force_words(model, images)
    chosen2, score2, chosen1, _, _ = brute_force_graph(w1, w2, top, np.array([5]), z=2)
    graph = builder.image_graph(images[5])
    assert graph.kind == "image"
    assert {n.word for n in graph.nodes_of("layer2")} == chosen2
    assert {n.word for n in graph.nodes_of("layer1")} == chosen1


def test_classes_named_with_digits_are_found_by_name(setup):
    """Class folders named 1 and 2: `--class 2` (and `--class all`, which passes names) read '2' as index 2 and failed,
    and '1' as index 1, the class named '2'. A class name wins; a number that names no class is still an index."""
    import copy

    _, _, builder = setup
    named = copy.copy(builder)
    named.class_names = ["1", "2"]
    assert named.class_index("1") == 0 and named.class_index("2") == 1
    assert named.class_index("0") == 0 and named.class_index(1) == 1  # indices where no class has that name
    graph = named.class_graph("2")
    assert graph.label == "2" and graph.nodes[0].key == "output:1"
    assert [n.key for n in graph.nodes] == [n.key for n in builder.class_graph(1).nodes]
