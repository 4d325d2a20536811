"""The SQLite result store on real files: round trips, filters, concurrency, jobs."""

from __future__ import annotations

import multiprocessing
import sqlite3
from pathlib import Path
from typing import Any

import pandas as pd
import psutil
import pytest

from engine.store import (
    FLAT_COLUMNS,
    FRAME_COLUMNS,
    ResultStore,
    default_home,
    default_store_path,
    process_owner,
)
from engine.types import Plan, Precision, stable_hash


def make_record(name: str = "mlp", status: str = "ok", *, seed: int = 0, **extra: Any) -> dict[str, Any]:
    plan = Plan(default=Precision.INT8, layers={"fc2": Precision.FP32})
    record: dict[str, Any] = {
        "key": stable_hash([name, plan.hash, seed]),
        "model_name": name,
        "model_hash": "m" * 8,
        "data_hash": "d" * 8,
        "plan_hash": plan.hash,
        "settings_hash": "s" * 8,
        "engine_version": "0.1.0",
        "plan": plan.to_json(),
        "plan_summary": "1 INT8 · 1 FP32",
        "status": status,
        "error": None if status == "ok" else "boom",
        "metrics": {
            "size_bytes": 1234 + seed,
            "latency": {"1": {"median_ms": 0.5, "p90_ms": 0.7}, "32": {"median_ms": 3.0}},
            "accuracy": 0.91,
            "accuracy_delta": -0.01,
            "accuracy_delta_ci_low": -0.02,
            "accuracy_delta_ci_high": 0.0,
            "sqnr_db": 31.5,
            "agreement": 0.98,
            "per_class": [0.9, None, 1.0],
        }
        if status == "ok"
        else {},
        "environment": {"cpu": "test", "threads": 1},
        "artifact_path": None,
        "source": "cli",
        "duration_s": 1.5,
    }
    record.update(extra)
    return record


@pytest.fixture
def store(tmp_path: Path) -> ResultStore:
    with ResultStore(tmp_path / "results.sqlite") as s:
        yield s


def test_round_trip_keeps_every_field(store: ResultStore):
    record = make_record()
    store.put(record)
    got = store.get(record["key"])
    assert got is not None
    assert got["created_at"]  # filled in
    assert {k: v for k, v in got.items() if k != "created_at"} == record
    assert Plan.from_json(got["plan"]) == Plan(default=Precision.INT8, layers={"fc2": Precision.FP32})


def test_hit_and_miss(store: ResultStore):
    record = make_record()
    assert store.get(record["key"]) is None
    assert store.get_ok(record["key"]) is None
    store.put(record)
    assert store.get_ok(record["key"]) is not None
    assert store.get("no-such-key") is None
    assert store.count() == 1


def test_failed_is_stored_but_not_a_hit_and_ok_replaces_it(store: ResultStore):
    failed = make_record(status="failed")
    store.put(failed)
    assert store.get(failed["key"])["status"] == "failed"
    assert store.get_ok(failed["key"]) is None
    store.put(make_record(status="ok"))  # same key
    assert store.count() == 1
    got = store.get_ok(failed["key"])
    assert got is not None and got["error"] is None and got["metrics"]["accuracy"] == 0.91


def test_put_rejects_bad_records(store: ResultStore):
    with pytest.raises(ValueError, match="status"):
        store.put(make_record(status="great"))
    with pytest.raises(ValueError, match="unknown result fields"):
        store.put(make_record(acuracy=0.5))
    with pytest.raises(ValueError, match="key"):
        store.put(make_record(key=""))
    assert store.count() == 0


def test_a_malformed_ratio_falls_back_to_the_runs_own_median(store: ResultStore):
    record = make_record()
    record["metrics"]["latency"]["1"].update(vs_fp32="fast", fp32_ms=0.4)
    store.put(record)
    assert store.to_frame().iloc[0]["latency_ms_b1"] == 0.5


