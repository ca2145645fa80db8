"""Operating the jobs: one writer per warehouse, publish killed at every step, the gate checking
the model it vouches for, damaged files and bad arguments as one ``ERROR:`` line.

Processes are real (a second job, a holder killed with SIGKILL, a publish that dies with
``os._exit`` at a named step); faults are injected at the instant described, and the
assertions are about what a reader of the table sees afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import textwrap
import threading
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys_core.entrypoint import EXIT_BAD_INPUT, EXIT_BUSY, run_main
from recsys_core.errors import ConfigError, InputError, WarehouseBusy
from recsys_core.fs_swap import publish_dir, recover
from recsys_core.lock import ENV_HELD, lock_path, warehouse_lock
from recsys_core.paths import Warehouse
from recsys_core.publish.connection import sql_url_from_connection
from recsys_core.publish.publish import run_publish
from recsys_core.run_params import validate_run

from .conftest import ROOT, VENV_BIN
from .test_publish import DS1, DS2, expected, make_recs, parquet_rows, real_version, stage

PYTHON = str(VENV_BIN / "python")


def env(**extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if k not in ("RECSYS_SQL_URL", "RECSYS_LOCK_WAIT", ENV_HELD)}
    return {**base, "PYTHONPATH": str(ROOT), **extra}


def job(script: str, *args: str, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, f"jobs/{script}", *args], cwd=ROOT, env=env(**extra), capture_output=True,
                          text=True, timeout=300, check=False)  # fmt: skip


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("ERROR:")]


def hidden(table_dir: Path) -> list[str]:
    return sorted(p.name for p in table_dir.iterdir() if p.name.startswith((".", "_"))) if table_dir.exists() else []


# ---------------------------------------------------------------- one writer per warehouse

HOLDER = textwrap.dedent("""
    import pathlib, sys, time
    from recsys_core.lock import warehouse_lock
    wh, job, ds, held, release = sys.argv[1:6]
    with warehouse_lock(wh, job=job, ds=ds):
        pathlib.Path(held).write_text("held")
        while not pathlib.Path(release).exists():
            time.sleep(0.02)
""")


class Holder:
    """A process that holds the warehouse lock until ``release()``."""

    def __init__(self, wh: Path, tmp: Path, job: str = "score", ds: str = DS1) -> None:
        self.held, self.released = tmp / f"held-{job}", tmp / f"release-{job}"
        self.proc = subprocess.Popen([PYTHON, "-c", HOLDER, str(wh), job, ds, str(self.held), str(self.released)],
                                     env=env())  # fmt: skip
        deadline = time.monotonic() + 60
        while not self.held.exists():
            assert self.proc.poll() is None and time.monotonic() < deadline, "the holder did not take the lock"
            time.sleep(0.02)

    def release(self) -> None:
        self.released.write_text("go")
        assert self.proc.wait(30) == 0


def test_a_second_writer_fails_at_once_naming_the_holder_or_waits_for_it(tmp_path):
    wh = tmp_path / "wh"
    recs = make_recs(n_users=6)
    stage(wh, DS1, recs)
    holder = Holder(wh, tmp_path, job="score")
    try:
        started = time.monotonic()
        result = job("publish.py", "--warehouse", str(wh), "--ds", DS1)
        assert result.returncode == EXIT_BUSY and time.monotonic() - started < 30, result.stderr[-2000:]
        [line] = error_lines(result.stderr)
        assert f"warehouse {wh} is busy: job score for ds={DS1} (pid {holder.proc.pid} on " in line
        assert "re-run publish" in line and "RECSYS_LOCK_WAIT" in line
        assert not (wh / "recommendations").exists()  # nothing was touched

        waiting = subprocess.Popen([PYTHON, "jobs/publish.py", "--warehouse", str(wh), "--ds", DS1], cwd=ROOT,
                                   env=env(RECSYS_LOCK_WAIT="120"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True)  # fmt: skip
        time.sleep(2)
        assert waiting.poll() is None and not (wh / "recommendations").exists()  # waits, publishes nothing
    finally:
        holder.release()
    _, err = waiting.communicate(timeout=120)
    assert waiting.returncode == 0, err[-2000:]
    assert "waiting up to" in err and parquet_rows(wh) == expected(DS1, recs)


def test_a_killed_holder_leaves_no_lock_behind(tmp_path):
    wh = tmp_path / "wh"
    holder = Holder(wh, tmp_path)
    with pytest.raises(WarehouseBusy, match="job score"), warehouse_lock(str(wh), job="x", wait=0):
        pass
    os.kill(holder.proc.pid, signal.SIGKILL)
    holder.proc.wait(30)
    with warehouse_lock(str(wh), job="after", wait=0) as record:  # the kernel dropped the lock with the process
        assert record["job"] == "after" and record["pid"] == os.getpid()
    assert Path(lock_path(str(wh))).exists()  # the lock file stays (deleting it would split the lock)


CHILD = textwrap.dedent("""
    import sys
    from recsys_core.errors import WarehouseBusy
    from recsys_core.lock import warehouse_lock
    try:
        with warehouse_lock(sys.argv[1], job="child", wait=0):
            print("ran")
    except WarehouseBusy as exc:
        print(exc)
        sys.exit(75)
