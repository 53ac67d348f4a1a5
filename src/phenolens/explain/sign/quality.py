"""How good are the visual words? Bag-of-words classification error, cluster purity, centre distances.

- BoW error: each image becomes the histogram of its words at one layer; a linear classifier
  (logistic regression) trained on the fitting images is scored on held-out images.
- Max-channel baseline: each column is assigned to its most active channel instead of a word.
- Purity: each column carries its image's class; purity = sum_k max_c n_kc / n.
- Centre distances: Euclidean distances between word means, words ordered by dominant class.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from phenolens.explain.sign.dictionary import SignDictionary, WordMaps, histograms


def bow_error(train: np.ndarray, train_labels: np.ndarray, test: np.ndarray, test_labels: np.ndarray, seed: int = 0) -> float:
    """Test error of a logistic-regression classifier on (N, K) word histograms."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
    classifier.fit(train, train_labels)
    return float(np.mean(classifier.predict(test) != test_labels))


def class_counts(words: np.ndarray, labels: np.ndarray, n_words: int, n_classes: int) -> np.ndarray:
    """(K, classes) number of columns holding each word in images of each class."""
    flat = words.reshape(len(words), -1).astype(np.int64)
    keys = flat * n_classes + np.asarray(labels, dtype=np.int64)[:, None]
    return np.bincount(keys.ravel(), minlength=n_words * n_classes).reshape(n_words, n_classes).astype(np.float64)


def purity(words: np.ndarray, labels: np.ndarray, n_words: int, n_classes: int) -> float:
    """Cluster purity of the columns' words with respect to their images' classes."""
    counts = class_counts(words, labels, n_words, n_classes)
    return float(counts.max(1).sum() / counts.sum())


def centre_distances(centres: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(order, dominant class per ordered word, (K, K) distances between ordered centres).

    Words are ordered by dominant class, then by how pure they are, so blocks on the diagonal
    show words that serve one class.
    """
    dominant = counts.argmax(1)
    share = counts.max(1) / np.maximum(counts.sum(1), 1.0)
    order = np.lexsort((-share, dominant))
    ordered = centres[order]
    distances = np.sqrt(np.maximum(((ordered[:, None, :] - ordered[None, :, :]) ** 2).sum(-1), 0.0))
    return order, dominant[order], distances


def dictionary_quality(dictionary: SignDictionary, train_maps: WordMaps, y_train, test_maps: WordMaps, y_test, seed: int = 0) -> pd.DataFrame:
    """One row per modelled layer (input to output): name, bow_error, bow_error_max_channel, purity, words.

    Classifiers are trained on `train_maps` and scored on `test_maps`; purity is measured on the
    held-out images' words.
    """
    y_train, y_test = np.asarray(y_train), np.asarray(y_test)
    n_classes = len(dictionary.classes_)
    baseline_train, baseline_test = train_maps.max_channel, test_maps.max_channel
    rows = []
    for layer in dictionary.layers_:
        k = dictionary.dictionaries_[layer].n_words
        channels = dictionary.dictionaries_[layer].n_features
        rows.append(
            {
                "name": layer,
                "bow_error": bow_error(histograms(train_maps.words[layer], k), y_train, histograms(test_maps.words[layer], k), y_test, seed),
                "bow_error_max_channel": bow_error(
                    histograms(baseline_train[layer], channels), y_train, histograms(baseline_test[layer], channels), y_test, seed
                ),
                "purity": purity(test_maps.words[layer], y_test, k, n_classes),
                "purity_max_channel": purity(baseline_test[layer], y_test, channels, n_classes),
                "words": k,
                "channels": channels,
            }
        )
    return pd.DataFrame(rows)
