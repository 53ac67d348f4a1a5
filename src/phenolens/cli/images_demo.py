"""Demo step "images": train a small classifier on BBBC013 and explain it (a known-answer check).

BBBC013's class is where FKHR-GFP sits relative to the nucleus, so a faithful map of a
NuclearGFP crop must put its GFP evidence inside the DNA-defined nucleus and a CytoplasmicGFP
map outside it. Sized to finish in about a minute on two cores: one held-out split, a VGG at
quarter width with a stride-2 stem on 64 px crops. That stem costs a quarter of a full-resolution
one but gives coarser, checkerboard gradients: the known-answer numbers of the issue come from the
full-resolution model of benchmarks/images_targets.py, not from this demo.
"""

from __future__ import annotations

from pathlib import Path

DEMO_TRAINING = {"arch": "vgg", "width": 0.25, "stem_stride": 2, "size": 64, "epochs": 15, "batch_size": 32, "seed": 0, "test_fraction": 0.25}
DEMO_EXPLAINING = {
    "methods": ("saliency", "gradcam", "integrated_gradients"),
    "n_steps": 24,
    "nucleus_channel": "DNA",
    "reporter_channel": "FKHR-GFP",
    "sanity_images": 16,
}


def images_demo(out: Path) -> tuple[list, dict]:
    """Train on the labelled BBBC013 crops (unlabelled ones as pseudo-labels), explain the held-out crops.

    Parameters
    ----------
    out : Path
        The demo's output folder; the model goes to ``out/images/model``.

    Returns
    -------
    tuple of (list of Section, dict)
        The report section and the demo's metrics.
    """
    from phenolens.data import load
    from phenolens.explain.attribution import AttributionSettings
    from phenolens.explain.images import explain_images
    from phenolens.report.attribution import explanation_section
    from phenolens.report.classifier import training_section
    from phenolens.report.explorer.images import cell_ids
    from phenolens.report.html import Section
    from phenolens.training.evaluation import train_and_evaluate
    from phenolens.training.settings import ImageTrainingSettings

    images = load("bbbc013")
    run = train_and_evaluate(images, ImageTrainingSettings(**DEMO_TRAINING))
    folder = out / "images"
    run.classifier.save(folder / "model")
    held_out = images.labelled().subset(run.test_index)
    explanation = explain_images(run.classifier, held_out, AttributionSettings(**DEMO_EXPLAINING))
    parent = Section("Images: BBBC013 FKHR-GFP translocation (known answer)")
    parent.text(
        "The class of a BBBC013 cell is where FKHR-GFP sits relative to the nucleus: a faithful explanation of a NuclearGFP crop puts its "
        "positive GFP attribution inside the nucleus (Otsu mask of the DNA channel), one of a CytoplasmicGFP crop outside it."
    )
    parent.add(training_section(run, images, "Classifier"))
    features = run.classifier.embed(held_out)
    parent.add(explanation_section(explanation, "Explanations of the held-out crops", features, cell_ids(held_out.meta, len(held_out))))
    explained = explanation.metrics()
    metrics = {
        "macro_f1": run.metrics["macro_f1"],
        "accuracy": run.metrics["accuracy"],
        "nucleus_mass_fraction": explained["nucleus_mass_fraction"],
        "faithfulness": explained["faithfulness"],
        "channel_importance": explained["channel_importance"],
        "sanity_ssim": explained["sanity_ssim"],
    }
    return [parent], metrics