""")


def test_a_child_of_the_holder_goes_on_under_its_lock_and_others_do_not(tmp_path):
    wh = str(tmp_path / "wh")
    with warehouse_lock(wh, job="ingest", ds=DS1):  # what the DAG's Spark task does around spark-submit
        child = subprocess.run([PYTHON, "-c", CHILD, wh], env={**env(), ENV_HELD: os.environ[ENV_HELD]},
                               capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
        assert child.returncode == 0 and "ran" in child.stdout, child.stdout + child.stderr
        stranger = subprocess.run([PYTHON, "-c", CHILD, wh], env=env(), capture_output=True, text=True,
                                  timeout=120, check=False)  # fmt: skip
        assert stranger.returncode == 75 and f"job ingest for ds={DS1}" in stranger.stdout
    assert ENV_HELD not in os.environ


PAUSED_PUBLISH = textwrap.dedent("""
    import pathlib, sys, time
    from recsys_core.lock import warehouse_lock
    from recsys_core.publish.publish import run_publish
    wh, ds, url, paused, resume = sys.argv[1:6]
    def hook(at, info):
        if at == "before_swap":
            pathlib.Path(paused).write_text(info["path"])
            while not pathlib.Path(resume).exists():
                time.sleep(0.02)
    with warehouse_lock(wh, job="publish", ds=ds):
        run_publish(wh, ds, sql_url=url, hook=hook)
""")


def test_two_publishes_of_one_ds_at_once_never_delete_each_others_work(tmp_path):
    wh, url = tmp_path / "wh", f"sqlite:///{tmp_path}/recs.db"
    recs = make_recs(n_users=9)
    stage(wh, DS1, recs)
    paused, resume = tmp_path / "paused", tmp_path / "resume"
    first = subprocess.Popen([PYTHON, "-c", PAUSED_PUBLISH, str(wh), DS1, url, str(paused), str(resume)], env=env())
    while not paused.exists():
        assert first.poll() is None
        time.sleep(0.02)
    second = subprocess.Popen([PYTHON, "jobs/publish.py", "--warehouse", str(wh), "--ds", DS1, "--sql-url", url],
                              cwd=ROOT, env=env(RECSYS_LOCK_WAIT="120"), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)  # fmt: skip
    time.sleep(2)
    assert second.poll() is None  # waiting for the lock, not cleaning the first one's staging copy
    assert Path(paused.read_text()).is_dir()
    resume.write_text("go")
    assert first.wait(60) == 0
    _, err = second.communicate(timeout=120)
    assert second.returncode == 0, err[-2000:]
    assert parquet_rows(wh) == expected(DS1, recs) and hidden(wh / "recommendations") == []


# ---------------------------------------------------------------- publish killed at every step

KILLED_PUBLISH = textwrap.dedent("""
    import os, sys
    from recsys_core import fs_swap
    from recsys_core.publish import parquet_table
    from recsys_core.publish.publish import run_publish
    wh, ds, url, point = sys.argv[1:5]
    def hook(at, info):
        if at == point and (at != "during_sql_load" or info["batches"] == 2):
            os._exit(9)  # no cleanup, no finally: as a kill -9 or a lost machine would
    import pyarrow.fs as pafs
    class DiesAfterFirstRename(pafs.FileSystemHandler):  # the local filesystem, but the process dies
        local = pafs.LocalFileSystem()
        def __eq__(self, other): return self is other
        def __ne__(self, other): return self is not other
        def get_type_name(self): return "dies-after-first-rename"
        def normalize_path(self, path): return path
        def get_file_info(self, paths): return self.local.get_file_info(paths)
        def get_file_info_selector(self, selector): return self.local.get_file_info(selector)
        def create_dir(self, path, recursive): self.local.create_dir(path, recursive=recursive)
        def delete_dir(self, path): self.local.delete_dir(path)
        def delete_dir_contents(self, path, missing_dir_ok=False): self.local.delete_dir_contents(path, missing_dir_ok)
        def delete_root_dir_contents(self): raise NotImplementedError
        def delete_file(self, path): self.local.delete_file(path)
        def copy_file(self, src, dest): self.local.copy_file(src, dest)
        def open_input_stream(self, path): return self.local.open_input_stream(path)
        def open_input_file(self, path): return self.local.open_input_file(path)
        def open_output_stream(self, path, metadata): return self.local.open_output_stream(path, metadata=metadata)
        def open_append_stream(self, path, metadata): return self.local.open_append_stream(path, metadata=metadata)
        def move(self, src, dest):
            self.local.move(src, dest)
            os._exit(9)  # right after the rename
    if point == "first_rename":  # whatever publish renames first, it dies right after it
        dies = pafs.PyFileSystem(DiesAfterFirstRename())
        real = fs_swap.filesystem
        fs_swap.filesystem = parquet_table.filesystem = lambda path: (dies, real(path)[1])
    run_publish(wh, ds, sql_url=url, hook=hook, batch_rows=50)
