"""Regenerate src/phenolens/data/registry.json from a mirror's MANIFEST.tsv.

Usage: python scripts/build_registry.py ../shared/data/MANIFEST.tsv

The registry holds metadata only (paths, sizes, sha256, public URLs); never data.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from urllib.parse import quote

RAW = "https://raw.githubusercontent.com"

DATASETS = {
    "bbbc021-profiles": {
        "title": "BBBC021 per-well mean CellProfiler profiles (MCF-7, 38 compounds)",
        "kind": "profiles",
        "licence": "BSD-style (cytominergallery LICENSE)",
        "citation": "Ljosa V, Caie PD, et al. Comparison of methods for image-based profiling of "
        "cellular morphological responses to small-molecule treatment. J Biomol Screen 18:1321 (2013).",
        "repository": "cytomining/cytominergallery",
        "commit": "05d496f1e0bb80a9f887ae8ea0e47181ade179ff",
        "upstream": {"LICENSE": "LICENSE", "*": "inst/extdata/{name}"},
    },
    "lincs-plate": {
        "title": "LINCS Pilot 1 Cell Painting plate SQ00015054 (A549), normalized + feature-selected",
        "kind": "profiles",
        "licence": "BSD-3 (cytominer-eval) / CC0 (lincs-cell-painting)",
        "citation": "Way GP, Natoli T, et al. Morphology and gene expression profiling provide "
        "complementary information for mapping cell state. Cell Systems 13:911 (2022).",
        "repository": "cytomining/cytominer-eval",
        "commit": "643d3e7fc97464a1b45a4642fa921cc22269b118",
        "upstream": {
            "LICENSE": "LICENSE",
            "repurposing_info_external_moa_map_resolved.tsv": RAW + "/broadinstitute/lincs-cell-painting/06187012/metadata/moa/{name}",
            "*": "cytominer_eval/example_data/compound/{name}",
        },
    },
    "bbbc013": {
        "title": "BBBC013 U2OS FKHR-GFP translocation single-cell crops (piximi example project)",
        "kind": "images",
        "licence": "BBBC013 CC-BY 3.0; piximi BSD",
        "citation": "Ljosa V, Sokolnicki KL, Carpenter AE. Annotated high-throughput microscopy "
        "image sets for validation. Nat Methods 9:637 (2012); piximi example project.",
        "repository": "piximi/piximi",
        "commit": "3cbf96f01d2a0a6257609920cbb8644f6c0b6086",
        "upstream": {
            "BBBC013ExampleProject.json": "src/data/exampleProjects/{name}",
            "LICENSE_piximi": "LICENSE",
        },
        # crops/ and labels.csv are decoded from the project JSON by phenolens.data.piximi.
        "derived_from": "BBBC013ExampleProject.json",
    },
    "mitocheck": {
        "title": "MitoCheck HeLa H2B-GFP nuclei, 16 phenotype classes (64x64)",
        "kind": "images",
        "licence": "CC-BY 4.0",
        "citation": "Neumann B, Walter T, et al. Phenotypic profiling of the human genome by "
        "time-lapse microscopy reveals cell division genes. Nature 464:721 (2010); "
        "WayScience/phenotypic_profiling.",
        "repository": "WayScience/phenotypic_profiling",
        "commit": "92e4025d83b556194ebabf5d71f598b9b66a12a7",
        "upstream": {
            "LICENSE": "LICENSE",
            "*": "6.single_cell_images/mitocheck_single_cell_sample_images/{name}",
        },
    },
    "bbbc021-cells": {
        "title": "BBBC021 MCF-7 single-cell crops: DMSO vs protein-synthesis inhibitors",
        "kind": "images",
        "licence": "BBBC021 terms (Broad Bioimage Benchmark Collection)",
        "citation": "Caie PD, et al. High-content phenotypic profiling of drug response signatures "
        "across distinct cancer cells. Mol Cancer Ther 9:1913 (2010); Ljosa et al. Nat Methods 2012.",
        "repository": "Ottohesten/02466-Cell-Profiling",
        "commit": "03cdaed38b3da81769b2055d2c409a040bf60e66",
        "upstream": {"*": "data_subset/{name}"},
    },
    "echo-pulses": {
        "title": "Real ultrasonic A-scans (5 MHz pulse-echo) from the US-CNN study",
        "kind": "signals",
        "licence": "MIT",
        "citation": "Shpigler A, Mor E, Bar-Hillel A. Detection of overlapping ultrasonic echoes "
        "with deep neural networks. Ultrasonics 119:106598 (2022).",
        "repository": "alonshpigler/US-CNN",
        "commit": "9bb3d90e87ecae6ce6d6070eb2fd35e5d8fce748",
        # Upstream stores pickled arrays; phenolens never unpickles, so the .npy files exist
        # only in a mirror that converted them.
        "upstream": {
            "LICENSE": "LICENSE",
            "reference_signal_ultem_water.txt": "Data/RealPhantoms/ref_signals/{name}",
            "*.json": "Data/RealPhantoms/ref_signals/{name}",
        },
    },
}

FASHION_MNIST = {
    "title": "Fashion-MNIST (Zalando), 60,000 + 10,000 28x28 grayscale images, 10 classes",
    "kind": "images",
    "licence": "MIT",
    "citation": "Xiao H, Rasul K, Vollgraf R. Fashion-MNIST: a novel image dataset for "
    "benchmarking machine learning algorithms. arXiv:1708.07747 (2017).",
    "repository": "zalandoresearch/fashion-mnist",
    "commit": "master",
    "system_dir": "/usr/share/datasets/fashion-mnist",
    "files": [
        [f"fashion-mnist/{name}", sha, size, f"{RAW}/zalandoresearch/fashion-mnist/master/data/fashion/{name}"]
        for name, sha, size in [
            ("train-images-idx3-ubyte.gz", "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7", 26421856),
            ("train-labels-idx1-ubyte.gz", "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056", 29491),
            ("t10k-images-idx3-ubyte.gz", "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa", 4422079),
            ("t10k-labels-idx1-ubyte.gz", "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05", 5125),
        ]
    ],
}


def upstream_url(spec: dict, relative: str) -> str | None:
    name = relative
    table = spec["upstream"]
    base = Path(relative).name
    template = table.get(relative) or table.get(base)
    if template is None and "*.json" in table and relative.endswith(".json"):
        template = table["*.json"]
    if template is None:
        template = table.get("*")
    if template is None:
        return None
    path = template.format(name=name)
    if path.startswith("http"):
        return path
    return f"{RAW}/{spec['repository']}/{spec['commit']}/{quote(path)}"


def main(manifest: str) -> None:
    registry: dict[str, dict] = {}
    with open(manifest) as stream:
        rows = list(csv.DictReader(stream, delimiter="\t"))
    for name, spec in DATASETS.items():
        files = []
        for row in rows:
            folder, _, relative = row["path"].partition("/")
            if folder != name:
                continue
            derived = spec.get("derived_from") and (relative.startswith("crops/") or relative == "labels.csv")
            url = None if derived else upstream_url(spec, relative)
            files.append([row["path"], row["sha256"], int(row["bytes"]), url])
        entry = {k: v for k, v in spec.items() if k != "upstream"}
        entry["files"] = files
        registry[name] = entry
    registry["fashion-mnist"] = FASHION_MNIST
    out = Path(__file__).resolve().parents[1] / "src/phenolens/data/registry.json"
    out.write_text(json.dumps(registry, indent=0, sort_keys=False) + "\n")
    print(f"wrote {out} ({sum(len(v['files']) for v in registry.values())} files)")


if __name__ == "__main__":
    main(sys.argv[1])
