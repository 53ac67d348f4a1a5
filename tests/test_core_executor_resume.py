"""The executor (serial and a 2-process Dask LocalCluster give the same results) and resumable runs."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from phenolens.core.errors import PhenolensError
from phenolens.core.executor import Executor, cached
from phenolens.core.runs import INTENT, RESUMABLE, RUN_RECORD, RunWriter, load_run
from phenolens.core.settings import Settings, setting


@dataclass(frozen=True)
class ResumeExampleSettings(Settings):
    chunk: int = setting(4, "Rows per shard.", minimum=1)


def shard_sum(bounds: tuple[int, int]) -> int:
    """A shard function: the sum of squares over a range (top-level, so Dask can ship it)."""
    return sum(i * i for i in range(*bounds))


def refuse_shard(index: int) -> int:
    if index == 2:
        raise PhenolensError("shard 2: a bad file; fix it")
    return index


def count_then_refuse(shard: tuple[str, int]) -> int:
    """A shard that notes each run of it in a file, and refuses shard 1 (a bad input file)."""
    folder, index = shard
    with open(os.path.join(folder, f"runs-{index}.txt"), "a") as runs:
        runs.write("run\n")
    if index == 1:
        raise PhenolensError("shard 1: a bad file; fix it")
    return index


def kill_own_worker(index: int) -> int:
    """A shard whose worker dies every time it runs it (out of memory, a segfault in a library)."""
    if index == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return index


def sleep_span(index: int) -> tuple[float, float]:
    """A shard that takes 0.3 s and says when it ran."""
    started = time.time()
    time.sleep(0.3)
    return started, time.time()


def test_serial_map_keeps_order_and_skips_done_shards():
    with Executor.from_option(None) as executor:
        assert executor.workers == 1
        assert list(executor.map(abs, [-3, 1, -2, 5], skip={1})) == [(0, 3), (2, 2), (3, 5)]


@pytest.mark.parametrize(
    ("option", "message"),
    [("local:0", "whole number of workers"), ("local:x", "whole number"), ("sge", "use serial, local:N"), ("missing.json", "no such scheduler file")],
)
def test_bad_scheduler_options_are_one_line(option, message):
    with pytest.raises(PhenolensError, match=message) as caught:
        Executor.from_option(option)
    assert "--scheduler" in str(caught.value) and "\n" not in str(caught.value)


def test_cached_builds_once_per_process():
    calls = []
    for _ in range(3):
        value = cached(("test", id(calls)), lambda: calls.append(1) or len(calls))
    assert value == 1 and calls == [1]


@pytest.mark.slow
def test_local_cluster_equals_serial_and_passes_user_errors_through():
    shards = [(start, start + 1000) for start in range(0, 20_000, 1000)]
    serial = list(Executor.from_option("serial").map(shard_sum, shards, skip={4}))
    with Executor.from_option("local:2") as executor:
        assert executor.workers == 2
        assert list(executor.map(shard_sum, shards, skip={4})) == serial
        with pytest.raises(PhenolensError, match="shard 2: a bad file"):
            list(executor.map(refuse_shard, range(5)))


@pytest.mark.slow
def test_workers_that_join_after_the_map_started_all_get_shards():
    """The README's SLURM recipe: the batch jobs of the workers are still queued when the run starts. The window of
    shards in flight followed the workers present at the start (none: 2 shards at a time), however many joined later."""
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=0, threads_per_worker=1, processes=True, dashboard_address=None)
    with Executor(Client(cluster), "a cluster whose workers join later", cluster) as executor:
        threading.Timer(0.3, lambda: cluster.scale(3)).start()
        spans = [span for _, span in executor.map(sleep_span, range(18))]
        assert executor.workers == 3
    changes = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    running = np.cumsum([change for _, change in changes])
    assert running.max() == 3


@pytest.mark.slow
def test_a_shard_that_refuses_its_input_runs_once_on_dask_as_in_this_process(tmp_path):
    """Dask's task retries re-ran any shard that raised (a bad file: twice the time before the one-line error); a dead
    worker is retried by the scheduler's allowed failures, not by task retries."""
    with Executor.from_option("local:2") as executor, pytest.raises(PhenolensError, match="shard 1: a bad file"):
        list(executor.map(count_then_refuse, [(str(tmp_path), index) for index in range(3)]))
    assert (tmp_path / "runs-1.txt").read_text().count("run") == 1


