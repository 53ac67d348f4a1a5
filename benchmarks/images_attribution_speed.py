"""Speed of phenolens attribution against a plain per-image loop over Captum (same run, same machine).

Explains MitoCheck crops with saliency, Grad-CAM and occlusion twice: with `phenolens.explain.attribute`
(batches of images per Captum call, many occlusion windows per forward pass) and with one Captum call
per image with Captum's default arguments (Grad-CAM maps get the same bilinear upsampling; occlusion
uses Captum's default baseline 0, which is phenolens's "mean" baseline after normalisation). Prints
the max abs difference of the maps after the same per-image max-abs normalisation (target <= 1e-5)
and the speed ratio (target >= 5).

    python benchmarks/images_attribution_speed.py [--model runs/mitocheck] [--images 1000] [--small] [--check]

Targets: the worst difference <= 1e-5 in every mode; the speed ratio >= 5 on the full run (with --small,
64 crops on a coarse grid, only >= 1: batching must not be slower). --check exits with status 1 on a miss.

Float32 convolutions of a batch (oneDNN) and of one small image (PyTorch's native im2col + GEMM)
round differently (~1e-7 relative); where a ReLU input lies that close to 0 the gate flips and the
saliency map of that image changes visibly (1.4 % of the images, up to 0.16). Flagging near-ties and
recomputing those images does not pay: every image has ~200k pre-activations and some lie within
float32 noise of 0 in nearly all of them. phenolens therefore runs the saliency forward pass of a
batch with the convolution backend a one-image call gets (`OneImageBackendConv2d`): the native
backend convolves a batch with the same per-image GEMMs, so the gates are bitwise the per-image ones
and the maps agree to backward-pass rounding (~1e-6). The price: that forward pass is as slow per
image as the per-image one, so saliency gains less than the other methods. The script prints how
many images agree to 1e-5 per method.

Batches: 32 images per Captum call and 128 inputs per forward pass (4 occlusion windows of 32
images); profiled, 512-input passes were ~1.3x slower per input on this 2-core CPU (activations no
longer fit in cache). Under `seed_everything` (deterministic algorithms) PyTorch fills every new
tensor with NaN; `attribute` switches that fill off while it runs (~30 % of an occlusion pass), the
per-image loop runs as a user's loop would, with the process settings.

Both paths run with the process's torch threads (printed; `make` sets OMP_NUM_THREADS=2 on the 2-core
machine). Batches use both cores where one small image cannot, so with one thread the ratio is lower:
measured on 1,000 crops, 7.0x with 2 threads (5.8x in an earlier run with the same batching: shared-machine noise) and 3.9x
with 1 thread; worst difference 7.4e-6 either way.

Without --model the network is a seeded, untrained ResNet-18 (speed and agreement do not depend on
the weights); pass a `phenolens train` folder to explain a trained one.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from targets import Targets, add_check_option  # noqa: E402


def per_image_reference(model, inputs, targets, method, window, stride, layer, size):
    from captum.attr import LayerAttribution, LayerGradCam, Occlusion, Saliency

    maps = []
    for x, t in zip(inputs, targets.tolist()):
        x = x[None].clone().requires_grad_(method != "occlusion")
        if method == "saliency":
            out = Saliency(model).attribute(x, target=t)
        elif method == "gradcam":
            out = LayerAttribution.interpolate(LayerGradCam(model, layer).attribute(x, target=t), (size, size), "bilinear").expand_as(x)
        else:
            out = Occlusion(model).attribute(x, sliding_window_shapes=(1, window, window), strides=(1, stride, stride), target=t)
        maps.append(out.detach())
    return torch.cat(maps).numpy()


def unit(maps: np.ndarray) -> np.ndarray:
    return maps / np.maximum(np.abs(maps).reshape(len(maps), -1).max(axis=1), 1e-12)[:, None, None, None]


def main() -> None:
    from phenolens.core.seeding import numpy_rng, seed_everything
    from phenolens.data import load
    from phenolens.explain.attribution import AttributionSettings, attribute, find_layers
    from phenolens.nn.backbones import build_backbone
    from phenolens.training.classifier import ImageClassifier
    from phenolens.training.preprocess import ChannelNormalization

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="", help="a `phenolens train` folder trained on MitoCheck (default: seeded untrained ResNet-18)")
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--window", type=int, default=16)
    parser.add_argument("--stride", type=int, default=16)
    parser.add_argument("--small", action="store_true", help="64 crops, a coarser occlusion grid: a seconds-long CI check")
    parser.add_argument("--out", default="", help="also write the results as JSON here")
    add_check_option(parser)
    args = parser.parse_args()
    if args.small:
        args.images, args.window, args.stride = 64, 32, 32
    crops = load("mitocheck")
    crops = crops.subset(np.sort(numpy_rng(0).choice(len(crops), min(args.images, len(crops)), replace=False)))
    if args.model:
        classifier = ImageClassifier.load(args.model)
    else:
        seed_everything(0)
        model = build_backbone("resnet18", in_channels=1, n_classes=len(crops.class_names), width=0.25, stem_stride=2).eval()
        classifier = ImageClassifier(model, crops.class_names, crops.channel_names, 64, ChannelNormalization.fit(crops.padded(64)))
    inputs = classifier.tensor(crops)
    targets = classifier.predict(crops)
    settings = AttributionSettings(window=args.window, stride=args.stride, baseline="mean", batch_size=32, forward_batch=128)
    (layer,) = find_layers(classifier.model, None)  # a single network
    rows = []
    print(f"{len(crops)} MitoCheck crops, {classifier.architecture}, torch threads {torch.get_num_threads()}")
    print(f"{'method':<10} {'phenolens s':>12} {'per-image s':>12} {'ratio':>7} {'max |diff|':>11}")
    for method in ("saliency", "gradcam", "occlusion"):
        # Warm both paths up first (one-off kernel and hook set-up must not count against either).
        attribute(classifier, crops.subset(np.arange(2)), method, targets[:2], settings)
        per_image_reference(classifier.model, inputs[:2], targets[:2], method, args.window, args.stride, layer, classifier.size)
        started = time.perf_counter()
        ours = attribute(classifier, crops, method, targets, settings)
        batched = time.perf_counter() - started
        started = time.perf_counter()
        theirs = per_image_reference(classifier.model, inputs, targets, method, args.window, args.stride, layer, classifier.size)
        looped = time.perf_counter() - started
        per_image = np.abs(unit(ours) - unit(theirs)).reshape(len(crops), -1).max(axis=1)
        difference, agreeing = float(per_image.max()), int((per_image <= 1e-5).sum())
        rows.append(
            {
                "method": method,
                "phenolens_s": batched,
                "per_image_s": looped,
                "ratio": looped / batched,
                "max_abs_diff": difference,
                "images_within_1e-5": agreeing,
            }
        )
        print(f"{method:<10} {batched:12.2f} {looped:12.2f} {looped / batched:7.1f} {difference:11.2e}  ({agreeing}/{len(crops)} images <= 1e-5)")
    total = sum(r["per_image_s"] for r in rows) / sum(r["phenolens_s"] for r in rows)
    worst = max(r["max_abs_diff"] for r in rows)
    print(f"overall speed ratio {total:.1f} (target >= 5); worst max abs difference {worst:.2e} (target <= 1e-5)")
    if args.out:
        with open(args.out, "w") as stream:
            json.dump({"images": len(crops), "rows": rows, "overall_ratio": total, "worst_max_abs_diff": worst}, stream, indent=2)
    targets = Targets(f"images_attribution_speed{' --small' if args.small else ''}")
    targets.expect("worst max abs difference to per-image Captum", worst, "<=", 1e-5)
    targets.expect("overall speed ratio" + (" (small)" if args.small else ""), total, ">=", 1.0 if args.small else 5.0)
    sys.exit(targets.finish(args.check))


if __name__ == "__main__":
    main()