""")
STEPS = ["after_staging", "before_swap", "first_rename", "after_swap", "during_sql_load", "before_sql_commit",
         "after_sql"]  # fmt: skip


def sql_versions(url: str) -> dict[str, tuple[int, set]]:
    import sqlite3

    with sqlite3.connect(url[len("sqlite:///") :]) as db:
        rows = db.execute("SELECT ds, count(*), group_concat(DISTINCT model_version) FROM recommendations "
                          "GROUP BY ds").fetchall()  # fmt: skip
    return {ds: (n, set(versions.split(","))) for ds, n, versions in rows}


@pytest.mark.parametrize("step", STEPS)
def test_publish_killed_at_any_step_leaves_readers_the_old_or_the_new_partition(tmp_path, step):
    wh, url = tmp_path / "wh", f"sqlite:///{tmp_path}/recs.db"
    old, new = make_recs(n_users=30, version="v1", seed=1), make_recs(n_users=20, version="v2", seed=2)
    stage(wh, DS1, old)
    run_publish(wh, DS1, sql_url=url)
    stage(wh, DS1, new)
    killed = subprocess.run([PYTHON, "-c", KILLED_PUBLISH, str(wh), DS1, url, step], env=env(), capture_output=True,
                            text=True, timeout=120, check=False)  # fmt: skip
    assert killed.returncode == 9, killed.stderr[-2000:]

    swapped = STEPS.index(step) >= STEPS.index("first_rename")  # the swap is that one rename
    table = pd.read_parquet(wh / "recommendations")  # a reader of the whole table (hive ds)
    assert len(table) == (new if swapped else old).num_rows
    assert set(table.model_version) == {real_version(DS1, "v2" if swapped else "v1")}
    assert parquet_rows(wh) == expected(DS1, new if swapped else old)
    committed = step == "after_sql"
    assert sql_versions(url) == {DS1: ((new if committed else old).num_rows,
                                       {real_version(DS1, "v2" if committed else "v1")})}  # fmt: skip

    summary = run_publish(wh, DS1, sql_url=url)  # the retry completes and cleans what the kill left
    assert summary["rows"] == new.num_rows and parquet_rows(wh) == expected(DS1, new)
    assert sql_versions(url) == {DS1: (new.num_rows, {real_version(DS1, "v2")})}
    assert hidden(wh / "recommendations") == [] and os.listdir(wh / "recommendations" / f"ds={DS1}") == [
        "part-00000.parquet"]  # fmt: skip


def test_a_reader_polling_the_partition_through_publishes_always_finds_a_whole_one(tmp_path):
    """Readers racing real publishes (the kill test above pins the instant; this one samples them)."""
    wh, url = tmp_path / "wh", f"sqlite:///{tmp_path}/recs.db"
    tables = {v: make_recs(n_users=40 + 10 * i, version=v, seed=i) for i, v in enumerate(("v1", "v2", "v3"))}
    stage(wh, DS1, tables["v1"])
    run_publish(wh, DS1, sql_url=url)
    whole = {real_version(DS1, v): t.num_rows for v, t in tables.items()}
    part = wh / "recommendations" / f"ds={DS1}"
    seen, problems, done = [], [], threading.Event()

    def read() -> None:
        while not done.is_set():
            try:
                frame = pd.read_parquet(part)
                versions = set(frame.model_version)
                if len(versions) != 1 or whole[versions.pop()] != len(frame):
                    problems.append(f"mixed or partial: {len(frame)} rows")
                seen.append(len(frame))
            except Exception as exc:  # noqa: BLE001 - any failure to read is what this test looks for
                problems.append(repr(exc))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(12):
            stage(wh, DS1, tables[("v2", "v3", "v1")[i % 3]], files=1)
            run_publish(wh, DS1, sql_url=url)
    finally:
        done.set()
        reader.join(30)
    assert problems == [] and len(seen) > 12


SWAP_KILLED = textwrap.dedent("""
    import os, sys
    from recsys_core import fs_swap
    real = fs_swap.filesystem
    class Dies:
        moves = 0
        def __init__(self, fs):
            self.fs = fs
        def __getattr__(self, name):
            return getattr(self.fs, name)
        def move(self, src, dst):
            Dies.moves += 1
            if Dies.moves == 2:
                os._exit(9)  # between the old copy moved aside and the new one moved in
            return self.fs.move(src, dst)
    fs_swap.filesystem = lambda path: (Dies(real(path)[0]), real(path)[1])
    fs_swap.publish_dir(sys.argv[1], lambda staging: open(staging + "/weights", "w").write("new"))
