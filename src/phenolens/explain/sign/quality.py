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
    """Test error of a logistic-regression classifier on word histograms.

    Parameters
    ----------
    train, test : ndarray
        (N, K) histograms of the training and the test images.
    train_labels, test_labels : ndarray
        Their classes.
    seed : int
        Seed of the classifier.

    Returns
    -------
    float
        Fraction of test images misclassified.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
    with threadpool_limits(1):  # a few thousand rows: threads only add synchronisation cost
        classifier.fit(train, train_labels)
        return float(np.mean(classifier.predict(test) != test_labels))


def class_counts(words: np.ndarray, labels: np.ndarray, n_words: int, n_classes: int) -> np.ndarray:
    """How often each word occurs in images of each class.

    Parameters
    ----------
    words : ndarray
        (N, ...) word maps.
    labels : ndarray
        (N,) class of each image.
    n_words, n_classes : int
        K and the number of classes.

    Returns
    -------
    ndarray
        (K, classes) column counts.
    """
    flat = words.reshape(len(words), -1).astype(np.int64)
    keys = flat * n_classes + np.asarray(labels, dtype=np.int64)[:, None]
    return np.bincount(keys.ravel(), minlength=n_words * n_classes).reshape(n_words, n_classes).astype(np.float64)


def purity(words: np.ndarray, labels: np.ndarray, n_words: int, n_classes: int) -> float:
    """Cluster purity of the columns' words with respect to their images' classes.

    Parameters
    ----------
    words : ndarray
        (N, ...) word maps.
    labels : ndarray
        (N,) class of each image.
    n_words, n_classes : int
        K and the number of classes.

    Returns
    -------
    float
        sum_k max_c n_kc / n.
    """
    counts = class_counts(words, labels, n_words, n_classes)
    return float(counts.max(1).sum() / counts.sum())


def centre_distances(centres: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distances between word centres, words ordered by dominant class, then by how pure they are,
    so that blocks on the diagonal show words that serve one class.

    Parameters
    ----------
    centres : ndarray
        (K, D) word means.
    counts : ndarray
        (K, classes) from `class_counts`.

    Returns
    -------
    tuple of ndarray
        The order of the words, the dominant class of each ordered word, and the (K, K) Euclidean
        distances between the ordered centres.
    """
    dominant = counts.argmax(1)
    share = counts.max(1) / np.maximum(counts.sum(1), 1.0)
    order = np.lexsort((-share, dominant))
    ordered = centres[order]
    distances = np.sqrt(np.maximum(((ordered[:, None, :] - ordered[None, :, :]) ** 2).sum(-1), 0.0))
    return order, dominant[order], distances


def dictionary_quality(dictionary: SignDictionary, train_maps: WordMaps, y_train, test_maps: WordMaps, y_test, seed: int = 0) -> pd.DataFrame:
    """Quality of every modelled layer's words against the max-channel baseline.

    Parameters
    ----------
    dictionary : SignDictionary
        Fitted.
    train_maps : WordMaps
        Word maps of the fitting images (the BoW classifiers are trained on them).
    y_train : array-like
        Their classes.
    test_maps : WordMaps
        Word maps of held-out images (scored; purity is measured on them).
    y_test : array-like
        Their classes.
    seed : int
        Seed of the classifiers.

    Returns
    -------
    DataFrame
        One row per layer, input to output: name, bow_error, bow_error_max_channel, purity,
        purity_max_channel, words, channels.
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