def test_to_frame_columns_flattening_and_filters(store: ResultStore):
    store.put(make_record("mlp", seed=1, created_at="2026-01-01T00:00:00+00:00"))
    store.put(make_record("mlp", seed=2, created_at="2026-01-02T00:00:00+00:00"))
    store.put(make_record("cnn", seed=3))
    store.put(make_record("mlp", "timeout", seed=4))

    frame = store.to_frame()
    assert list(frame.columns) == list(FRAME_COLUMNS)
    assert len(frame) == 3 and set(frame["status"]) == {"ok"}

    mlp = store.to_frame("mlp")
    assert list(mlp["size_bytes"]) == [1235.0, 1236.0]  # ordered by created_at
    row = mlp.iloc[0]
    assert row["latency_ms_b1"] == 0.5
    assert (row["accuracy"], row["accuracy_delta"], row["sqnr_db"], row["agreement"]) == (
        0.91,
        -0.01,
        31.5,
        0.98,
    )
    assert (row["accuracy_delta_ci_low"], row["accuracy_delta_ci_high"]) == (-0.02, 0.0)
    assert row["plan"] == {"default": "int8", "layers": {"fc2": "fp32"}}
    assert row["metrics"]["latency"]["32"]["median_ms"] == 3.0
    assert row["created_at"] == pd.Timestamp("2026-01-01", tz="UTC")
    assert pd.api.types.is_datetime64_any_dtype(mlp["created_at"])

    everything = store.to_frame("mlp", status=None)
    assert len(everything) == 3
    timed_out = everything[everything["status"] == "timeout"].iloc[0]
    assert pd.isna(timed_out["size_bytes"]) and timed_out["error"] == "boom"


def test_to_frame_empty_has_columns_and_dtypes(store: ResultStore):
    frame = store.to_frame()
    assert frame.empty
    assert list(frame.columns) == list(FRAME_COLUMNS)
    for col in FLAT_COLUMNS:
        assert frame[col].dtype == "float64"
    assert pd.api.types.is_datetime64_any_dtype(frame["created_at"])


def test_delete_and_count_by_status(store: ResultStore):
    ok, bad = make_record(seed=1), make_record(status="crashed", seed=2)
    store.put(ok)
    store.put(bad)
    assert store.count() == 2 and store.count("crashed") == 1
    assert store.delete(ok["key"]) is True
    assert store.delete(ok["key"]) is False
    assert store.count() == 1


def test_reopening_keeps_data_and_uses_wal(tmp_path: Path):
    path = tmp_path / "sub" / "results.sqlite"  # parent is created
    with ResultStore(path) as s:
        s.put(make_record())
        assert s.journal_mode() == "wal"
    with ResultStore(path) as s:
        assert s.count() == 1
        assert s.get_ok(make_record()["key"]) is not None
        assert s.integrity_ok()
    # WAL is a property of the file, seen by any other connection.
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone()[0] == "1"
    conn.close()


def test_newer_schema_version_is_refused(tmp_path: Path):
    path = tmp_path / "results.sqlite"
    ResultStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value = '99' WHERE name = 'schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(RuntimeError, match="schema version 99"):
        ResultStore(path)


def _writer(path: str, name: str, n: int, start: Any) -> None:
    start.wait(timeout=60)  # both processes open and write at the same moment
    with ResultStore(path) as s:
        for i in range(n):
            s.put(make_record(name, seed=i, source=f"proc-{name}"))


@pytest.mark.parametrize("create_first", [True, False], ids=["existing-file", "both-create"])
def test_two_processes_writing_at_once(tmp_path: Path, create_first: bool):
    path = tmp_path / "results.sqlite"
    if create_first:
        ResultStore(path).close()
    ctx = multiprocessing.get_context("spawn")  # fresh interpreters, no inherited connection
    # Four processes: with "both-create", opening a new file at the same moment made about one
    # run in ten fail with "database is locked" before the WAL switch was retried.
    names = ("a", "b", "c", "d")
    start = ctx.Barrier(len(names))
    procs = [ctx.Process(target=_writer, args=(str(path), name, 25, start)) for name in names]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0] * len(names)
    with ResultStore(path) as s:
        assert s.count() == 100
        assert s.integrity_ok()
        assert all(len(s.to_frame(name)) == 25 for name in names)


