"""`phenolens sign fit | graph | hmm | train-mlp | watermark-experiment`: SIGN inference graphs and paths."""

from __future__ import annotations

from pathlib import Path

import typer

from phenolens.cli.image_inputs import CHANNELS, DATASET, FOLDER, MANIFEST, UNLABELLED, read_images
from phenolens.cli.parsing import integer_list

app = typer.Typer(help="SIGN: visual-word dictionaries, class and image inference graphs, MLP inference paths.", no_args_is_help=True)


def _read_source(source: dict):
    return read_images(source.get("dataset"), source.get("folder") and Path(source["folder"]), source.get("manifest") and Path(source["manifest"]),
                       source.get("channels", ""), source.get("unlabelled", ""))  # fmt: skip


@app.command("fit")
def fit(
    checkpoint: Path = typer.Argument(..., help="A `phenolens train` output folder (model.safetensors + model.json)."),
    out: Path = typer.Option(..., "--out", help="Output folder: dictionaries, split, quality table, metrics.json, report.html."),
    dataset: str = DATASET,
    folder: Path = FOLDER,
    manifest: Path = MANIFEST,
    channels: str = CHANNELS,
    unlabelled: str = UNLABELLED,
    layers: str = typer.Option("", help="Comma-separated module names to model (default: the output of every backbone stage)."),
    words: str = typer.Option("64", help="Words K per layer: one number, or one per layer."),
    loss: str = typer.Option("discriminative", help="discriminative (BoW cross-entropy) or generative (negative log-likelihood)."),
    epochs: int = typer.Option(8, help="Epochs of dictionary training."),
    nodes: int = typer.Option(3, help="Words selected per layer in graphs."),
    validation_fraction: float = typer.Option(0.3, help="Share of the labelled images kept for statistics, purity and BoW testing."),
    seed: int = typer.Option(0, help="Seed of the split, initialisation and batching."),
) -> None:
    """Fit one visual-word dictionary per layer of a trained image classifier and measure their quality."""
    from phenolens.core.outputs import atomic_output_dir, write_json
    from phenolens.explain.sign.pipeline import fit_sign, quality_section, save_sign
    from phenolens.report.html import Report
    from phenolens.training.classifier import ImageClassifier

    classifier = ImageClassifier.load(checkpoint)
    source = {"dataset": dataset, "folder": str(folder.resolve()) if folder else None, "manifest": str(manifest.resolve()) if manifest else None,
              "channels": channels, "unlabelled": unlabelled}  # fmt: skip
    images = _read_source(source)
    names = [n.strip() for n in layers.split(",") if n.strip()] or None
    counts = integer_list(words, "--words")
    result = fit_sign(classifier, images, names, counts[0] if len(counts) == 1 else counts, loss, epochs, nodes, validation_fraction, seed)
    with atomic_output_dir(out) as staging:
        save_sign(result, staging, source)
        metrics = result.metrics()
        write_json(staging / "metrics.json", metrics)
        report = Report(f"SIGN dictionaries: {images.name}", metrics=metrics)
        report.add(quality_section(result))
        report.write(staging)
    for row in metrics["layers"]:
        print(f"{row['name']}: BoW error {row['bow_error']:.3f} (max channel {row['bow_error_max_channel']:.3f}), purity {row['purity']:.3f}")
    print(f"wrote {out}")


