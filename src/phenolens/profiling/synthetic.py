"""Synthetic well-level screens with a known answer, for tests and benchmarks (never for results).

Features share a low-rank structure (as CellProfiler features do), plates add offsets, every MoA
moves wells along its own direction and every compound adds its own twist, so replicate
reproducibility, MoA neighbours and hits have known answers. Replicates sit on different plates.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from phenolens.core.seeding import numpy_rng


def synthetic_screen(
    plates: int = 6,
    controls_per_plate: int = 8,
    moas: int = 3,
    compounds_per_moa: int = 2,
    doses: int = 2,
    replicates: int = 3,
    features: int = 24,
    rank: int = 4,
    effect: float = 3.0,
    plate_effect: float = 0.5,
    batches: int = 2,
    seed: int = 0,
) -> pd.DataFrame:
    """A profile table in the phenolens/pycytominer convention: Metadata_Plate, Metadata_Well,
    Metadata_Batch, Metadata_PertType (control|trt), Metadata_Treatment, Metadata_Compound,
    Metadata_MoA, then `features` numeric columns named like CellProfiler features.

    Treatments are compound x dose (dose scales the effect). As in BBBC021, every compound is
    screened in one batch (compound mod batches) and its replicates sit on different plates of it.

    Parameters
    ----------
    plates, controls_per_plate, moas, compounds_per_moa, doses, replicates, features : int
        The screen's shape.
    rank : int
        Rank of the shared feature structure.
    effect, plate_effect : float
        Size of a treatment's effect (at the top dose) and of plate offsets, in noise units.
    batches : int
        Batches; each compound is screened in one.
    seed : int
        Seed of every draw.

    Returns
    -------
    pandas.DataFrame
        The profile table, sorted by plate.
    """
    rng = numpy_rng(seed)
    loadings = rng.normal(size=(rank, features))
    n_compounds = moas * compounds_per_moa
    compound_moa = np.repeat(np.arange(moas), compounds_per_moa)
    moa_direction = rng.normal(size=(moas, features))
    compound_direction = moa_direction[compound_moa] + 0.35 * rng.normal(size=(n_compounds, features))
    compound_direction /= np.linalg.norm(compound_direction, axis=1, keepdims=True) / np.sqrt(features)
    treatment_compound = np.repeat(np.arange(n_compounds), doses)
    treatment_dose = np.tile(np.arange(1, doses + 1), n_compounds)
    n_treatments = n_compounds * doses
    well_treatment = np.repeat(np.arange(n_treatments), replicates)
    well_replicate = np.tile(np.arange(replicates), n_treatments)
    plates_per_batch = plates // batches
    if replicates > plates_per_batch:
        raise ValueError(f"{replicates} replicates need {replicates} plates per batch; got {plates} plates in {batches} batches")
    well_batch = treatment_compound[well_treatment] % batches
    treated_plate = well_batch * plates_per_batch + (well_treatment + well_replicate) % plates_per_batch
    control_plate = np.repeat(np.arange(plates), controls_per_plate)
    plate = np.concatenate([control_plate, treated_plate])
    is_control = np.arange(len(plate)) < len(control_plate)
    shift = np.zeros((len(plate), features))
    strength = effect * treatment_dose[well_treatment] / doses
    shift[~is_control] = strength[:, None] * compound_direction[treatment_compound[well_treatment]]
    plate_offsets = plate_effect * rng.normal(size=(plates, features))
    values = rng.normal(size=(len(plate), rank)) @ loadings + 0.5 * rng.normal(size=(len(plate), features)) + shift + plate_offsets[plate]
    treatment_names = np.array([f"cpd{c}@{d}" for c, d in zip(treatment_compound, treatment_dose)])
    order = np.lexsort((np.arange(len(plate)), plate))
    well_index = np.empty(len(plate), dtype=int)
    well_index[order] = np.arange(len(plate)) - np.searchsorted(plate[order], plate[order])
    metadata = pd.DataFrame(
        {
            "Metadata_Plate": [f"P{p:03d}" for p in plate],
            "Metadata_Well": [f"W{w:04d}" for w in well_index],
            "Metadata_Batch": [f"B{min(p // plates_per_batch, batches - 1)}" for p in plate],
            "Metadata_PertType": np.where(is_control, "control", "trt"),
            "Metadata_Treatment": np.concatenate([np.full(is_control.sum(), "DMSO"), treatment_names[well_treatment]]),
            "Metadata_Compound": np.concatenate([np.full(is_control.sum(), "DMSO"), [f"cpd{c}" for c in treatment_compound[well_treatment]]]),
            "Metadata_MoA": np.concatenate(
                [np.full(is_control.sum(), "control"), [f"moa{m}" for m in compound_moa[treatment_compound[well_treatment]]]]
            ),
        }
    )
    names = [f"Cells_Synthetic_Feature_{i:04d}" for i in range(features)]
    return pd.concat([metadata, pd.DataFrame(values, columns=names)], axis=1).iloc[order].reset_index(drop=True)
