"""The SIGN explorer view: class and image graphs of a real (tiny) fit on MitoCheck nuclei, in a real browser."""

from __future__ import annotations

import dataclasses

import pytest

from phenolens.cli.main import run
from phenolens.explain.sign.layers import OUTPUT
from phenolens.report import Report, Section
from phenolens.report.explorer.sign import sign_graph_view

HOSTILE = "<img src=x onerror=alert(1)></script><script>alert(2)</script>"
GRAPH = ".pl-figure[data-key=graph]"


@pytest.fixture(scope="module")
def graph_runs(sign_workspace):
    root, _, _ = sign_workspace
    out = root / "explorer-graphs"
    assert run(["sign", "graph", str(root / "fit"), "--class", "Interphase", "--out", str(out / "class")]) == 0
    image = root / "crops" / "Prometaphase" / "03.npy"
    assert run(["sign", "graph", str(root / "fit"), "--image", str(image), "--out", str(out / "image")]) == 0
    return out


@pytest.fixture(scope="module")
def fitted(sign_workspace):
    from phenolens.cli.sign import _read_source
    from phenolens.core.runs import load_run
    from phenolens.explain.sign.pipeline import load_sign

    root, _, _ = sign_workspace
    return load_sign(load_run(root / "fit"), _read_source, None)


def test_view_items_are_the_graphs_words_and_strongest_edges(fitted):
    builder = fitted.builder
    graph = builder.class_graph("Interphase")
    view = sign_graph_view(graph, builder, fitted.display())
    nodes = {key for key in view.items if key.startswith("node:")}
    assert nodes == {f"node:{n.key}" for n in graph.nodes}
    edges = {key for key in view.items if key.startswith("edge:")}
    assert edges == {f"edge:{e.lower}>{e.upper}" for e in graph.strongest_edges(2)}
    output = view.items[f"node:{OUTPUT}:{builder.class_index('Interphase')}"]
    assert output["label"] == f"{OUTPUT}: Interphase" and 1 <= len(output["examples"]) <= 6
    edge = view.items[next(iter(edges))]
    assert edge["ratio"] == pytest.approx(2.718281828 ** edge["log_ratio"], rel=1e-2)
    assert len(view.sheets["patch"].tiles) == sum(len(view.items[k]["examples"]) for k in nodes)


def _click_marker(watched, name: str, index: int = 0) -> str:
    """Click the `index`-th marker of the trace called `name` ("word ..." or "edge ...")."""
    page = watched.page
    page.locator(GRAPH).first.scroll_into_view_if_needed()
    traces = page.locator(f"{GRAPH} .scatterlayer .trace")
    for number in range(traces.count()):
        points = traces.nth(number).locator(".points path.point")
        if points.count() and page.evaluate("(n) => n.__data__[0].trace.name", traces.nth(number).element_handle()).startswith(name):
            point = points.nth(index)
            point.scroll_into_view_if_needed()
            point.click(force=True)  # at the marker's centre as measured now (the panel may have moved the page); Plotly's layer takes it
            data = point.evaluate("node => node.__data__ && node.__data__.data")
            return str(data[0] if isinstance(data, list) else data)
    raise AssertionError(f"no trace named {name}")


@pytest.mark.slow
def test_clicking_a_word_and_an_edge_of_a_class_graph(graph_runs, watched_page, tmp_path):
    from browser import pixel_variance

    watched = watched_page(graph_runs / "class" / "report.html")
    word = _click_marker(watched, "word")
    assert word.startswith("node:") and watched.shown_id() == word
    assert watched.page.locator(".pl-panel .pl-examples canvas").count() >= 1
    edge = _click_marker(watched, "edge")
    assert edge.startswith("edge:") and watched.shown_id() == edge
    assert "log P(lower|upper)/P(lower)" in watched.page.locator(".pl-panel").inner_text()
    watched.page.locator(".pl-panel a.pl-row-link").first.click()  # follow the edge to its upper word
    assert watched.shown_id() == "node:" + edge.split(">", 1)[1]
    assert pixel_variance(watched.page.screenshot(path=str(tmp_path / "sign-class.png"))) > 100
    watched.assert_clean()


@pytest.mark.slow
def test_an_image_graph_shows_where_the_word_occurs(graph_runs, watched_page, tmp_path):
    watched = watched_page(graph_runs / "image" / "report.html")
    word = _click_marker(watched, "word", index=1)  # index 0 is the output word, which has no positions
    assert watched.shown_id() == word
    assert "where it occurs in the analysed image" in watched.page.locator(".pl-panel").inner_text()
    watched.page.screenshot(path=str(tmp_path / "sign-image.png"))
    watched.assert_clean()
    static = watched_page(graph_runs / "image" / "report.html", javascript=False, wait_ready=False)
    assert static.page.locator("figure img").first.is_visible()


@pytest.mark.slow
def test_hostile_labels_render_as_text(fitted, watched_page, tmp_path):
    builder = fitted.builder
    graph = dataclasses.replace(builder.class_graph("Interphase"), label=HOSTILE)
    report = Report(HOSTILE)
    report.add(Section(HOSTILE).view(sign_graph_view(graph, builder, fitted.display())))
    path = tmp_path / "report.html"
    path.write_text(report.render())
    watched = watched_page(path)
    assert watched.page.locator(".pl-explorer .caption").first.inner_text().startswith("Class graph: " + HOSTILE)
    _click_marker(watched, "word")
    watched.assert_clean()