@app.command("graph")
def graph(
    run: Path = typer.Argument(..., help="A `phenolens sign fit` output folder."),
    cls: str = typer.Option("", "--class", help="Class name for a class graph; 'all' draws every class and one image graph per class."),
    image: Path = typer.Option(None, "--image", help="An image file (tif/png/npy) for an image graph."),
    nodes: int = typer.Option(0, help="Words per layer (default: the fit's setting)."),
    out: Path = typer.Option(None, "--out", help="Output folder (default: RUN/graph-CLASS or RUN/graph-IMAGE)."),
) -> None:
    """Draw a class inference graph (Omega = validation images predicted as the class) or an image graph."""
    import numpy as np

    from phenolens.core.errors import PhenolensError
    from phenolens.core.outputs import atomic_output_dir, write_json
    from phenolens.explain.sign.drawing import write_graph
    from phenolens.explain.sign.pipeline import class_and_image_graphs, load_sign
    from phenolens.report.html import Report, Section
    from phenolens.training.preprocess import padded_array

    if bool(cls) == bool(image):
        raise PhenolensError("give exactly one of --class NAME (or 'all') and --image PATH")
    result = load_sign(run, _read_source, nodes or None)
    target = out or run / f"graph-{(cls or image.stem).replace('/', '_').replace(' ', '_')}"
    report = Report(f"SIGN graphs: {result.images.name}")
    with atomic_output_dir(target) as staging:
        if cls:
            if cls != "all":
                result.builder.class_index(cls)  # a clear error for an unknown class before any drawing
            section, summary = class_and_image_graphs(result, staging, None if cls == "all" else [cls], image_graphs=cls == "all")
            metrics = {"kind": "class", "graphs": summary}
        else:
            from phenolens.data import read_image

            raw = read_image(image)
            inputs = result.classifier.array(raw[None])
            chosen = result.builder.image_graph(inputs[0], label=image.name)
            display = padded_array(raw[None], result.classifier.size, result.classifier.channel_names)
            png, table = write_graph(chosen, result.builder, result.display(), staging, "image", image=display[0])
            section = Section("SIGN image graph").figure(png, f"Image graph of {image.name}; red dots mark where each word occurs.").table(table)
            predicted = int(result.builder.graph_maps_.predictions[0])
            metrics = {
                "kind": "image",
                "image": str(image),
                "predicted": result.classifier.class_names[predicted],
                "nodes": [n.key for n in chosen.nodes],
            }
        report.metrics = metrics
        report.add(section)
        write_json(staging / "metrics.json", metrics)
        report.write(staging)
    print(f"wrote {target} ({len(np.atleast_1d(metrics.get('graphs', [1])))} graph(s))")


def demo_step(out: Path) -> tuple[list, dict]:
    """Demo: a small ResNet on MitoCheck (at most 90 nuclei per class, central 48 px), dictionaries over
    its stages, the class graph of its best-recognised class and one image graph."""
    import numpy as np

    from phenolens.core.seeding import numpy_rng
    from phenolens.data import load
    from phenolens.explain.sign.layers import OUTPUT
    from phenolens.explain.sign.pipeline import class_and_image_graphs, fit_sign, quality_section
    from phenolens.training import fit_classifier

    mitocheck = load("mitocheck")
    rng = numpy_rng(0)
    chosen = np.concatenate([rng.permutation(np.flatnonzero(mitocheck.labels == c))[:90] for c in range(len(mitocheck.class_names))])
    images = mitocheck.subset(np.sort(chosen))
    classifier = fit_classifier(
        images, "resnet18", width=0.125, blocks=[1, 1, 1], stem_stride=2, size=48, epochs=5, batch_size=32, loss="softmax",
        augment=False, pseudo_labels=False, validation_fraction=0.15, seed=0, description="demo CNN",
    )  # fmt: skip
    result = fit_sign(classifier, images, layers=["stage1", "stage2", "stage3"], words=24, epochs=3, validation_fraction=0.35, seed=0)
    predicted = result.builder.maps_.words[OUTPUT].ravel()
    truth = result.images.labels[result.validation_index]
    best = int(np.bincount(predicted[predicted == truth], minlength=len(classifier.class_names)).argmax())
    folder = out / "sign"
    folder.mkdir(parents=True, exist_ok=True)
    section, summary = class_and_image_graphs(result, folder, [classifier.class_names[best]])
    fitted = result.metrics()
    metrics = {"images": len(images), "layers": fitted["layers"], "validation_accuracy": fitted["validation_accuracy"], "graphs": summary}
    return [quality_section(result), section], metrics


@app.command("train-mlp")
def train_mlp(
    out: Path = typer.Option(..., "--out", help="Output folder: model.safetensors + model.json (architecture 'mlp'), metrics.json."),
    dataset: str = DATASET,
    folder: Path = FOLDER,
    manifest: Path = MANIFEST,
    channels: str = CHANNELS,
    hidden: str = typer.Option("256,256,256,256", help="Units per hidden layer, comma-separated."),
    images: int = typer.Option(0, help="Train on this many labelled images (seeded sample; 0: all)."),
    epochs: int = typer.Option(50, help="Training epochs."),
    lr: float = typer.Option(1e-3, help="Adam learning rate."),
    random_labels: bool = typer.Option(False, help="Replace every label by a random one (the memorisation experiment)."),
    seed: int = typer.Option(0, help="Seed of the sample, the labels, initialisation and batching."),
) -> None:
    """Train a fully connected ReLU network (for `phenolens sign hmm`)."""
    import numpy as np

    from phenolens.core.outputs import atomic_output_dir, write_json
    from phenolens.core.seeding import numpy_rng
    from phenolens.explain.sign.paths import fit_mlp
    from phenolens.nn.weights import save_model

    data = read_images(dataset, folder, manifest, channels).labelled()
    index = numpy_rng(seed).choice(len(data), images, replace=False) if images and images < len(data) else np.arange(len(data))
    data = data.subset(index)
    classifier, labels = fit_mlp(data, integer_list(hidden, "--hidden"), epochs, lr, random_labels=random_labels, seed=seed)
    metrics = {"train_error": classifier.card.extra["train_error"], "images": len(data), "random_labels": random_labels}
    with atomic_output_dir(out) as staging:
        save_model(classifier.model, staging, classifier.card)
        np.savez(staging / "training.npz", index=index, labels=labels)  # which labelled images, with which (maybe random) labels
        write_json(staging / "metrics.json", metrics)
    print(f"training error {metrics['train_error']:.4f} on {len(data)} images; wrote {out}")


