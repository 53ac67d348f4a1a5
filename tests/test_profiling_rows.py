"""Issue 20: the evaluation reads a streamed study's unit rows from disk (RowFile) and gets what it gets from memory."""

import numpy as np
import pandas as pd
import pytest

from phenolens.profiling import hits
from phenolens.profiling.replicates import (
    control_similarities,
    percent_replicating_of_unit_rows,
    replicate_map_against_controls,
    row_standardize,
)
from phenolens.profiling.rows import RowFile, write_rows


@pytest.fixture
def study(tmp_path):
    """Unit rows of 60 treatments x 4 replicates on 6 plates (with 5 controls each), in memory and on disk in pieces."""
    rng = np.random.default_rng(0)
    treatments = np.repeat([f"t{i:02d}" for i in range(60)], 4)
    rng.shuffle(treatments)
    effects = {name: rng.normal(size=30) * (i % 2) for i, name in enumerate(sorted(set(treatments)))}
    values = np.stack([effects[t] for t in treatments]) + rng.normal(size=(240, 30))
    controls = rng.normal(size=(30, 30))
    plates = np.concatenate([np.repeat(np.arange(6), 40), np.repeat(np.arange(6), 5)])
    unit = row_standardize(np.vstack([values, controls])).astype(np.float32)
    is_control = np.arange(270) >= 240
    order = np.argsort(plates, kind="stable")  # plate by plate, as the files come
    unit, plates, is_control = unit[order], plates[order], is_control[order]
    treated = unit[~is_control]
    pieces = np.array_split(treated, [17, 100, 101, 101])  # uneven pieces, one empty
    rows = write_rows(tmp_path / "unit.npy", iter(pieces), len(treated), treated.shape[1])
    labels = np.concatenate([treatments, np.full(30, "control")])[order][~is_control]
    return treated, rows, labels, unit, plates, is_control


def test_a_row_file_reads_the_rows_it_was_given(study):
    treated, rows, *_ = study
    assert isinstance(rows, RowFile) and RowFile(rows.path).shape == treated.shape
    assert rows.shape == treated.shape and rows.dtype == np.float32 and len(rows) == len(treated)
    indices = np.array([[5, 0, 239], [17, 100, 17]])
    assert np.array_equal(rows[indices], treated[indices])
    assert np.array_equal(rows[np.arange(len(rows))], treated)
    with pytest.raises(IndexError, match="out of range"):
        rows[[0, len(treated)]]


def test_a_row_file_reads_on_after_a_short_read(study, monkeypatch):
    """One read returns at most about 2 GiB on Linux (and less on network file systems): reading every row of a study's
    representation at once (mAP against all wells) must carry on, not take the short read for a truncated file."""
    import io

    from phenolens.profiling import rows as rows_module

    class ShortReads(io.FileIO):
        def readinto(self, buffer):
            return super().readinto(memoryview(buffer)[:1000])  # as read() caps a transfer at 0x7ffff000 bytes

    treated, rows, *_ = study
    monkeypatch.setattr(rows_module, "open", lambda path, mode, buffering: ShortReads(path, mode), raising=False)
    assert np.array_equal(rows[np.arange(len(rows))], treated)
    assert np.array_equal(rows[[3, 4, 5, 200]], treated[[3, 4, 5, 200]])


def test_write_rows_refuses_pieces_that_do_not_add_up(tmp_path):
    with pytest.raises(ValueError, match="hold 3 rows, not 4"):
        write_rows(tmp_path / "x.npy", [np.zeros((3, 2))], 4, 2)
    with pytest.raises(ValueError, match="does not fit rows of 2 columns"):
        write_rows(tmp_path / "x.npy", [np.zeros((3, 5))], 3, 2)


def test_percent_replicating_and_map_from_disk_equal_them_from_memory(study):
    treated, rows, treatments, unit, plates, is_control = study
    in_memory = percent_replicating_of_unit_rows(treated, treatments, 5, 90.0, 3)
    on_disk = percent_replicating_of_unit_rows(rows, treatments, 5, 90.0, 3)
    pd.testing.assert_frame_equal(in_memory.treatments, on_disk.treatments)
    assert np.array_equal(in_memory.null, on_disk.null) and in_memory.threshold == on_disk.threshold
    assert 0.3 < on_disk.percent_replicating < 0.7  # half the treatments have an effect
    queries, similarities = control_similarities(unit, plates, is_control)
    want = replicate_map_against_controls(treated, treatments, queries, similarities, seed=1, null_size=200)
    got = replicate_map_against_controls(rows, treatments, queries, similarities, seed=1, null_size=200)
    pd.testing.assert_frame_equal(want.treatments, got.treatments)
    assert want.mean_average_precision == got.mean_average_precision


def test_hit_calling_draws_its_null_in_blocks_without_changing_it(monkeypatch):
    rng = np.random.default_rng(1)
    control_scores, scores = rng.random(500), rng.random(400) + 0.2
    treatments = np.repeat(np.arange(100), 4).astype(str)
    treatments[:3] = "three"  # a second group size
    whole = hits.call_hits(scores, treatments, control_scores, permutations=1000, seed=3)
    monkeypatch.setattr(hits, "KEY_BLOCK_BYTES", 8 * 500 * 7 + 1)  # blocks of 7 null groups
    blocks = hits.call_hits(scores, treatments, control_scores, permutations=1000, seed=3)
    pd.testing.assert_frame_equal(whole, blocks)
    assert 0 < whole["hit"].sum() < len(whole)