@pytest.mark.slow
def test_a_shard_that_kills_every_worker_is_one_line_naming_it():
    import dask

    # Dask retries a shard whose worker died (the scheduler's allowed failures);
    # one allowed failure keeps the test short: the shard's second death ends the map.
    with (
        dask.config.set({"distributed.scheduler.allowed-failures": 1}),
        Executor.from_option("local:2") as executor,
        pytest.raises(PhenolensError, match="shard 1: a Dask worker died running it") as caught,
    ):
        list(executor.map(kill_own_worker, range(3)))
    assert "\n" not in str(caught.value)


def _killed_run(tmp_path, out, done_shards: int, inputs: tuple = (), **writer_options) -> None:
    """Run a writer in a child process that finishes `done_shards` parts and is then SIGKILLed."""
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        import pandas as pd
        sys.path.insert(0, {os.fspath(tmp_path)!r})
        from test_settings_for_child import ResumeChildSettings
        from phenolens.core.runs import RunWriter
        inputs = {[os.fspath(p) for p in inputs]!r}
        with RunWriter({os.fspath(out)!r}, command="test resume", settings=ResumeChildSettings(), inputs=inputs, **{writer_options!r}) as run:
            parts = run.parts("rows.parquet")
            for index in range({done_shards}):
                parts.write_table(index, pd.DataFrame({{"shard": [index] * 3, "value": [index * 10 + i for i in range(3)]}}))
            os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    (tmp_path / "test_settings_for_child.py").write_text(
        "from dataclasses import dataclass\nfrom phenolens.core.settings import Settings, setting\n"
        "@dataclass(frozen=True)\nclass ResumeChildSettings(Settings):\n    chunk: int = setting(4, 'Rows per shard.', minimum=1)\n"
    )
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()


def _finish(out, **options) -> RunWriter:
    sys.path.insert(0, str(out.parent))
    from test_settings_for_child import ResumeChildSettings

    chunk = options.pop("chunk", 4)
    with RunWriter(out, command="test resume", settings=ResumeChildSettings(chunk=chunk), **options) as run:
        parts = run.parts("rows.parquet")
        todo = [i for i in range(5) if i not in parts.completed()]
        for index in todo:
            parts.write_table(index, pd.DataFrame({"shard": [index] * 3, "value": [index * 10 + i for i in range(3)]}))
        run.skipped = 5 - len(todo)
    return run


def test_a_killed_run_is_refused_without_resume_and_continued_with_it(tmp_path):
    out = tmp_path / "run"
    _killed_run(tmp_path, out, done_shards=3)
    assert not out.exists(), "a killed run must not leave a finished-looking folder"
    with pytest.raises(PhenolensError, match="pass --resume to continue it or --overwrite"):
        _finish(out)
    with pytest.raises(PhenolensError, match="had other settings"):
        _finish(out, resume=True, chunk=8)
    run = _finish(out, resume=True)
    assert run.resumed and run.skipped == 3
    assert load_run(out).command == "test resume"
    assert not (out / INTENT).exists() and not (out / RESUMABLE).exists() and (out / RUN_RECORD).is_file()
    rows = pd.read_parquet(out / "rows.parquet")
    expected = pd.DataFrame({"shard": [i for i in range(5) for _ in range(3)], "value": [i * 10 + j for i in range(5) for j in range(3)]})
    pd.testing.assert_frame_equal(rows.sort_values(["shard", "value"]).reset_index(drop=True), expected)
    assert not list(tmp_path.glob(".run.partial-*"))