@app.command("hmm")
def hmm(
    checkpoint: Path = typer.Argument(..., help="A `phenolens sign train-mlp` output folder."),
    out: Path = typer.Option(..., "--out", help="Output folder: paths, purity per layer, junction figures, metrics.json, report.html."),
    dataset: str = DATASET,
    folder: Path = FOLDER,
    manifest: Path = MANIFEST,
    channels: str = CHANNELS,
    states: str = typer.Option("10", help="HMM states per hidden layer: one number, or one per layer."),
    images: int = typer.Option(0, help="Model this many labelled images (seeded sample; 0: all)."),
    training_images: bool = typer.Option(False, help="Use exactly the images (and labels) the MLP was trained on, e.g. its random labels."),
    epochs: int = typer.Option(10, help="Online-EM epochs."),
    example: int = typer.Option(0, help="The example whose Viterbi path is drawn as decision junctions."),
    seed: int = typer.Option(0, help="Seed of the sample and the initialisation."),
) -> None:
    """Model an MLP's hidden layers with a rectified-Gaussian HMM: Viterbi paths, purity, decision junctions."""
    import numpy as np

    from phenolens.core.errors import PhenolensError
    from phenolens.core.outputs import atomic_output_dir, write_json
    from phenolens.core.seeding import numpy_rng
    from phenolens.explain.sign.paths import MLPClassifier, fit_paths, junction_figure, layer_purity
    from phenolens.nn.weights import load_model
    from phenolens.report.html import Report, Section
    from phenolens.training.preprocess import padded_array

    model, card = load_model(checkpoint, expected_architecture="mlp")
    classifier = MLPClassifier(model, card)
    data = read_images(dataset, folder, manifest, channels).labelled()
    labels = data.labels
    if training_images:
        stored = np.load(checkpoint / "training.npz")
        if stored["index"].max() >= len(data):
            raise PhenolensError(
                f"{checkpoint / 'training.npz'}: indices beyond the {len(data)} labelled images; give the images the MLP was trained on"
            )
        data, labels = data.subset(stored["index"]), stored["labels"]
    elif images and images < len(data):
        chosen = numpy_rng(seed).choice(len(data), images, replace=False)
        data, labels = data.subset(chosen), data.labels[chosen]
    activations = classifier.hidden(data)
    counts = integer_list(states, "--states")
    sizes = counts * len(activations) if len(counts) == 1 else counts
    hmm_model, paths = fit_paths(activations, sizes, epochs, seed)
    if not 0 <= example < len(data):
        raise PhenolensError(f"--example {example} is outside the {len(data)} images")
    purity = layer_purity(paths, labels, sizes, len(data.class_names))
    metrics = {"layers": [{"name": f"hidden.{i}", "states": k, "purity": p} for i, (k, p) in enumerate(zip(sizes, purity))],
               "log_likelihood": hmm_model.log_likelihood_, "example_path": paths[example].tolist()}  # fmt: skip
    display = padded_array(data, card.normalization["size"], card.channel_names)
    section = Section("MLP inference paths (rectified-Gaussian HMM)").table(_purity_table(metrics), "Cluster purity per hidden layer")
    with atomic_output_dir(out) as staging:
        for layer in range(len(activations) - 1):
            try:
                fig = junction_figure(hmm_model, activations, paths, layer, int(paths[example, layer]), display)
            except PhenolensError as skipped:
                section.text(f"No junction at layer {layer + 1}: {skipped}")
                continue
            section.figure(fig, f"Decision junction of example {example} at hidden layer {layer + 1}.", filename=f"junction_{layer + 1}.png")
        np.savez(staging / "paths.npz", paths=paths, labels=labels)
        write_json(staging / "metrics.json", metrics)
        report = Report(f"SIGN MLP paths: {data.name}", metrics=metrics)
        report.add(section)
        report.write(staging)
    print("purity per layer: " + ", ".join(f"{p:.3f}" for p in purity))