def test_jobs_lifecycle(store: ResultStore):
    job = store.upsert_job("j1", kind="sweep", model_name="mlp")
    assert job["state"] == "queued" and job["progress"] == 0.0 and job["kind"] == "sweep"
    running = store.upsert_job("j1", state="running", progress=0.4, message="plan 2/5")
    assert running["kind"] == "sweep"  # fields not given are kept
    assert (running["state"], running["progress"], running["message"]) == ("running", 0.4, "plan 2/5")
    assert running["created_at"] == job["created_at"] and running["updated_at"] >= job["updated_at"]
    store.upsert_job("j2", kind="search", state="done")
    store.upsert_job("j3", kind="sweep")
    assert [j["job_id"] for j in store.list_jobs(["queued", "running"])] == ["j1", "j3"]
    assert len(store.list_jobs()) == 3
    assert store.get_job("nope") is None
    with pytest.raises(ValueError, match="job state"):
        store.upsert_job("j4", state="paused")


def _start_running_job(path: Path, job_id: str) -> None:
    """In a child process: mark a job running, then exit (as a server process that crashed would)."""
    with ResultStore(path) as s:
        s.upsert_job(job_id, kind="evaluate", state="running")


def test_jobs_of_exited_processes_are_marked_stale_and_live_ones_kept(tmp_path: Path):
    path = tmp_path / "r.sqlite"
    child = multiprocessing.get_context("spawn").Process(target=_start_running_job, args=(path, "dead"))
    child.start()
    child.join(timeout=120)
    assert child.exitcode == 0
    with ResultStore(path) as store:
        assert store.get_job("dead")["owner"].split(":")[1] == str(child.pid)
        mine = store.upsert_job("mine", state="running")
        assert mine["owner"] == process_owner()
        store.upsert_job("elsewhere", state="queued")
        with store._write() as cur:  # a job of a process on another machine sharing the store
            cur.execute("UPDATE jobs SET owner = 'other-host:1:1.0' WHERE job_id = 'elsewhere'")
        store.upsert_job("finished", state="done")

        assert store.mark_orphaned_jobs() == 1
        states = {j["job_id"]: j["state"] for j in store.list_jobs()}
        assert states == {"dead": "stale", "mine": "running", "elsewhere": "queued", "finished": "done"}
        assert store.upsert_job("elsewhere", progress=0.5)["owner"] == "other-host:1:1.0"  # kept on update


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="Linux: psutil adds /proc's boot time")
def test_a_running_job_stays_running_when_the_wall_clock_moves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Linux recomputes the boot time from the wall clock on every read, so an NTP adjustment moves
    # psutil's create_time() of every process; the job's own, live process must not look dead.
    with ResultStore(tmp_path / "r.sqlite") as store:
        store.upsert_job("mine", state="running")
        before = psutil.Process().create_time()
        moved = psutil.boot_time() + 2.0
        monkeypatch.setattr(psutil._pslinux, "boot_time", lambda: moved)
        assert psutil.Process().create_time() == pytest.approx(before + 2.0, abs=0.5)  # the clock moved
        assert store.mark_orphaned_jobs() == 0
        assert store.get_job("mine")["state"] == "running"


def test_store_from_before_job_owners_gains_the_column(tmp_path: Path):
    path = tmp_path / "old.sqlite"
    with ResultStore(path) as store:
        store.upsert_job("old", state="running")
    con = sqlite3.connect(path)
    con.execute("ALTER TABLE jobs DROP COLUMN owner")  # as a store written by the previous engine
    con.commit()
    con.close()
    with ResultStore(path) as store:
        assert store.get_job("old")["owner"] is None
        assert store.mark_orphaned_jobs() == 1  # whoever ran it cannot be checked: it can never finish
        assert store.get_job("old")["state"] == "stale"


def test_store_from_before_stops_gains_the_outcome_column(tmp_path: Path):
    path = tmp_path / "old.sqlite"
    with ResultStore(path) as store:
        store.upsert_job("old", state="done", message="measured")
    con = sqlite3.connect(path)
    con.execute("ALTER TABLE jobs DROP COLUMN outcome")  # as a store written before jobs could be stopped
    con.commit()
    con.close()
    with ResultStore(path) as store:
        assert store.get_job("old")["outcome"] is None
        assert store.upsert_job("new", state="done", outcome="stopped")["outcome"] == "stopped"
        with pytest.raises(ValueError, match="unknown job outcome 'cancelled'"):
            store.upsert_job("new", outcome="cancelled")