def test_overwrite_discards_the_interrupted_work(tmp_path):
    out = tmp_path / "run"
    _killed_run(tmp_path, out, done_shards=2)
    run = _finish(out, overwrite=True)
    assert not run.resumed and run.skipped == 0
    assert not list(tmp_path.glob(".run.partial-*"))


def test_resume_without_an_interrupted_run_starts_from_the_beginning(tmp_path):
    run = _finish(tmp_path / "fresh", resume=True)
    assert not run.resumed and run.skipped == 0


def test_an_error_keeps_complete_shards_for_resume_and_plain_failures_leave_nothing(tmp_path):
    settings = ResumeExampleSettings()
    with pytest.raises(PhenolensError), RunWriter(tmp_path / "a", command="test", settings=settings) as run:
        run.parts("rows.parquet").write_table(0, pd.DataFrame({"x": [1]}))
        raise PhenolensError("a bad file half way")
    kept = list(tmp_path.glob(".a.partial-*"))
    assert len(kept) == 1 and (kept[0] / "rows.parquet" / "part-000000.parquet").is_file()
    with pytest.raises(PhenolensError), RunWriter(tmp_path / "b", command="test", settings=settings):
        raise PhenolensError("bad before any shard")
    assert not list(tmp_path.glob(".b.partial-*")) and not (tmp_path / "b").exists()


def test_parts_markers_and_finish(tmp_path):
    settings = ResumeExampleSettings()
    with RunWriter(tmp_path / "z", command="test", settings=settings) as run:
        parts = run.parts("maps")
        parts.mark_done(0, "12 images")
        parts.mark_done(2)
        assert parts.completed() == {0, 2} and parts.done(2) and not parts.done(1)
        parts.finish()
        assert parts.completed() == set()
    assert (tmp_path / "z" / "maps").is_dir() and not list((tmp_path / "z" / "maps").iterdir())


def test_parts_past_a_million_shards_keep_their_index(tmp_path):
    settings = ResumeExampleSettings()
    with RunWriter(tmp_path / "z", command="test", settings=settings) as run:
        parts = run.parts("table.parquet")
        for index in (1_234_567, 999_999, 7):
            parts.write_table(index, pd.DataFrame({"shard": [index]}))
        assert parts.completed() == {7, 999_999, 1_234_567}
        assert parts.read_table()["shard"].tolist() == [7, 999_999, 1_234_567]  # shard order, not name order


def test_resume_refuses_an_input_edited_since_the_interrupted_run_started(tmp_path):
    table = tmp_path / "wells.csv"
    table.write_text("well,value\nA01,1\n")
    out = tmp_path / "run"
    _killed_run(tmp_path, out, done_shards=2, inputs=(table,))
    table.write_text("well,value\nA01,2\nA02,3\n")  # edited in place: same path, other content
    with pytest.raises(PhenolensError, match=r"had other inputs \(or an input changed since it started\)"):
        _finish(out, resume=True, inputs=[table])
    run = _finish(out, overwrite=True, inputs=[table])
    assert not run.resumed and run.skipped == 0


def test_resume_refuses_another_dataset_or_another_option_outside_the_settings(tmp_path):
    """A registered dataset, or --channels given in another order, changes what every later shard computes."""
    out = tmp_path / "run"
    _killed_run(tmp_path, out, done_shards=2, datasets=["bbbc021"], options={"channels": "GFP,DNA"})
    with pytest.raises(PhenolensError, match="had other datasets"):
        _finish(out, resume=True, datasets=["bbbc013"], options={"channels": "GFP,DNA"})
    with pytest.raises(PhenolensError, match="had other options"):
        _finish(out, resume=True, datasets=["bbbc021"], options={"channels": "DNA,GFP"})
    run = _finish(out, resume=True, datasets=["bbbc021"], options={"channels": "GFP,DNA"})
    assert run.resumed and run.skipped == 2


