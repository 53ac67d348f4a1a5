"""SIGN dictionary fitting speed: the torch mini-batch GMM against scikit-learn's GaussianMixture.

    python benchmarks/sign_dictionary_speed.py           # >= 10^6 training columns x 64 channels, K = 32
    python benchmarks/sign_dictionary_speed.py --small   # seconds: 50,000 columns

The columns are real activations: the 64-channel stage of a small ResNet trained on Fashion-MNIST
(14 x 14 positions per image). Both fits see the same training columns (float64 for scikit-learn, as
it needs), run one after the other in this process, and are scored on the same held-out columns with
the same code (scikit-learn's `score`, our parameters copied into a GaussianMixture). Both use
reg_covar = 1e-6 (scikit-learn's default); scikit-learn uses its defaults otherwise (k-means init,
tol 1e-3, max_iter 100).

Target (issue 5): equal-or-better held-out log-likelihood per column, speed ratio >= 5x.
Timings on a shared machine are noisy; the ratio is measured side by side.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch


def activation_columns(n_columns: int, n_held_out: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Training and held-out 64-channel columns of a ResNet stage trained briefly on Fashion-MNIST."""
    from phenolens.core.seeding import numpy_rng
    from phenolens.data import load
    from phenolens.explain.sign.layers import ActivationTap, check_layer_names, columns, iter_batches
    from phenolens.training import fit_classifier

    fashion = load("fashion-mnist")
    rng = numpy_rng(seed)
    train = fashion.subset(rng.choice(np.flatnonzero(fashion.meta["split"].to_numpy() == "train"), 4000, replace=False))
    classifier = fit_classifier(
        train, "resnet18", width=0.5, blocks=[1, 1], stem_stride=1, epochs=2, batch_size=64, loss="softmax", augment=False,
        pseudo_labels=False, validation_fraction=0.1, seed=seed, description="benchmark CNN",
    )  # fmt: skip
    layer = check_layer_names(classifier.model, ["stage2"])
    per_image = 14 * 14
    needed = (n_columns + n_held_out) // per_image + 1
    chosen = rng.choice(len(fashion), needed, replace=False)
    parts = []
    with ActivationTap(classifier.model, layer) as tap:
        for batch in iter_batches(classifier.array(fashion.subset(chosen)), 512):
            tap.run(batch)
            parts.append(columns(tap.outputs[layer[0]]))
    every = torch.cat(parts)
    assert every.shape[1] == 64, every.shape
    # held-out columns come from other images than the training columns
    return every[:n_columns], every[needed * per_image - n_held_out :]


def as_sklearn(dictionary):
    """A fitted scikit-learn GaussianMixture holding our dictionary's parameters (for identical scoring)."""
    from sklearn.mixture import GaussianMixture

    mixture = GaussianMixture(dictionary.n_words, covariance_type="diag")
    mixture.weights_ = dictionary.priors().astype(np.float64)
    mixture.means_ = dictionary.centres().astype(np.float64)
    mixture.covariances_ = dictionary.variances().astype(np.float64)
    mixture.precisions_cholesky_ = 1.0 / np.sqrt(mixture.covariances_)
    mixture.converged_ = True
    return mixture


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="seconds-scale run for CI")
    parser.add_argument("--columns", type=int, default=1_000_000)
    parser.add_argument("--words", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="metrics folder (default runs/sign-dictionary-speed[-small])")
    args = parser.parse_args()
    n_columns = 50_000 if args.small else args.columns
    out = args.out or Path(f"runs/sign-dictionary-speed{'-small' if args.small else ''}")

    from sklearn.mixture import GaussianMixture

    from phenolens.core.outputs import atomic_output_dir, write_json
    from phenolens.explain.sign.gmm import GaussianDictionary, fit_columns

    train, held_out = activation_columns(n_columns, max(20_000, n_columns // 10), args.seed)
    print(f"{len(train):,} training and {len(held_out):,} held-out columns x {train.shape[1]} channels; {(train == 0).float().mean():.0%} zeros")

    started = time.perf_counter()
    dictionary = GaussianDictionary.initialise(train, args.words, seed=args.seed)
    fit_columns(dictionary, train, seed=args.seed)
    ours_seconds = time.perf_counter() - started

    train64 = train.double().numpy()
    started = time.perf_counter()
    reference = GaussianMixture(args.words, covariance_type="diag", random_state=args.seed).fit(train64)
    sklearn_seconds = time.perf_counter() - started

    held64 = held_out.double().numpy()
    ours_ll, sklearn_ll = float(as_sklearn(dictionary).score(held64)), float(reference.score(held64))
    metrics = {
        "columns": len(train),
        "channels": int(train.shape[1]),
        "words": args.words,
        "held_out_columns": len(held_out),
        "ours_seconds": ours_seconds,
        "sklearn_seconds": sklearn_seconds,
        "speed_ratio": sklearn_seconds / ours_seconds,
        "ours_held_out_log_likelihood": ours_ll,
        "sklearn_held_out_log_likelihood": sklearn_ll,
        "sklearn_iterations": int(reference.n_iter_),
        "sklearn_converged": bool(reference.converged_),
        "equal_or_better": ours_ll >= sklearn_ll - 1e-3 * abs(sklearn_ll),
        "target_speed_ratio": 5.0,
    }
    print(f"ours:    {ours_seconds:8.1f} s, held-out log-likelihood {ours_ll:.3f} per column")
    print(f"sklearn: {sklearn_seconds:8.1f} s, held-out log-likelihood {sklearn_ll:.3f} per column ({reference.n_iter_} EM iterations)")
    target = "target >= 5x at 10^6 columns; --small is not comparable" if args.small else "target >= 5x"
    print(f"speed ratio {metrics['speed_ratio']:.1f}x ({target}); log-likelihood equal or better: {metrics['equal_or_better']}")
    with atomic_output_dir(out) as staging:
        write_json(staging / "metrics.json", metrics)


if __name__ == "__main__":
    main()
