"""`phenolens report combine`: an index page linking copies of several runs' pages, through RunWriter."""

from __future__ import annotations

import json

import pytest

from phenolens.cli.main import run

EVALUATE = ["--controls", "Metadata_PertType == 'control'", "--treatment-column", "Metadata_Treatment", "--moa-column", "Metadata_MoA"]
FAST = ["--moa-repeats", "2", "--classifiers", "lr", "--jobs", "1"]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Two `profile evaluate` runs of a small synthetic screen (one at a stricter FDR)."""
    from phenolens.profiling.synthetic import synthetic_screen

    root = tmp_path_factory.mktemp("combine")
    synthetic_screen(plates=6, controls_per_plate=6, moas=2, compounds_per_moa=5, doses=1, features=8, effect=6.0, seed=2).to_csv(
        root / "screen.csv", index=False
    )
    runs = [root / "loose", root / "strict"]
    for out, fdr in zip(runs, ("0.1", "0.01")):
        assert run(["profile", "evaluate", str(root / "screen.csv"), *EVALUATE, *FAST, "--fdr", fdr, "--out", str(out)]) == 0
    return runs


def test_combine_links_a_copy_of_each_runs_page(two_runs, tmp_path):
    from phenolens.core.runs import load_run

    site = tmp_path / "site"
    assert run(["report", "combine", *map(str, two_runs), "--title", "Screen <b>42</b>", "--out", str(site)]) == 0
    index = (site / "index.html").read_text()
    pages = sorted(site.glob("runs/*/report.html"))
    assert [p.parent.name for p in pages] == ["01-loose", "02-strict"]
    for page, source in zip(pages, two_runs):
        assert page.read_bytes() == (source / "report.html").read_bytes()
        assert f'href="runs/{page.parent.name}/report.html"' in index
    assert "Screen &lt;b&gt;42&lt;/b&gt;" in index and "<b>42" not in index
    assert (site / "report.html").is_file()  # like every run; index.html is the site's entry
    combined = load_run(site)
    assert combined.command == "report combine" and combined.metrics["n_runs"] == 2
    assert [entry["command"] for entry in json.loads((site / "metrics.json").read_text())["runs"]] == ["profile evaluate"] * 2
    assert combined.settings[0].title == "Screen <b>42</b>"


def test_headline_metrics_lists_top_level_then_nested_scalars():
    from phenolens.report.explorer.combine import headline_metrics

    table = headline_metrics({"accuracy": 0.91234, "confusion": [[1]], "anomaly": {"map": 0.5, "curve": [1, 2]}, "name": "x"}, limit=3)
    assert table.values.tolist() == [["accuracy", "0.9123"], ["name", "x"], ["anomaly.map", "0.5"]]


def test_combine_refuses_a_folder_that_is_not_a_run_or_given_twice(two_runs, tmp_path, capsys):
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    assert run(["report", "combine", str(two_runs[0]), str(stranger), "--out", str(tmp_path / "a")]) == 2
    assert "stranger" in capsys.readouterr().err and not (tmp_path / "a").exists()
    assert run(["report", "combine", str(two_runs[0]), str(two_runs[0]), "--out", str(tmp_path / "b")]) == 2
    assert "given twice" in capsys.readouterr().err and not (tmp_path / "b").exists()
    assert run(["report", "combine", str(two_runs[0]), "--out", str(two_runs[0]), "--overwrite"]) == 2  # never over an input
    assert "report.html" in {path.name for path in two_runs[0].iterdir()} and not (two_runs[0] / "runs").exists()