def test_resume_continues_a_run_whose_out_lies_inside_its_input_run(tmp_path):
    model = tmp_path / "model"  # an input run (``explain MODEL --out MODEL/explain``): the staging folder grows inside it
    model.mkdir()
    (model / RUN_RECORD).write_text("{}")
    out = model / "explain"
    _killed_run(tmp_path, out, done_shards=2, inputs=(model,))
    run = _finish(out, resume=True, inputs=[model])
    assert run.resumed and run.skipped == 2


def test_finished_parts_read_back_as_one_dataset_when_a_column_is_empty_in_the_first_part(tmp_path):
    """A shard whose text column holds no value at all (unlabelled images, an empty metadata column) is stored as parquet's
    null type; a folder whose first part has it could not be read as one dataset once a later part held text."""
    settings = ResumeExampleSettings()
    with RunWriter(tmp_path / "z", command="test", settings=settings) as run:
        parts = run.parts("table.parquet")
        parts.write_table(0, pd.DataFrame({"label": pd.Series([None, None], dtype=object), "p": [0.1, 0.2]}))
        parts.write_table(1, pd.DataFrame({"label": pd.Series(["DMSO"], dtype=object), "p": [0.3]}))
        parts.write_table(2, pd.DataFrame({"label": pd.Series([None], dtype=object), "p": [0.4]}))
        expected = parts.read_table()
        parts.finish()
    table = pd.read_parquet(tmp_path / "z" / "table.parquet")
    assert table["label"].isna().tolist() == [True, True, False, True] == expected["label"].isna().tolist()
    assert table["label"][2] == "DMSO"
    assert table["p"].tolist() == [0.1, 0.2, 0.3, 0.4]


def test_finish_removes_a_part_a_killed_run_left_half_written(tmp_path):
    """A kill while a part was being written leaves its hidden temporary file; the resumed run's folder must hold what an
    uninterrupted run's holds."""
    settings = ResumeExampleSettings()
    with RunWriter(tmp_path / "z", command="test", settings=settings) as run:
        parts = run.parts("table.parquet")
        (parts.folder / ".part-000001.parquet.tmp-4242").write_bytes(b"PAR1 half a part")
        for index in range(2):
            parts.write_table(index, pd.DataFrame({"shard": [index]}))
        parts.finish()
    assert sorted(path.name for path in (tmp_path / "z" / "table.parquet").iterdir()) == ["part-000000.parquet", "part-000001.parquet"]


def test_finished_parts_keep_every_column_when_the_first_shard_had_no_row(tmp_path):
    """A chunk none of whose images could be decoded writes a part without columns: read as a dataset, the finished folder
    took that part's (empty) schema and gave no columns for any row."""
    settings = ResumeExampleSettings()
    with RunWriter(tmp_path / "z", command="test", settings=settings) as run:
        parts = run.parts("per_image.parquet")
        parts.write_table(0, pd.DataFrame())
        parts.write_table(1, pd.DataFrame({"source": ["a.tif", "b.tif"], "share": [0.25, 0.5]}))
        parts.finish()
    table = pd.read_parquet(tmp_path / "z" / "per_image.parquet")
    assert table.columns.tolist() == ["source", "share"] and table["source"].tolist() == ["a.tif", "b.tif"]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    shards=st.lists(
        st.one_of(st.none(), st.lists(st.one_of(st.none(), st.sampled_from(["DMSO", "taxol"])), min_size=1, max_size=4)), min_size=1, max_size=6
    ),
    order=st.randoms(use_true_random=False),
)
def test_finished_parts_read_back_as_the_shards_in_order_whatever_they_hold(tmp_path_factory, shards, order):
    """Shards written in any order, some without rows (no columns), some whose labels are all empty: the finished folder
    reads back, as one parquet dataset, as the shards' rows in shard order."""
    out = tmp_path_factory.mktemp("parts") / "run"
    frames = {
        index: pd.DataFrame() if labels is None else pd.DataFrame({"label": pd.Series(labels, dtype=object), "shard": [index] * len(labels)})
        for index, labels in enumerate(shards)
    }
    with RunWriter(out, command="test", settings=ResumeExampleSettings()) as run:
        parts = run.parts("table.parquet")
        for index in order.sample(sorted(frames), len(frames)):
            parts.write_table(index, frames[index])
        parts.finish()
    expected = [(label, index) for index, labels in enumerate(shards) for label in labels or []]
    if not expected:
        return  # no row at all: nothing to type the columns by
    table = pd.read_parquet(out / "table.parquet")
    assert [(None if pd.isna(label) else label, int(index)) for label, index in zip(table["label"], table["shard"])] == expected


