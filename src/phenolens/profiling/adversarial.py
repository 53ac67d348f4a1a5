"""The domain-adversarial profile autoencoder behind `anomaly_adversarial`, and how well a code predicts the domain.

The autoencoder of the anomaly representation learns the feature dependencies of control wells;
if its latent code also carries the batch (or plate) a control came from, the reconstruction is
batch-specific. Here an adversary reads the code through a gradient reversal layer and learns to
predict the batch while the encoder learns to hide it (Ganin & Lempitsky 2015): the code keeps
what controls share across batches. The reversal strength follows the Ganin-Lempitsky schedule
from 0 to `adversary_lambda`; early stopping watches the validation reconstruction alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from phenolens.core.errors import PhenolensError
from phenolens.core.seeding import seed_everything
from phenolens.nn.domain_adversary import DomainAdversary
from phenolens.nn.gradient_reversal import ganin_lambda
from phenolens.nn.profile_autoencoder import ProfileAutoencoder, reconstruction_loss
from phenolens.profiling.settings import ProfilingSettings
from phenolens.training import EarlyStopping, History, fit


class AdversarialProfileAutoencoder(nn.Module):
    """A `ProfileAutoencoder` with a `DomainAdversary` on its latent code; `forward` reconstructs.

    Parameters
    ----------
    n_features : int
        Input width.
    n_domains : int
        Domains the adversary tells apart.
    hidden, latent, dropout
        As `ProfileAutoencoder`.
    """

    def __init__(self, n_features: int, n_domains: int, hidden=(256, 128, 64), latent: int = 16, dropout: float = 0.1):
        super().__init__()
        self.autoencoder = ProfileAutoencoder(n_features, hidden, latent, dropout)
        self.adversary = DomainAdversary(latent, n_domains)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.autoencoder(x)


@dataclass
class AdversaryFit:
    """A trained adversarial autoencoder and what its adversary learned.

    Attributes
    ----------
    model : AdversarialProfileAutoencoder
        The trained network.
    history : History
        Its training history.
    domains : list of str
        The domain of each adversary class.
    domain_losses : list of float
        The adversary's cross-entropy at every training step.
    """

    model: AdversarialProfileAutoencoder
    history: History
    domains: list[str]
    domain_losses: list[float]


def domain_codes(domains: np.ndarray, column: str) -> tuple[np.ndarray, list[str]]:
    """Integer codes of the training controls' domains; one domain is a bad input.

    Parameters
    ----------
    domains : numpy.ndarray
        Domain (batch or plate) of every training control.
    column : str
        The domain column, for the message.

    Returns
    -------
    tuple
        (int64 codes, domain names).

    Raises
    ------
    PhenolensError
        When the training controls come from one domain only.
    """
    codes, names = pd.factorize(pd.Series(domains).astype(str), sort=True)
    if len(names) < 2:
        value = names[0] if len(names) else "nothing"
        raise PhenolensError(
            f"adversary column {column!r} has one value ({value!r}) among the training controls: there is no domain to hide; "
            f"choose another --adversary or leave it at none"
        )
    return codes.astype(np.int64), [str(n) for n in names]


def train_adversarial_autoencoder(
    train: np.ndarray, train_domains: np.ndarray, validation: np.ndarray, settings: ProfilingSettings, column: str
) -> AdversaryFit:
    """Train the autoencoder with a domain adversary on its code, early stopping on validation reconstruction.

    Parameters
    ----------
    train : numpy.ndarray
        (training controls, features) float32 standardised inputs.
    train_domains : numpy.ndarray
        Domain of every training control.
    validation : numpy.ndarray
        (validation controls, features) float32.
    settings : ProfilingSettings
        Autoencoder shape and training, `adversary_lambda`, seed.
    column : str
        The domain column (messages).

    Returns
    -------
    AdversaryFit
        The network, its history and the domain names.

    Raises
    ------
    PhenolensError
        When the training controls come from one domain only.
    """
    codes, names = domain_codes(train_domains, column)
    seed_everything(settings.seed)
    model = AdversarialProfileAutoencoder(train.shape[1], len(names), list(settings.hidden), settings.latent, settings.dropout)
    strength, epochs, output_l2 = settings.adversary_lambda, settings.max_epochs, settings.output_l2
    domain_losses: list[float] = []

    def step(net, batch, epoch):
        inputs, domains = batch
        net.adversary.reversal.lambda_ = ganin_lambda(epoch / epochs, scale=strength)
        domain_loss = nn.functional.cross_entropy(net.adversary(net.autoencoder.encoder(inputs)), domains)
        domain_losses.append(float(domain_loss.detach()))
        return reconstruction_loss(net, inputs, output_l2) + domain_loss

    def validation_step(net, batch, epoch):
        return reconstruction_loss(net, batch[0])

    history = fit(
        model,
        (torch.from_numpy(train), torch.from_numpy(codes)),
        step,
        val=(torch.from_numpy(validation),),
        val_step=validation_step,
        epochs=epochs,
        batch_size=settings.batch_size,
        lr=settings.learning_rate,
        callbacks=[EarlyStopping(patience=settings.patience, monitor="val_loss")],
        seed=settings.seed,
        description="adversarial profile autoencoder",
    )
    return AdversaryFit(model, history, names, domain_losses)


@torch.no_grad()
def latent_codes(model: nn.Module, inputs: np.ndarray) -> np.ndarray:
    """The latent codes of `inputs` under a (plain or adversarial) profile autoencoder.

    Parameters
    ----------
    model : torch.nn.Module
        `ProfileAutoencoder` or `AdversarialProfileAutoencoder`.
    inputs : numpy.ndarray
        (wells, features) standardised inputs.

    Returns
    -------
    numpy.ndarray
        (wells, latent) float64.
    """
    autoencoder = model.autoencoder if isinstance(model, AdversarialProfileAutoencoder) else model
    autoencoder.eval()
    return autoencoder.encoder(torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.float32))).numpy().astype(np.float64)


def domain_accuracy(codes: np.ndarray, domains: np.ndarray, seed: int = 0) -> dict[str, float]:
    """How well a logistic regression predicts the domain from codes: cross-validated balanced accuracy and chance.

    Parameters
    ----------
    codes : numpy.ndarray
        (wells, dims) representations of wells nothing was fitted on (held-out controls).
    domains : numpy.ndarray
        Domain of every well.
    seed : int
        Seed of the folds.

    Returns
    -------
    dict
        ``balanced_accuracy`` (mean over stratified folds) and ``chance`` (1 / domains); NaN when
        no domain has two wells.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    labels = pd.Series(domains).astype(str).to_numpy()
    counts = pd.Series(labels).value_counts()
    kept = np.isin(labels, counts.index[counts >= 2])
    n_domains = int((counts >= 2).sum())
    if n_domains < 2:
        return {"balanced_accuracy": float("nan"), "chance": float("nan"), "domains": n_domains}
    folds = StratifiedKFold(n_splits=int(min(3, counts[counts >= 2].min())), shuffle=True, random_state=seed)
    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    scores = cross_val_score(classifier, codes[kept], labels[kept], cv=folds, scoring="balanced_accuracy")
    return {"balanced_accuracy": float(np.mean(scores)), "chance": 1.0 / n_domains, "domains": n_domains}
