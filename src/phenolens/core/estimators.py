"""The scikit-learn estimator shape, shared by every fitted object in phenolens.

Estimators subclass `sklearn.base.BaseEstimator`: the constructor only stores its parameters
(so `get_params`, `set_params` and `sklearn.base.clone` work), `fit` returns ``self``, learned
state lives in attributes ending in ``_``, and nothing mutates the caller's inputs. This module
holds the one not-fitted check they all use.
"""

from __future__ import annotations

from typing import Any

from phenolens.core.errors import PhenolensError


class NotFittedError(PhenolensError):
    """An estimator was used before `fit`."""


def check_is_fitted(estimator: Any, attributes: str | tuple[str, ...] | None = None) -> None:
    """Raise `NotFittedError` unless `estimator` has been fitted.

    Parameters
    ----------
    estimator : object
        Any phenolens estimator.
    attributes : str or tuple of str, optional
        Learned attributes that must exist; default: any attribute ending in ``_`` (not ``__``).

    Raises
    ------
    NotFittedError
        Naming the estimator and the call that fits it.
    """
    if attributes is None:
        fitted = any(name.endswith("_") and not name.endswith("__") for name in vars(estimator))
    else:
        names = (attributes,) if isinstance(attributes, str) else attributes
        fitted = all(getattr(estimator, name, None) is not None for name in names)
    if not fitted:
        raise NotFittedError(f"this {type(estimator).__name__} is not fitted yet; call fit(...) before using it")
