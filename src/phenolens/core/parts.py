"""Outputs written one shard at a time, so that a killed run can resume from its last complete shard.

A `PartStore` is a folder of ``part-NNNNNN.parquet`` files (one per shard, readable together by
pandas/pyarrow as one dataset) and of completion markers for shards whose output lives elsewhere
(a Zarr array region). Each part is written to a temporary name and renamed, so a part file that
exists is complete; a shard is done once its part or its marker exists.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from phenolens.core.outputs import atomic_write_text

PART_PATTERN = "part-{index:06d}.parquet"
_DONE = ".done"


class PartStore:
    """The per-shard outputs of one table (or array) of a run.

    Parameters
    ----------
    folder : Path
        Where the parts live (created); typically ``run.path / "predictions.parquet"``.
    on_write : callable, optional
        Called after each completed part or marker (the run writer uses it to mark its staging
        folder as resumable).
    """

    def __init__(self, folder: str | os.PathLike, on_write: Callable[[], None] | None = None) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.on_write = on_write

    def part_path(self, index: int) -> Path:
        """The part file of shard `index`."""
        return self.folder / PART_PATTERN.format(index=index)

    def completed(self) -> set[int]:
        """Indices of the shards whose part or marker exists.

        Returns
        -------
        set of int
            Complete shards (a resumed run skips them).
        """
        done = set(self._table_parts())
        markers = self.folder / _DONE
        if markers.is_dir():
            done |= {int(p.stem) for p in markers.glob("*.txt") if p.stem.isdigit()}
        return done

    def done(self, index: int) -> bool:
        """Whether shard `index` is complete."""
        return index in self.completed()

    def write_table(self, index: int, frame) -> Path:
        """Write shard `index`'s rows as one parquet part (atomically).

        Parameters
        ----------
        index : int
            The shard's index (parts are read back in index order).
        frame : pandas.DataFrame
            The rows; every part of a store must have the same columns and dtypes.

        Returns
        -------
        Path
            The part file.
        """
        final = self.part_path(index)
        staging = final.with_name(f".{final.name}.tmp-{os.getpid()}")
        frame.to_parquet(staging, index=False)
        os.replace(staging, final)
        self._written()
        return final

    def mark_done(self, index: int, note: str = "") -> None:
        """Record shard `index` as complete when its output is not a table (e.g. a Zarr region).

        Call it only after that output is fully written.

        Parameters
        ----------
        index : int
            The shard's index.
        note : str
            Free text kept in the marker (e.g. how many items the shard had).
        """
        markers = self.folder / _DONE
        markers.mkdir(exist_ok=True)
        atomic_write_text(markers / f"{index:06d}.txt", note + "\n")
        self._written()

    def read_table(self, columns: list[str] | None = None):
        """All table parts, concatenated in shard order.

        Parameters
        ----------
        columns : list of str, optional
            Read only these columns.

        Returns
        -------
        pandas.DataFrame
            One row per row of every part, with a fresh index.
        """
        import pandas as pd

        parts = self.paths()
        if not parts:
            return pd.DataFrame(columns=columns)
        return pd.concat([pd.read_parquet(p, columns=columns) for p in parts], ignore_index=True)

    def paths(self) -> list[Path]:
        """The table parts in shard order (not name order, which differs past 999,999 shards).

        Returns
        -------
        list of Path
            One parquet file per shard that wrote a table.
        """
        return [path for _, path in sorted(self._table_parts().items())]

    def _table_parts(self) -> dict[int, Path]:
        """Shard index -> its table part (6 digits pad the names, more past 999,999 shards, so names do not sort)."""
        named = {path.name[len("part-") : -len(".parquet")]: path for path in self.folder.glob("part-*.parquet")}
        return {int(number): path for number, path in named.items() if number.isdigit()}

    def finish(self) -> None:
        """Drop completion markers and the half-written parts of a killed run once every shard is done (the finished
        folder holds only data), and give every table part the same schema, so that the folder reads back as one
        parquet dataset."""
        markers = self.folder / _DONE
        if markers.is_dir():
            for marker in markers.iterdir():
                marker.unlink()
            markers.rmdir()
        for unfinished in self.folder.glob(".part-*.parquet.tmp-*"):
            unfinished.unlink()
        self._unify_schemas()

    def _unify_schemas(self) -> None:
        """Rewrite the parts whose schema differs from the parts' common one.

        A column without a single value in one shard (unlabelled images, an empty metadata column) is
        stored as parquet's null type, and a shard without rows may have no columns at all; a dataset
        reader takes the first part's schema, so it cannot cast a later part's text to it, or drops the
        columns the first part lacks from every part.
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        parts = self.paths()
        schemas = [pq.read_schema(path) for path in parts]
        try:
            common = pa.unify_schemas(schemas)  # a null column takes the type the other parts give it
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            return  # types that truly differ: nothing to reconcile here
        # Keep the pandas metadata of a part that already has the common types (the first one's may call a column empty).
        metadata = next((s.metadata for s in schemas if s.remove_metadata().equals(common.remove_metadata())), common.metadata)
        common = common.with_metadata(metadata)
        for path, schema in zip(parts, schemas):
            if not schema.remove_metadata().equals(common.remove_metadata()):
                table = pq.read_table(path)
                # A shard without any row may have been written without columns (no image of a chunk could be decoded).
                columns = [table[f.name].cast(f.type) if f.name in table.column_names else pa.nulls(len(table), f.type) for f in common]
                table = pa.Table.from_arrays(columns, schema=common)
                staging = path.with_name(f".{path.name}.tmp-{os.getpid()}")
                pq.write_table(table, staging)
                os.replace(staging, path)

    def _written(self) -> None:
        if self.on_write is not None:
            self.on_write()