def test_default_paths_follow_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("QUANTDASH_STORE", raising=False)
    monkeypatch.setenv("QUANTDASH_HOME", str(tmp_path / "home"))
    assert default_home() == tmp_path / "home"
    assert default_store_path() == tmp_path / "home" / "results.sqlite"
    assert (tmp_path / "home").is_dir()
    monkeypatch.setenv("QUANTDASH_STORE", str(tmp_path / "elsewhere" / "r.sqlite"))
    assert default_store_path() == tmp_path / "elsewhere" / "r.sqlite"
    assert (tmp_path / "elsewhere").is_dir()


def test_search_ids_lists_a_models_searches_most_recent_first(store: ResultStore) -> None:
    # Two models of the same name (two files called model.onnx) are told apart by their hash.
    a, b = make_record("model", seed=1), make_record("model", seed=2, model_hash="other")
    store.put(a)
    store.put(b)
    assert store.search_ids(a["model_hash"], a["data_hash"]) == []
    store.add_search_trial("older", a["key"], "predictor", a["plan"], {})
    store.add_search_trial("newer", a["key"], "nsga2", a["plan"], {})
    store.add_search_trial("other-model", b["key"], "nsga2", b["plan"], {})
    assert store.search_ids(a["model_hash"], a["data_hash"]) == ["newer", "older"]
    assert store.search_ids("other", b["data_hash"]) == ["other-model"]
    assert store.search_ids(a["model_hash"], "other data") == []


def test_a_searchs_settings_round_trip_and_the_latest_one_of_a_model_is_found(store: ResultStore) -> None:
    spec = {"candidates": {"conv": ["fp32", "int8"]}, "constraints": {"max_accuracy_drop": 0.5}}
    assert store.latest_search("m", "d") is None and store.get_search("first") is None
    store.record_search(
        "first", model_hash="m", data_hash="d", settings_hash="s", spec=spec, calibration="minmax"
    )
    store.record_search(
        "second",
        model_hash="m",
        data_hash="d",
        settings_hash="s2",
        spec={**spec, "seed": 1},
        calibration="entropy",
    )
    store.record_search(
        "elsewhere", model_hash="other", data_hash="d", settings_hash="s", spec={}, calibration="minmax"
    )
    kept = store.get_search("first")
    assert kept is not None
    assert (kept["spec"], kept["calibration"], kept["settings_hash"]) == (spec, "minmax", "s")
    latest = store.latest_search("m", "d")
    assert latest is not None and latest["search_id"] == "second" and latest["calibration"] == "entropy"
    assert store.latest_search("m", "d", settings_hashes=["s"])["search_id"] == "first"  # type: ignore[index]
    assert store.latest_search("m", "other data") is None
    # Continued with a larger budget: it is the latest again, with the spec it was continued with.
    store.record_search(
        "first",
        model_hash="m",
        data_hash="d",
        settings_hash="s",
        spec={**spec, "max_evaluations": 9},
        calibration="minmax",
    )
    latest = store.latest_search("m", "d")
    assert latest is not None and latest["search_id"] == "first" and latest["spec"]["max_evaluations"] == 9
    assert latest["created_at"] < latest["started_at"]


def test_a_store_from_before_searches_were_kept_opens_and_gains_the_table(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    with ResultStore(path) as store:
        store.add_search_trial("old", "key", "nsga2", {}, {})
    con = sqlite3.connect(path)
    con.execute("DROP TABLE searches")  # as a store written by the previous engine
    con.commit()
    con.close()
    with ResultStore(path) as store:
        assert store.get_search("old") is None  # its trials are there, its settings never were
        assert len(store.search_trials("old")) == 1
        store.record_search(
            "new", model_hash="m", data_hash="d", settings_hash="s", spec={}, calibration="minmax"
        )
        assert store.latest_search("m", "d")["search_id"] == "new"  # type: ignore[index]