def test_a_staging_folder_of_a_run_on_another_host_is_never_removed_or_adopted(tmp_path, monkeypatch):
    """On shared storage the writing process may be alive on another node: this host cannot tell, so it refuses to
    remove or continue it and says which host holds it; --overwrite (the user knows it is dead) discards it."""
    import phenolens.core.runs as runs

    out = tmp_path / "run"
    _killed_run(tmp_path, out, done_shards=2)
    (staging,) = tmp_path.glob(".run.partial-*")
    monkeypatch.setattr(runs, "_this_host", lambda: "login-node-7")  # this process now looks like another node
    assert runs.stale_partials(out) == []
    for options in ({}, {"resume": True}):
        with pytest.raises(PhenolensError, match=r"a run on host .+ \(process \d+\).*--overwrite") as refused:
            _finish(out, **options)
        assert socket.gethostname() in str(refused.value) and "\n" not in str(refused.value)
        assert staging.is_dir() and not out.exists()
    # a foreign folder without complete work is not removed either
    (staging / RESUMABLE).unlink()
    assert runs.remove_stale_partials(out) == [] and staging.is_dir()
    run = _finish(out, overwrite=True)
    assert not run.resumed and run.skipped == 0 and not staging.exists()


def test_a_staging_folder_whose_process_id_was_reused_is_taken_for_a_killed_run(tmp_path):
    """The killed run's process id now belongs to a live process that started later: the folder is a killed run's."""
    import phenolens.core.runs as runs

    out = tmp_path / "run"
    _killed_run(tmp_path, out, done_shards=2)
    (killed,) = tmp_path.glob(".run.partial-*")
    owner = json.loads((killed / runs.OWNER).read_text())
    reused = tmp_path / f".run.partial-{os.getpid()}-reused"  # this live test process took over the id
    killed.rename(reused)
    started = psutil.Process().create_time() - 3600  # the killed run started an hour before the process now holding its id
    (reused / runs.OWNER).write_text(json.dumps({**owner, "pid": os.getpid(), "process_started": started}))
    assert runs.stale_partials(out) == [reused]
    run = _finish(out, resume=True)
    assert run.resumed and run.skipped == 2


def test_a_staging_folder_of_a_live_run_on_this_host_is_left_alone_and_old_records_keep_the_process_id_rule(tmp_path):
    import phenolens.core.runs as runs

    out = tmp_path / "run"
    with RunWriter(out, command="test", settings=ResumeExampleSettings()) as run:
        owner = json.loads((run.path / runs.OWNER).read_text())
        assert owner["host"] == runs._this_host() and owner["pid"] == os.getpid() and owner["process_started"] > 0
        assert runs.stale_partials(out) == []
        (run.path / runs.OWNER).unlink()  # a staging folder written before hosts were recorded: judged by its process id
        assert runs.stale_partials(out) == []
    old = tmp_path / ".run.partial-999999999-old"
    old.mkdir()
    assert runs.stale_partials(out) == [old]
