"""Domain-adversarial training of image classifiers (Ganin & Lempitsky 2015), and the probe that measures it.

`domain_codes` reads the domain (well, plate, batch) of every image from a metadata column;
`AdversaryTraining` trains the adversary and gives the network's adversarial term of a training step
(gradient reversal or domain confusion), ramped by Ganin & Lempitsky's schedule over the steps; `domain_probe` measures how well the domain can
still be read from frozen embeddings by a cross-validated linear probe (logistic regression), as
balanced accuracy (the mean recall over domains), whose chance level is 1 / (number of domains) for any
probe that ignores the embedding, however unequal the domains' sizes are in each fold.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from phenolens.core.errors import PhenolensError
from phenolens.data.containers import ImageSet
from phenolens.nn.adversary import DomainAdversary
from phenolens.nn.gradient_reversal import ganin_lambda
from phenolens.training.augment import CutMixBatch
from phenolens.training.loop import Callback
from phenolens.training.splits import group_column

if TYPE_CHECKING:
    from phenolens.training.classifier import ImageClassifier
    from phenolens.training.settings import ImageTrainingSettings

OPTION = "--adversary-column"
PROBE_OPTION = "--probe-column"
REFIT_STEPS = 200  # full-batch Adam steps that fit a fresh adversary to an epoch's embeddings (a few hundred images)
REFIT_BATCH = 256  # images per forward pass when embedding the training images for a refit


def domain_codes(images: ImageSet, column: str, option: str = OPTION) -> tuple[np.ndarray, list[str]]:
    """The domain of every image as an integer code, and the domain names.

    Parameters
    ----------
    images : ImageSet
        The images (their metadata holds `column`).
    column : str
        The metadata column naming each image's domain (well, plate, batch).
    option : str
        The option that named the column (``--adversary-column`` or ``--erase-column``), for the error messages.

    Returns
    -------
    tuple of (ndarray, list of str)
        (N,) int64 codes into the sorted domain names.

    Raises
    ------
    PhenolensError
        When the column is missing or holds a single value, naming the option and the columns there are.
    """
    columns = ", ".join(map(str, images.meta.columns))
    if column not in images.meta:
        raise PhenolensError(f"{images.name}: {option} {column!r} is not a metadata column; choose one of {columns}")
    names, codes = np.unique(images.meta[column].astype(str).to_numpy(), return_inverse=True)
    if len(names) < 2:
        raise PhenolensError(
            f"{images.name}: {option} {column!r} has one value ({names[0]!r}) in the labelled images; there are no domains "
            f"to tell apart; choose another of {columns}"
        )
    return codes.astype(np.int64), [str(name) for name in names]


def embed_tensors(model: torch.nn.Module, inputs: torch.Tensor, covariates: torch.Tensor | None = None) -> torch.Tensor:
    """The embedding `model` gives prepared inputs, in eval mode, without gradients, `REFIT_BATCH` images at a time.

    Parameters
    ----------
    model : torch.nn.Module
        A network with ``embed(inputs, covariates)``; its train/eval mode is restored afterwards.
    inputs : Tensor
        (N, C, H, W) normalised images.
    covariates : Tensor, optional
        (N, n_covariates) values.

    Returns
    -------
    Tensor
        (N, D) features.
    """
    was_training = model.training
    model.eval()
    with torch.no_grad():
        features = torch.cat(
            [
                model.embed(inputs[i : i + REFIT_BATCH], None if covariates is None else covariates[i : i + REFIT_BATCH])
                for i in range(0, len(inputs), REFIT_BATCH)
            ]
        )
    model.train(was_training)
    return features


class AdversaryTraining(Callback):
    """The adversary of a training run: its own updates, and the loss term that makes the embedding hide the domain.

    Every training step first trains the adversary `steps` times on the batch's embeddings (detached,
    so the network is untouched; its own Adam), keeping it near the best predictor of the domain that
    the embedding allows, then returns the network's adversarial term, weighted by ``weight *
    lambda_p`` with Ganin & Lempitsky's ramp ``lambda_p = final_lambda * (2 / (1 + exp(-10 p)) - 1)``,
    p = step / total_steps:

    - ``reversal`` (Ganin & Lempitsky 2015): the adversary's cross-entropy through the gradient reversal
      layer, so the network climbs it. It can be satisfied by an embedding that makes this adversary
      confidently wrong, which still carries the domain for any other reader;
    - ``confusion`` (Tzeng et al. 2015): the cross-entropy of the adversary's prediction to the uniform
      distribution over the domains of the image's class, minimised by the network: its optimum is an
      embedding from which the adversary cannot tell those domains apart, not one that misleads it
      (a class seen in one domain only has that domain as its target: nothing to hide there).

    A CutMix image counts as both of its domains (and classes, and targets), weighted by the area each
    contributed, as its class loss does. With `refit_on`, a fresh adversary is fitted to convergence on
    the whole training set's embeddings after every epoch; with `reset_every`, it is drawn afresh (and its
    optimiser emptied) every that many epochs: either way the network cannot settle on fooling one adversary.
    As a `Callback` it carries the adversary's weights, optimiser and step count into checkpoints.

    Parameters
    ----------
    adversary : DomainAdversary
        The domain classifier.
    class_domains : torch.Tensor
        (K, D) 1 where domain d occurs among the training images of class k: the support of the confusion target.
    weight : float
        Weight of the adversarial term in the step's loss.
    final_lambda : float
        Strength of the term (the reversal's lambda) at the end of training.
    total_steps : int
        Training steps (batches) the ramp spans.
    loss : str
        ``reversal`` or ``confusion``.
    steps : int
        Adversary updates per training step.
    lr : float
        The adversary's Adam learning rate.
    reset_every : int
        Epochs between fresh adversaries (0: never; ignored with `refit_on`).
    refit_on : tuple of torch.Tensor, optional
        (inputs, labels[, covariates], domains) of the unaugmented training images: after every epoch a fresh
        adversary is fitted to convergence on their embeddings (`refit`).
    refit_steps : int
        Full-batch Adam steps of each refit.
    """

    def __init__(
        self,
        adversary: DomainAdversary,
        class_domains: torch.Tensor,
        weight: float,
        final_lambda: float,
        total_steps: int,
        loss: str = "reversal",
        steps: int = 1,
        lr: float = 1e-3,
        reset_every: int = 0,
        refit_on: tuple[torch.Tensor, ...] | None = None,
        refit_steps: int = REFIT_STEPS,
    ):
        self.adversary, self.class_domains, self.weight, self.final_lambda = adversary, class_domains, weight, final_lambda
        self.total_steps, self.loss, self.steps, self.lr, self.reset_every = max(total_steps, 1), loss, steps, lr, reset_every
        self.refit_on, self.refit_steps = refit_on, refit_steps
        self.optimizer = torch.optim.Adam(adversary.parameters(), lr=lr)
        self.steps_taken = 0

    def __call__(
        self,
        features: torch.Tensor,
        mixed: CutMixBatch,
        domains: torch.Tensor,
        unlabelled: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Train the adversary on one batch, then return the network's adversarial loss term on it.

        Parameters
        ----------
        features : torch.Tensor
            (N, D) embeddings of the (mixed) labelled images.
        mixed : CutMixBatch
            The batch's CutMix: labels, partners and area weights.
        domains : torch.Tensor
            (N,) domain codes of the images before mixing.
        unlabelled : tuple of torch.Tensor, optional
            (M, D) embeddings of images whose class is not used (the evaluation fields of a transductive
            run), (M, K) the network's detached class probabilities for them (what the adversary is told
            instead of a class) and (M,) their domain codes. Their confusion target is the uniform
            distribution over the training domains of the predicted class and their own domain.

        Returns
        -------
        torch.Tensor
            The scalar loss term (its gradient reaches `features`).
        """
        lambda_ = ganin_lambda(self.steps_taken / self.total_steps, scale=self.final_lambda)
        self.steps_taken += 1
        share = mixed.weight[:, None]
        one_hot = torch.eye(len(self.class_domains), dtype=features.dtype)
        classes = share * one_hot[mixed.labels] + (1.0 - share) * one_hot[mixed.partner_labels]
        extra_domains = None
        if unlabelled is not None:
            extra_features, extra_classes, extra_domains = unlabelled
            features = torch.cat([features, extra_features])
            classes = torch.cat([classes, extra_classes.to(features.dtype)])
        told = classes if self.adversary.n_classes else None
        detached = features.detach()
        for _ in range(self.steps):
            self.optimizer.zero_grad(set_to_none=True)
            self._domain_cross_entropy(self.adversary.classify(detached, told), mixed, domains, extra_domains).backward()
            self.optimizer.step()
        if self.loss == "reversal":
            self.adversary.reversal.lambda_ = lambda_
            return self.weight * self._domain_cross_entropy(self.adversary(features, told), mixed, domains, extra_domains)
        target = share * self._uniform(mixed.labels) + (1.0 - share) * self._uniform(mixed.partner_labels)  # only confusion reads it
        if unlabelled is not None:
            target = torch.cat([target, self._predicted_uniform(extra_classes, extra_domains)])
        confusion = -(target * F.log_softmax(self.adversary.classify(features, told), dim=1)).sum(1)
        return self.weight * lambda_ * confusion.mean()

    @staticmethod
    def _domain_cross_entropy(logits: torch.Tensor, mixed: CutMixBatch, domains: torch.Tensor, extra_domains: torch.Tensor | None) -> torch.Tensor:
        """The adversary's cross-entropy, each CutMix image counting as both of its domains by area; the rows after the
        labelled batch are the unlabelled images (`extra_domains`)."""
        labelled = logits[: len(domains)]
        own = F.cross_entropy(labelled, domains, reduction="none")
        partner = F.cross_entropy(labelled, domains[mixed.partner], reduction="none")
        losses = mixed.weight * own + (1.0 - mixed.weight) * partner
        if extra_domains is not None:
            losses = torch.cat([losses, F.cross_entropy(logits[len(domains) :], extra_domains, reduction="none")])
        return losses.mean()

    def _predicted_uniform(self, probabilities: torch.Tensor, domains: torch.Tensor) -> torch.Tensor:
        """(M, D) for images of unused class: the uniform distribution over each class's training domains and the image's own
        domain, averaged with the network's class probabilities."""
        own = F.one_hot(domains, self.class_domains.shape[1])[:, None].to(torch.float32)
        support = (self.class_domains[None].to(torch.float32) + own).clamp(max=1.0)
        return torch.einsum("mk,mkd->md", probabilities.to(torch.float32), support / support.sum(2, keepdim=True))

    def _uniform(self, labels: torch.Tensor) -> torch.Tensor:
        """(N, D) the uniform distribution over the domains of each image's class."""
        support = self.class_domains[labels].to(torch.float32)
        return support / support.sum(1, keepdim=True).clamp(min=1.0)

    def on_epoch_end(self, epoch: int, record: dict, model: torch.nn.Module) -> bool:
        """Draw a fresh adversary every `reset_every` epochs, or fit one to the epoch's embeddings; never stops (see `Callback.on_epoch_end`)."""
        if self.refit_on is not None:
            self.refit(model)
        elif self.reset_every and (epoch + 1) % self.reset_every == 0:
            self.adversary.reset_parameters()
            self.optimizer = torch.optim.Adam(self.adversary.parameters(), lr=self.lr)
        return False

    def refit(self, model: torch.nn.Module) -> None:
        """Fit a fresh adversary to convergence on the embeddings `model` now gives the unaugmented training images.

        The per-step updates see one augmented batch at a time and can lag far behind what a reader of the
        whole embedding finds (a probe fitted afterwards); refitted after every epoch, the adversary the
        next epoch's network faces is the best one its embedding allows (`refit_steps` full-batch Adam steps).

        Parameters
        ----------
        model : torch.nn.Module
            The network (its ``embed(inputs, covariates)`` is read in eval mode, without gradients).
        """
        inputs, labels, *covariates, domains = self.refit_on
        features = embed_tensors(model, inputs, covariates[0] if covariates else None)
        told = torch.eye(len(self.class_domains))[labels] if self.adversary.n_classes else None
        self.adversary.reset_parameters()
        self.optimizer = torch.optim.Adam(self.adversary.parameters(), lr=self.lr)
        for _ in range(self.refit_steps):
            self.optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(self.adversary.classify(features, told), domains).backward()
            self.optimizer.step()

    def state_dict(self) -> dict:
        """The adversary's weights, its optimiser and the steps taken (see `Callback.state_dict`)."""
        return {"adversary": self.adversary.state_dict(), "optimizer": self.optimizer.state_dict(), "steps_taken": self.steps_taken}

    def load_state_dict(self, state: dict) -> None:
        """Take back the adversary's weights, optimiser and steps taken (see `Callback.load_state_dict`)."""
        self.adversary.load_state_dict(state["adversary"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.steps_taken = int(state["steps_taken"])


def _out_of_fold_predictions(features: np.ndarray, targets: np.ndarray, groups: np.ndarray | None, folds: int, seed: int) -> np.ndarray:
    """Each image's domain as predicted by a probe fitted on the other folds (a fold with one domain predicts it)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold, KFold, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if groups is not None:
        splits = GroupKFold(n_splits=min(folds, len(np.unique(groups)))).split(features, targets, groups)
    elif np.bincount(targets).max() < 2:  # a domain per image (a column such as the file name): nothing to stratify
        splits = KFold(n_splits=min(folds, len(targets)), shuffle=True, random_state=seed).split(features)
    else:
        n_splits = max(2, min(folds, int(np.bincount(targets).max())))
        splits = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed).split(features, targets)
    predicted = np.empty_like(targets)
    for train, test in splits:
        if len(np.unique(targets[train])) == 1:
            predicted[test] = targets[train][0]
            continue
        probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, class_weight="balanced"))
        predicted[test] = probe.fit(features[train], targets[train]).predict(features[test])
    return predicted


def domain_probe(
    features: np.ndarray,
    domains: Sequence[int],
    groups: Sequence | None = None,
    classes: Sequence[int] | None = None,
    folds: int = 5,
    seed: int = 0,
) -> dict:
    """How well a linear probe reads the domain from frozen embeddings, cross-validated, against chance.

    The probe is a logistic regression on standardised features, its classes weighted to balance;
    every image is predicted by a probe that never saw its group (field, site) when `groups` are given.
    The score is balanced accuracy (mean recall over the domains present), so chance is 1 / (number of
    domains): what a probe that ignores the embedding scores, whichever domain it guesses. With
    `classes`, the same is measured within each class that spans two or more domains (a probe per
    class) and averaged, weighted by the class's images: the domain information beyond what the class tells.

    Parameters
    ----------
    features : numpy.ndarray
        (N, D) embeddings.
    domains : sequence of int
        (N,) domain codes.
    groups : sequence, optional
        (N,) groups that never straddle a probe's training and test folds.
    classes : sequence of int, optional
        (N,) class labels, for the within-class figures.
    folds : int
        Cross-validation folds (fewer when there are fewer groups).
    seed : int
        Seed of the folds without groups.

    Returns
    -------
    dict
        ``balanced_accuracy``, ``chance``, ``n_images`` and, with `classes`, ``class_only_balanced_accuracy``
        (the same probe given only the class: what the class alone tells of the domain), ``within_class_balanced_accuracy``,
        ``within_class_chance``, ``within_class_images`` and ``within_class_classes`` (class codes used;
        the within-class figures are NaN when no class spans two domains in two groups).

    Raises
    ------
    PhenolensError
        When `groups` puts every image in one group.
    """
    from sklearn.metrics import balanced_accuracy_score

    features, domains = np.asarray(features, dtype=np.float64), np.asarray(domains)
    groups = None if groups is None else np.asarray(groups)
    if groups is not None and len(np.unique(groups)) < 2:
        raise PhenolensError("the domain probe is cross-validated across groups, but all the images are in one group; give a finer grouping column")
    predicted = _out_of_fold_predictions(features, domains, groups, folds, seed)
    result = {
        "balanced_accuracy": float(balanced_accuracy_score(domains, predicted)),
        "chance": 1.0 / len(np.unique(domains)),
        "n_images": int(len(domains)),
    }
    if classes is None:
        return result
    classes = np.asarray(classes)
    one_hot = (classes[:, None] == np.unique(classes)[None]).astype(np.float64)
    result["class_only_balanced_accuracy"] = float(balanced_accuracy_score(domains, _out_of_fold_predictions(one_hot, domains, groups, folds, seed)))
    scores, chances, sizes, used = [], [], [], []
    for label in np.unique(classes):
        members = np.flatnonzero(classes == label)
        chosen_groups = None if groups is None else groups[members]
        present = len(np.unique(domains[members]))
        if present < 2 or (chosen_groups is not None and len(np.unique(chosen_groups)) < 2):
            continue  # one domain: nothing beyond the class to read; one group: nothing to cross-validate across
        inside = _out_of_fold_predictions(features[members], domains[members], chosen_groups, folds, seed)
        scores.append(balanced_accuracy_score(domains[members], inside))
        chances.append(1.0 / present)
        sizes.append(len(members))
        used.append(int(label))
    result.update(
        within_class_balanced_accuracy=float(np.average(scores, weights=sizes)) if used else float("nan"),
        within_class_chance=float(np.average(chances, weights=sizes)) if used else float("nan"),
        within_class_images=int(sum(sizes)),
        within_class_classes=used,
    )
    return result


def embedding_probes(
    classifier: ImageClassifier, labelled: ImageSet, domains: np.ndarray, settings: ImageTrainingSettings, trained_index: np.ndarray | None = None
) -> dict:
    """The `domain_probe`s of a classifier's embedding of `labelled`: folds grouped, folds mixing the groups, and on the
    images it trained on and the others apart.

    Parameters
    ----------
    classifier : ImageClassifier
        The model whose embedding is probed.
    labelled : ImageSet
        The labelled images of the run (every one is embedded).
    domains : ndarray
        (N,) domain codes of `labelled`.
    settings : ImageTrainingSettings
        The run's settings (grouping column, seed).
    trained_index : ndarray, optional
        Indices into `labelled` of the images the network trained on.

    Returns
    -------
    dict
        The `domain_probe` with folds grouped by `settings.group_by` (when set; else mixing), with ``ungrouped`` (folds mixing
        the groups) when grouped, and with `trained_index` ``trained_images`` and ``unseen_images`` (folds mixing, apart).
    """
    groups = group_column(labelled, settings.group_by)
    features = classifier.embed(labelled)
    result = domain_probe(features, domains, groups, labelled.labels, seed=settings.seed)
    if groups is not None:  # folds that mix groups: the probe may also use what is particular to a group (a field's look)
        result["ungrouped"] = domain_probe(features, domains, None, labelled.labels, seed=settings.seed)
    if trained_index is not None:  # where training acted on the embedding, and where it could not (held-out and validation images)
        unseen = np.setdiff1d(np.arange(len(labelled)), trained_index)
        for key, index in (("trained_images", trained_index), ("unseen_images", unseen)):
            result[key] = domain_probe(features[index], domains[index], None, labelled.labels[index], seed=settings.seed)
    return result


def adversary_metrics(
    labelled: ImageSet,
    settings: ImageTrainingSettings,
    classifier: ImageClassifier,
    baseline: ImageClassifier | None = None,
    baseline_metrics: dict | None = None,
    trained_index: np.ndarray | None = None,
) -> dict:
    """How predictable the adversary's domain is from each classifier's embedding of `labelled`, with and without the adversary.

    Parameters
    ----------
    labelled : ImageSet
        The labelled images of the run (every one is embedded and probed).
    settings : ImageTrainingSettings
        The run's settings (adversary column, grouping, seed).
    classifier : ImageClassifier
        The model trained with the adversary.
    baseline : ImageClassifier, optional
        The same training without the adversary.
    baseline_metrics : dict, optional
        The baseline's held-out classification metrics (its macro-F1 is reported beside the probe).
    trained_index : ndarray, optional
        Indices into `labelled` of the images both networks trained on (same splits and seed): the probe
        with folds that mix groups is then also run on those images alone and on the others, apart.

    Returns
    -------
    dict
        ``column``, ``domains``, ``by_class``, ``loss``, ``unlabelled`` and ``transductive`` (whether the adversary also
        trained on the held-out images, unlabelled), ``probe_groups`` and the `domain_probe` of each model
        (``with_adversary``, ``without_adversary``; with groups each also holds the ``ungrouped`` probe,
        whose folds mix the groups; with `trained_index` each holds ``trained_images`` and ``unseen_images``,
        that probe on the images the network trained on and on the others), and the baseline's ``macro_f1_without_adversary``.
    """
    domains, names = domain_codes(labelled, settings.adversary_column)

    def probe(model: ImageClassifier) -> dict:
        return embedding_probes(model, labelled, domains, settings, trained_index)

    result = {
        "column": settings.adversary_column,
        "domains": names,
        "by_class": settings.adversary_by_class,
        "loss": settings.adversary_loss,
        "unlabelled": settings.adversary_unlabelled,
        "transductive": settings.adversary_unlabelled == "evaluation",
        "probe_groups": settings.group_by,
        "with_adversary": probe(classifier),
    }
    if baseline is not None:
        result["without_adversary"] = probe(baseline)
    if baseline_metrics is not None:
        result["macro_f1_without_adversary"] = baseline_metrics["macro_f1"]
        if "cv_macro_f1" in baseline_metrics:
            result["cv_macro_f1_without_adversary"] = baseline_metrics["cv_macro_f1"]
    return result


def probe_metrics(labelled: ImageSet, settings: ImageTrainingSettings, classifier: ImageClassifier, trained_index: np.ndarray | None = None) -> dict:
    """How predictable ``settings.probe_column`` is from a classifier's embedding: the adversary's probes, for any training.

    Parameters
    ----------
    labelled : ImageSet
        The labelled images of the run (every one is embedded and probed).
    settings : ImageTrainingSettings
        The run's settings (probe column, grouping, seed).
    classifier : ImageClassifier
        The trained model.
    trained_index : ndarray, optional
        Indices into `labelled` of the images the network trained on (the probe then also reads them and the others apart).

    Returns
    -------
    dict
        ``column``, ``domains``, ``probe_groups`` and ``embedding`` (`embedding_probes` of the classifier).

    Raises
    ------
    PhenolensError
        When the column is missing or holds one value, naming ``--probe-column``.
    """
    domains, names = domain_codes(labelled, settings.probe_column, PROBE_OPTION)
    return {
        "column": settings.probe_column,
        "domains": names,
        "probe_groups": settings.group_by,
        "embedding": embedding_probes(classifier, labelled, domains, settings, trained_index),
    }
