"""Report headings of the machine column names that tables carry from the API.

The CSV, parquet and metrics.json files keep the machine names (they are an API); a report page shows
these headings instead. `Section.table` applies them to every table's columns and index name, so a table
added later gets them too; names not listed are shown as they are.
"""

from __future__ import annotations

HEADINGS = {
    "n_images": "images",
    "control_wells": "control wells",
    "same_batch_neighbour": "same-batch neighbour",
    "n_wells": "wells",
    "p_value": "p-value",
    "q_value": "q-value (Benjamini-Hochberg)",
    "representation_a": "representation A",
    "representation_b": "representation B",
    "mean_a": "mean of A",
    "mean_b": "mean of B",
    "bow_error": "bag-of-words error (fraction)",
    "bow_error_max_channel": "bag-of-words error, max-channel words (fraction)",
    "purity_max_channel": "purity, max-channel words",
    "mae_thinnest_mm": "MAE, thinnest layer (mm)",
    "mae_rest_mm": "MAE, other layers (mm)",
    "resolved_fraction": "positions resolved into two echoes (fraction)",
    "wells_in": "wells in",
    "dropped_non_finite": "dropped: missing values",
    "dropped_no_treatment": "dropped: no treatment",
    "dropped_few_controls": "dropped: too few controls",
    "imputed_values": "imputed values",
    "cells_per_well_min": "cells per well, min",
    "cells_per_well_median": "cells per well, median",
    "cells_per_well_max": "cells per well, max",
}
"""Machine name -> heading (with its unit where it has one)."""

PER_CLASS_PREFIXES = {"fraction_": "share predicted {}", "z_": "z-score of {}", "q_": "q-value of {}", "hit_": "hit: {}"}
"""Per-class columns of `images predict --group-by` (``fraction_<class>`` ...) -> heading with the class name."""


def heading(name: object) -> object:
    """The report heading of a column name; anything not a known machine name is returned unchanged.

    Parameters
    ----------
    name : object
        A column or index name (non-strings pass through).

    Returns
    -------
    object
        The heading.
    """
    if not isinstance(name, str):
        return name
    return HEADINGS.get(name, name)


def per_class_heading(name: str, class_names: list[str]) -> str:
    """The heading of a per-class column (``fraction_<class>``, ``z_<class>``, ``q_<class>``, ``hit_<class>``).

    Only names whose remainder is one of `class_names` are renamed, so a feature that happens to start
    with ``z_`` keeps its name.

    Parameters
    ----------
    name : str
        A column name.
    class_names : list of str
        The model's classes.

    Returns
    -------
    str
        The heading, or `name` unchanged.
    """
    for prefix, template in PER_CLASS_PREFIXES.items():
        if name.startswith(prefix) and name[len(prefix) :] in class_names:
            return template.format(name[len(prefix) :])
    return heading(name)