def _purity_table(metrics: dict):
    import pandas as pd

    return pd.DataFrame(metrics["layers"])


@app.command("watermark-experiment")
def watermark_experiment(
    out: Path = typer.Option(..., "--out", help="Output folder: metrics.json (classes -> stamped, stamp_ratio), class graphs, report.html."),
    seeds: str = typer.Option("0,1", help="Seeds, comma-separated: each stamps, trains and checks anew."),
    stamped: str = typer.Option("Pullover,Shirt", help="The two Fashion-MNIST classes to stamp."),
    letter: str = typer.Option("A", help="The letter stamped (alpha 0.5, random position)."),
    train_images: int = typer.Option(24000, help="Fashion-MNIST training images for the CNN (fewer: it leans less on the letter)."),
    test_images: int = typer.Option(2000, help="Test images: half fit the dictionaries, half give the statistics."),
    cnn_epochs: int = typer.Option(12, help="CNN training epochs."),
    words: int = typer.Option(64, help="Words per modelled layer."),
    epochs: int = typer.Option(4, help="Dictionary training epochs."),
    nodes: int = typer.Option(5, help="Words selected per layer."),
) -> None:
    """Stamp a letter into two Fashion-MNIST classes, train a CNN, and check that their class graphs find it."""
    import numpy as np

    from phenolens.core.outputs import atomic_output_dir, write_json
    from phenolens.explain.sign.drawing import write_graph
    from phenolens.explain.sign.watermark import THRESHOLD
    from phenolens.explain.sign.watermark import watermark_experiment as run_experiment
    from phenolens.report.html import Report, Section

    names = tuple(n.strip() for n in stamped.split(",") if n.strip())
    per_seed, section = {}, Section("Biased data: a stamped letter")
    section.text(
        f"The letter {letter!r} is blended (alpha 0.5) at a random position into every image of {', '.join(names)}. The check: the selected "
        f"words of some modelled layer have their receptive-field centre inside the stamp box >= {THRESHOLD:g}x as often as chance "
        "(for clean images, inside a random box where a stamp would have been)."
    )
    with atomic_output_dir(out) as staging:
        for seed in integer_list(seeds, "--seeds", minimum=0):
            results, fitted, _, _ = run_experiment(seed, names, letter, n_train=train_images, n_test=test_images, cnn_epochs=cnn_epochs,
                                                   words=words, dictionary_epochs=epochs, nodes_per_layer=nodes)  # fmt: skip
            per_seed[seed] = results
            display = fitted.display()
            for name in names:
                if name in results:
                    png, _ = write_graph(fitted.builder.class_graph(name), fitted.builder, display, staging, f"seed{seed}_{name}")
                    section.figure(png, f"Seed {seed}: class graph of the stamped class {name}.")
        classes = sorted({name for results in per_seed.values() for name in results})
        summary = {
            name: {
                "stamped": name in names,
                "stamp_ratio": float(np.mean([r[name]["stamp_ratio"] for r in per_seed.values() if name in r])),
                "stamp_ratio_per_seed": {str(s): r[name]["stamp_ratio"] for s, r in per_seed.items() if name in r},
                "passes_per_seed": {str(s): r[name]["passes"] for s, r in per_seed.items() if name in r},
            }
            for name in classes
        }
        check = {
            "stamped_pass_every_seed": all(all(v["passes_per_seed"].values()) for v in summary.values() if v["stamped"]),
            "clean_fail_every_seed": all(not any(v["passes_per_seed"].values()) for v in summary.values() if not v["stamped"]),
        }
        metrics = {"classes": summary, "check": check, "seeds": {str(s): r for s, r in per_seed.items()}}
        import pandas as pd

        table = pd.DataFrame(
            [
                {"class": k, "stamped": v["stamped"], **{f"ratio seed {s}": x for s, x in v["stamp_ratio_per_seed"].items()}}
                for k, v in summary.items()
            ]
        )
        section.table(table, "Stamp ratio (observed / chance) of the best layer, per class and seed")
        write_json(staging / "metrics.json", metrics)
        report = Report("SIGN watermark experiment (Fashion-MNIST)", metrics=metrics)
        report.add(section)
        report.write(staging)
    print(
        f"stamped classes pass on every seed: {check['stamped_pass_every_seed']}; clean classes fail on every seed: {check['clean_fail_every_seed']}"
    )
