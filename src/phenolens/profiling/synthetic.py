"""Synthetic well-level screens with a known answer, for tests and benchmarks (never for results).

Features share a low-rank structure (as CellProfiler features do), plates add offsets, every MoA
moves wells along its own direction and every compound adds its own twist, so replicate
reproducibility, MoA neighbours and hits have known answers. Replicates sit on different plates.
"""

from __future__ import annotations

from pathlib import Path

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


def synthetic_study(
    folder: str | Path,
    plates: int = 1500,
    wells: int = 384,
    features: int = 800,
    controls: int = 16,
    replicates: int = 4,
    layout: str = "spread",
    moas: int = 0,
    active: float = 0.5,
    effect: float = 1.5,
    plate_effect: float = 0.5,
    rank: int = 8,
    dropped_features: int = 0,
    seed: int = 0,
) -> list[Path]:
    """Write a synthetic screen of many plates, one parquet file per plate (float32), generated a plate at a time.

    Metadata: Metadata_Plate, Metadata_Well, Metadata_pert_type (``negcon`` | ``trt``),
    Metadata_broad_sample (``DMSO`` or ``BRD-<n>``) and, with `moas`, Metadata_moa. Features share a
    rank-`rank` structure plus noise; every plate adds its own offset (`plate_effect`); a fraction
    `active` of the treatments moves its wells along its own direction (`effect`, in noise units),
    the rest do nothing, so which treatments replicate is known.

    Parameters
    ----------
    folder : str or Path
        Where the files go (created); ``plate-00000.parquet``, ...
    plates, wells, features, controls : int
        Plates, wells per plate, features, negative-control wells per plate.
    replicates : int
        ``spread``: wells per treatment, on consecutive plates (one per plate while plates >= replicates);
        ``pilot``: wells per treatment per plate.
    layout : {"spread", "pilot"}
        ``spread``: every treatment on `replicates` plates (a JUMP-scale compound screen);
        ``pilot``: the same treatments on every plate (a JUMP pilot: replicates = plates x `replicates`).
    moas : int
        Mechanisms of action (treatment t has MoA t mod moas and moves along its MoA's direction); 0: no MoA column.
    active : float
        Fraction of treatments with an effect.
    effect, plate_effect : float
        Sizes of treatment effects and plate offsets, in noise units.
    rank : int
        Rank of the shared feature structure.
    dropped_features : int
        Features left out of each plate's file (a different random set per plate), as per-plate
        feature selection leaves them.
    seed : int
        Seed of every draw (plate p uses its own stream, so plates can be made in any order).

    Returns
    -------
    list of Path
        The files, in plate order.

    Raises
    ------
    ValueError
        For a layout that does not fit the plate (more controls than wells, too few treated wells).
    """
    treated = wells - controls
    if treated < replicates or controls < 2:
        raise ValueError(f"{wells} wells with {controls} controls leave no room for {replicates} replicates")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = numpy_rng(seed)
    loadings = rng.normal(size=(rank, features)).astype(np.float32)
    if layout == "pilot":
        per_plate = treated // replicates
        n_treatments = per_plate
    elif layout == "spread":
        n_treatments = plates * treated // replicates
    else:
        raise ValueError(f"unknown layout {layout!r}; use spread or pilot")
    directions = rng.normal(size=(max(moas, 1), features)).astype(np.float32)
    codes = rng.normal(size=(n_treatments, 16)).astype(np.float32)
    basis = rng.normal(size=(16, features)).astype(np.float32) / 4
    strength = np.where(rng.random(n_treatments) < active, effect, 0.0).astype(np.float32)
    names = [f"Cells_Synthetic_Feature_{i:04d}" for i in range(features)]
    paths = []
    for plate in range(plates):
        plate_rng = numpy_rng(seed * 1_000_003 + plate + 1)
        if layout == "pilot":
            treatment = np.repeat(np.arange(per_plate), replicates)
            treatment = np.concatenate([treatment, np.full(treated - len(treatment), -1)])
        else:
            slots = np.arange(treated) * plates + plate  # slot-major order: a treatment's replicates land on consecutive plates
            treatment = np.where(slots // replicates < n_treatments, slots // replicates, -1)
        is_control = np.concatenate([np.ones(controls, dtype=bool), np.zeros(treated, dtype=bool)])
        treatment = np.concatenate([np.full(controls, -1), treatment])
        plate_rng.shuffle(order := np.arange(wells))
        is_control, treatment = is_control[order], treatment[order]
        values = plate_rng.normal(size=(wells, rank)).astype(np.float32) @ loadings
        values += 0.5 * plate_rng.standard_normal(size=(wells, features), dtype=np.float32)
        values += plate_effect * plate_rng.standard_normal(size=features, dtype=np.float32)
        moved = treatment >= 0
        shift = codes[treatment[moved]] @ basis + (directions[treatment[moved] % max(moas, 1)] if moas else 0)
        values[moved] += strength[treatment[moved], None] * shift
        metadata = {
            "Metadata_Plate": f"P{plate:05d}",
            "Metadata_Well": [f"W{w:03d}" for w in range(wells)],
            "Metadata_pert_type": np.where(is_control, "negcon", "trt"),
            "Metadata_broad_sample": np.where(is_control, "DMSO", np.char.add("BRD-", np.char.zfill(treatment.astype(str), 6))),
        }
        if moas:
            metadata["Metadata_moa"] = np.where(is_control, "control", np.char.add("moa", (np.maximum(treatment, 0) % moas).astype(str)))
        frame = pd.concat([pd.DataFrame(metadata), pd.DataFrame(values, columns=names)], axis=1)
        frame = frame[~(treatment < 0) | is_control]  # wells left over by the layout stay empty
        if dropped_features:
            frame = frame.drop(columns=list(plate_rng.choice(names, size=dropped_features, replace=False)))
        path = folder / f"plate-{plate:05d}.parquet"
        frame.to_parquet(path, index=False)
        paths.append(path)
    return paths