""")


def test_a_directory_swap_killed_between_its_renames_is_restored_by_the_next_writer(tmp_path):
    final = tmp_path / "models" / f"ds={DS1}"
    publish_dir(str(final), lambda staging: Path(staging, "weights").write_text("old"))
    killed = subprocess.run([PYTHON, "-c", SWAP_KILLED, str(final)], env=env(), capture_output=True, text=True,
                            timeout=120, check=False)  # fmt: skip
    assert killed.returncode == 9, killed.stderr[-2000:]
    left = sorted(p.name.endswith("-old") for p in final.parent.iterdir())
    assert not final.exists() and left == [False, True]  # the new copy and the old one, both hidden
    assert len(recover(str(final))) == 1  # the unfinished new copy deleted, the old one put back
    assert (final / "weights").read_text() == "old" and os.listdir(final.parent) == [final.name]
    publish_dir(str(final), lambda staging: Path(staging, "weights").write_text("newer"))
    assert (final / "weights").read_text() == "newer" and os.listdir(final.parent) == [final.name]


# ---------------------------------------------------------------- the gate checks what it publishes


@pytest.fixture(scope="module")
def scored(tmp_path_factory) -> Warehouse:
    """A tiny trained, scored and checked warehouse (real torch)."""
    from recsys_core.scoring.check import run_check
    from recsys_core.scoring.score import ScoreConfig, run_scoring
    from recsys_core.training.train import run_training

    from .test_training import DS, TINY, write_tiny_features

    assert DS == "2018-09-30"
    wh = write_tiny_features(tmp_path_factory.mktemp("gate") / "wh")
    run_training(wh, DS, TINY)
    run_scoring(wh, DS, ScoreConfig(top_n=10, device="cpu"))
    run_check(wh, DS, 0.0)
    return wh


def copy_of(wh: Warehouse, tmp_path: Path) -> Warehouse:
    shutil.copytree(wh.root, tmp_path / "wh")
    return Warehouse(str(tmp_path / "wh"))


def test_rows_of_a_model_trained_again_since_are_neither_passed_nor_published(scored, tmp_path):
    from recsys_core.model_version import current_model_version
    from recsys_core.scoring.check import GateFailed, run_check
    from recsys_core.scoring.score import ScoreConfig, run_scoring
    from recsys_core.training.train import run_training

    from .test_training import DS, TINY

    wh, url = copy_of(scored, tmp_path), f"sqlite:///{tmp_path}/recs.db"
    scored_by = json.loads(Path(wh.recommendations_staging(DS), "_check.json").read_text())["model_version"]
    run_training(wh, DS, replace(TINY, seed=TINY.seed + 1))  # train re-run alone, after check
    retrained = current_model_version(wh.models(DS), DS)
    assert retrained != scored_by
    with pytest.raises(InputError, match=f"scored by model {scored_by}, but models/ds={DS} now holds model "
                                         f"{retrained} .*re-run score, then check"):  # fmt: skip
        run_publish(wh, DS, sql_url=url)
    assert not Path(wh.recommendations(DS)).exists()
    with pytest.raises(GateFailed, match="model_version_mismatch.*re-run score, then check"):
        run_check(wh, DS, 0.0)

    run_scoring(wh, DS, ScoreConfig(top_n=10, device="cpu"))
    run_check(wh, DS, 0.0)
    assert run_publish(wh, DS, sql_url=url)["model_version"] == retrained
    assert set(pd.read_parquet(wh.recommendations(DS)).model_version) == {retrained}

    Path(wh.models(DS), "user_ae.pt").unlink()  # weights gone: nothing can vouch for the rows
    with pytest.raises(InputError, match="user_ae.pt do not exist: re-run train, then score and check"):
        run_publish(wh, DS, sql_url=url)
    with pytest.raises(InputError, match="user_ae.pt do not exist"):
        run_check(wh, DS, 0.0)


def test_staged_rows_of_another_model_than_the_gate_passed_are_refused(tmp_path):
    wh, url = tmp_path / "wh", f"sqlite:///{tmp_path}/recs.db"
    stage(wh, DS1, make_recs(n_users=5, version="v1"))
    other = pq.read_table(Warehouse(str(wh)).recommendations_staging(DS1))
    versions = pa.array([real_version(DS1, "v2")] * other.num_rows)
    for part in Path(Warehouse(str(wh)).recommendations_staging(DS1)).glob("*.parquet"):
        part.unlink()
    pq.write_table(other.set_column(other.column_names.index("model_version"), "model_version", versions),
                   Path(Warehouse(str(wh)).recommendations_staging(DS1), "part-00000.parquet"))  # fmt: skip
    with pytest.raises(InputError, match=f"the staged rows of ds={DS1} were scored by model {real_version(DS1, 'v2')}"):
        run_publish(wh, DS1, sql_url=url)
    assert not (wh / "recommendations" / f"ds={DS1}").exists() and hidden(wh / "recommendations") == []


# ---------------------------------------------------------------- every failure: one ERROR line naming the file


def run_job(name: str, args: list[str], capsys) -> tuple[int, str]:
    import importlib.util
    import logging

    spec = importlib.util.spec_from_file_location(f"{name}_job", ROOT / "jobs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        code = run_main(module.main, args)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    return code, capsys.readouterr().err


def damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if how == "truncate" else b"\x00garbage" * 8)


@pytest.mark.parametrize(("what", "how", "job_name"), [
    ("models/user_ae.pt", "truncate", "score"),
    ("models/film_ae.pt", "garbage", "score"),
    ("models/manifest.json", "truncate", "score"),
    ("models/manifest.json", "garbage", "check"),
    ("staging/part-00000.parquet", "truncate", "check"),
    ("staging/part-00000.parquet", "garbage", "publish"),
    ("staging/_check.json", "truncate", "publish"),
    ("features/films", "truncate", "score"),
])  # fmt: skip
def test_a_damaged_file_fails_the_job_with_one_error_line_naming_it(scored, tmp_path, capsys, what, how, job_name):
    from .test_training import DS

    wh = copy_of(scored, tmp_path)
    where, name = what.split("/", 1)
    base = {"models": wh.models(DS), "staging": wh.recommendations_staging(DS), "features": wh.features(DS)}[where]
    path = Path(base, name)
    if path.is_dir():
        path = min(path.glob("*.parquet"))
    damage(path, how)
    args = {"score": ["--top-n", "10", "--device", "cpu"], "check": ["--min-model-ratio", "0"],
            "publish": ["--sql-url", f"sqlite:///{tmp_path}/recs.db"]}[job_name]  # fmt: skip
    code, err = run_job(job_name, ["--warehouse", wh.root, "--ds", DS, *args], capsys)
    assert code == EXIT_BAD_INPUT, err[-3000:]
    [line] = error_lines(err)
    assert str(path) in line or (where == "staging" and str(path.parent) in line), line
    assert "Traceback" not in err
    assert not Path(wh.recommendations(DS)).exists()


# ---------------------------------------------------------------- Params and arguments


def test_job_arguments_take_integral_floats_and_refuse_the_rest_in_one_error_line(scored, tmp_path, capsys):
    from .test_training import DS

    wh = copy_of(scored, tmp_path)
    code, err = run_job("score", ["--warehouse", wh.root, "--ds", DS, "--top-n", "10.5"], capsys)
    assert code == EXIT_BAD_INPUT and error_lines(err) == [
        "ERROR: argument --top-n: must be a whole number, got '10.5'"]  # fmt: skip
    code, err = run_job("check", ["--warehouse", wh.root, "--ds", DS, "--min-model-ratio", "nan"], capsys)
    assert code == EXIT_BAD_INPUT and "argument --min-model-ratio: must be a finite number" in err
    code, err = run_job("publish", ["--warehouse", wh.root, "--ds", DS, "--keep"], capsys)
    assert code == EXIT_BAD_INPUT and error_lines(err) == ["ERROR: argument --keep: expected one argument"]
    code, err = run_job("score", ["--warehouse", wh.root, "--ds", DS, "--top-n", "7.0", "--device", "cpu"], capsys)
    assert code == 0, err[-2000:]
    assert json.loads(Path(wh.recommendations_staging(DS), "_scoring.json").read_text())["top_n"] == 7


PARAMS = {"top_n": 100, "min_film_ratings": 1, "max_epochs": 50, "max_minutes": 25, "seed": 42,
          "min_model_ratio": 1.1, "keep": 30, "sql_conn_id": "recsys_sql"}  # fmt: skip


def test_the_first_task_refuses_bad_params_and_coerces_integral_floats(tmp_path):
    raw, wh = tmp_path / "raw", tmp_path / "wh"
    raw.mkdir()
    got = validate_run(DS2, str(raw), str(wh), {**PARAMS, "top_n": 10.0, "keep": 3.0})
    assert got["top_n"] == 10 and isinstance(got["top_n"], int) and got["keep"] == 3
    bad = [({"top_n": 10.5}, "top_n must be a whole number"), ({"top_n": 40_000}, "top_n must be between 1 and"),
           ({"keep": True}, "keep must be a whole number"), ({"max_minutes": 0}, "max_minutes must be > 0"),
           ({"min_model_ratio": float("nan")}, "min_model_ratio must be a finite"), ({"seed": -1}, "seed must be"),
           ({"sql_conn_id": "a b"}, "sql_conn_id")]  # fmt: skip
    for change, message in bad:
        with pytest.raises(ConfigError, match=message):
            validate_run(DS2, str(raw), str(wh), {**PARAMS, **change})
    with pytest.raises(ConfigError, match="--ds must be a date"):
        validate_run("2018-02-30", str(raw), str(wh), PARAMS)
    with pytest.raises(InputError, match="raw drop directory .* does not exist"):
        validate_run(DS2, str(tmp_path / "nowhere"), str(wh), PARAMS)
    for ds in (DS1, DS2):  # two newer partitions published: a backfill of an older day with keep 2 ...
        stage(wh, ds, make_recs(n_users=3))
        run_publish(wh, ds, sql_url=f"sqlite:///{tmp_path}/recs.db")
    with pytest.raises(ConfigError, match="--keep 2 newest"):  # ... is refused before any heavy work
        validate_run("2018-09-01", str(raw), str(wh), {**PARAMS, "keep": 2})


# ---------------------------------------------------------------- credentials


def test_a_connection_becomes_a_url_with_its_secret_quoted():
    url = sql_url_from_connection("recsys_sql", "postgres", "db.example", 5433, "rec sys", "p@ss:w/rd%",
                                  "recs", {"sslmode": "require", "cursor": "dictcursor"})  # fmt: skip
    assert url == "postgresql://rec%20sys:p%40ss%3Aw%2Frd%25@db.example:5433/recs?sslmode=require"
    assert sql_url_from_connection("c", "sqlite", "/data/recs.db") == "sqlite:////data/recs.db"
    for kind, host, schema, message in (("mysql", "h", "d", "type 'mysql'"), ("postgres", None, "d", "no host"),
                                        ("postgres", "h", None, "names no database")):  # fmt: skip
        with pytest.raises(ConfigError, match=message):
            sql_url_from_connection("c", kind, host, None, None, None, schema)
