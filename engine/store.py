"""The SQLite result store: one row per measured plan, plus the background-job table."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import pandas as pd
import psutil

from engine.latency_compare import comparable_ms

SCHEMA_VERSION = 1
STATUSES = ("ok", "failed", "timeout", "crashed")
JOB_STATES = ("queued", "running", "done", "failed", "stale")

# Record fields as put() takes them and get() returns them.
_TEXT_FIELDS = (
    "key",
    "model_name",
    "model_hash",
    "data_hash",
    "plan_hash",
    "settings_hash",
    "engine_version",
    "plan_summary",
    "status",
    "error",
    "artifact_path",
    "source",
    "created_at",
)
_JSON_FIELDS = ("plan", "metrics", "environment")
RECORD_FIELDS = (*_TEXT_FIELDS, *_JSON_FIELDS, "duration_s")
# Numeric columns copied out of metrics so filters and plots need not parse JSON.
FLAT_COLUMNS = (
    "size_bytes",
    "latency_ms_b1",
    "accuracy",
    "accuracy_delta",
    "accuracy_delta_ci_low",
    "accuracy_delta_ci_high",
    "sqnr_db",
    "agreement",
)
FRAME_COLUMNS = (
    "key",
    "model_name",
    "model_hash",
    "data_hash",
    "plan_hash",
    "settings_hash",
    "engine_version",
    "plan",
    "plan_summary",
    "status",
    "error",
    "source",
    "artifact_path",
    "created_at",
    "duration_s",
    *FLAT_COLUMNS,
    "metrics",
)
_JOB_FIELDS = ("kind", "model_name", "result_key", "state", "progress", "message", "outcome")
# How a "done" job ended when it is not the work's own end: "stopped" (the user pressed Stop).
JOB_OUTCOMES = ("stopped",)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS results (
    key TEXT PRIMARY KEY,
    model_name TEXT NOT NULL,
    model_hash TEXT,
    data_hash TEXT,
    plan_hash TEXT,
    settings_hash TEXT,
    engine_version TEXT,
    plan TEXT,
    plan_summary TEXT,
    status TEXT NOT NULL CHECK (status IN ('ok', 'failed', 'timeout', 'crashed')),
    error TEXT,
    metrics TEXT,
    environment TEXT,
    artifact_path TEXT,
    source TEXT,
    created_at TEXT NOT NULL,
    duration_s REAL,
    size_bytes REAL,
    latency_ms_b1 REAL,
    accuracy REAL,
    accuracy_delta REAL,
    accuracy_delta_ci_low REAL,
    accuracy_delta_ci_high REAL,
    sqnr_db REAL,
    agreement REAL
);
CREATE INDEX IF NOT EXISTS results_model_name ON results (model_name);
CREATE INDEX IF NOT EXISTS results_model_data ON results (model_hash, data_hash);
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    kind TEXT,
    model_name TEXT,
    result_key TEXT,
    state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed', 'stale')),
    progress REAL NOT NULL DEFAULT 0,
    message TEXT,
    owner TEXT,
    outcome TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state);
CREATE TABLE IF NOT EXISTS search_trials (
    search_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    result_key TEXT NOT NULL,
    origin TEXT,
    plan TEXT,
    predicted TEXT,
    created_at TEXT NOT NULL,
    PRIMARY KEY (search_id, seq),
    UNIQUE (search_id, result_key)
);
CREATE TABLE IF NOT EXISTS searches (
    search_id TEXT PRIMARY KEY,
    model_hash TEXT NOT NULL,
    data_hash TEXT NOT NULL,
    settings_hash TEXT NOT NULL,
    spec TEXT NOT NULL,
    calibration TEXT NOT NULL,
    created_at TEXT NOT NULL,
    started_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS searches_model_data ON searches (model_hash, data_hash, started_at);
"""


def default_home() -> Path:
    """$QUANTDASH_HOME, or ~/.quantdash."""
    return Path(os.environ.get("QUANTDASH_HOME") or "~/.quantdash").expanduser()


def default_store_path() -> Path:
    """$QUANTDASH_STORE, or results.sqlite in the home; its folder is created."""
    override = os.environ.get("QUANTDASH_STORE")
    path = Path(override).expanduser() if override else default_home() / "results.sqlite"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _now() -> str:
    # One fixed format (UTC, microseconds) so timestamps also compare correctly as text.
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _enable_wal(conn: sqlite3.Connection, patience_s: float = 30.0) -> None:
    """Switch the file to WAL, waiting out other processes that are opening it at the same moment.

    The switch needs an exclusive lock, and SQLite answers "database is locked" at once, without
    its busy timeout, while another connection is creating or switching the same new file; so
    it is retried here. Once the file is in WAL (a property of the file), this returns at once.
    """
    deadline = time.monotonic() + patience_s
    while True:
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)
            continue
        if mode.lower() != "wal":
            raise sqlite3.OperationalError(f"could not switch the store to WAL journaling (it is {mode!r})")
        return


class ResultStore:
    """Results and jobs in one SQLite file, safe for several processes writing at once."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else default_store_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit mode: transactions are opened explicitly with BEGIN IMMEDIATE.
        self._conn = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
        self._lock = threading.RLock()  # one connection shared by threads: serialise its use
        _enable_wal(self._conn)
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        with self._write() as cur:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    cur.execute(statement)
            job_columns = {row[1] for row in cur.execute("PRAGMA table_info(jobs)")}
            if "owner" not in job_columns:  # a store written before jobs recorded their owner
                cur.execute("ALTER TABLE jobs ADD COLUMN owner TEXT")
            if "outcome" not in job_columns:  # a store written before jobs could be stopped
                cur.execute("ALTER TABLE jobs ADD COLUMN outcome TEXT")
            cur.execute(
                "INSERT OR IGNORE INTO meta (name, value) VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )
            found = cur.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone()[0]
        if int(found) != SCHEMA_VERSION:
            self._conn.close()
            raise RuntimeError(
                f"{self.path} has store schema version {found}; this engine reads version {SCHEMA_VERSION}"
            )

    # --- plumbing ---

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Cursor]:
        """One transaction that takes the write lock at once, so concurrent writers queue."""
        with self._lock:
            cur = self._conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
                cur.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    cur.execute("ROLLBACK")
                raise

    def _query(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            cur = self._conn.cursor()
            cur.row_factory = sqlite3.Row
            return cur.execute(sql, tuple(params)).fetchall()

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- results ---

    def put(self, record: dict[str, Any]) -> None:
        """Insert or replace the result with record["key"], in one transaction."""
        row = _record_to_row(record)
        cols = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        with self._write() as cur:
            cur.execute(f"INSERT OR REPLACE INTO results ({cols}) VALUES ({marks})", tuple(row.values()))

    def get(self, key: str) -> dict[str, Any] | None:
        """The record stored under key (any status), or None."""
        rows = self._query(f"SELECT {', '.join(RECORD_FIELDS)} FROM results WHERE key = ?", (key,))
        return _row_to_record(rows[0]) if rows else None

    def get_ok(self, key: str) -> dict[str, Any] | None:
        """The record under key if it succeeded; a failed one counts as a miss, to be re-run."""
        record = self.get(key)
        return record if record is not None and record["status"] == "ok" else None

    def delete(self, key: str) -> bool:
        """Remove a result; True if there was one."""
        with self._write() as cur:
            return cur.execute("DELETE FROM results WHERE key = ?", (key,)).rowcount > 0

    def count(self, status: str | None = None) -> int:
        """Number of results, optionally of one status."""
        if status is None:
            return int(self._query("SELECT COUNT(*) FROM results")[0][0])
        return int(self._query("SELECT COUNT(*) FROM results WHERE status = ?", (status,))[0][0])

    def to_frame(
        self,
        model_name: str | None = None,
        status: str | None = "ok",
        *,
        network: tuple[str, str] | None = None,
    ) -> pd.DataFrame:
        """One row per result with the flattened metric columns; filters are optional.

        ``network``: (model hash, data hash), the results of those files whatever name they were
        stored under (results are keyed by content: the same files added under two names share them).
        """
        where, params = [], []
        if model_name is not None:
            where.append("model_name = ?")
            params.append(model_name)
        if network is not None:
            where.append("model_hash = ? AND data_hash = ?")
            params += list(network)
        if status is not None:
            where.append("status = ?")
            params.append(status)
        cols = [c for c in FRAME_COLUMNS if c not in ("plan", "metrics")]
        sql = f"SELECT {', '.join(cols)}, plan, metrics FROM results"
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = self._query(sql + " ORDER BY created_at, key", params)
        frame = pd.DataFrame([dict(r) for r in rows], columns=list(FRAME_COLUMNS))
        for col in ("plan", "metrics"):
            frame[col] = pd.Series([_loads(v) for v in frame[col]], index=frame.index, dtype=object)
        for col in ("duration_s", *FLAT_COLUMNS):
            frame[col] = pd.to_numeric(frame[col]).astype("float64")
        frame["created_at"] = pd.to_datetime(frame["created_at"], utc=True, format="ISO8601")
        return frame

    def integrity_ok(self) -> bool:
        """True when SQLite's integrity check passes."""
        rows = self._query("PRAGMA integrity_check")
        return len(rows) == 1 and rows[0][0] == "ok"

    def journal_mode(self) -> str:
        return str(self._query("PRAGMA journal_mode")[0][0])

    # --- jobs ---

    def upsert_job(
        self,
        job_id: str,
        *,
        kind: str | None = None,
        model_name: str | None = None,
        result_key: str | None = None,
        state: str | None = None,
        progress: float | None = None,
        message: str | None = None,
        outcome: str | None = None,
    ) -> dict[str, Any]:
        """Create a job (state defaults to "queued") or update the fields given; returns it."""
        if state is not None and state not in JOB_STATES:
            raise ValueError(f"unknown job state {state!r}; expected one of {JOB_STATES}")
        if outcome is not None and outcome not in JOB_OUTCOMES:
            raise ValueError(f"unknown job outcome {outcome!r}; expected one of {JOB_OUTCOMES}")
        given = {
            k: v
            for k, v in zip(
                _JOB_FIELDS, (kind, model_name, result_key, state, progress, message, outcome), strict=True
            )
            if v is not None
        }
        now = _now()
        insert = {"state": "queued", "progress": 0.0, "owner": process_owner(), **given}
        cols = ["job_id", *insert, "created_at", "updated_at"]
        values = [job_id, *insert.values(), now, now]
        updates = ", ".join([*(f"{k} = excluded.{k}" for k in given), "updated_at = excluded.updated_at"])
        with self._write() as cur:
            cur.execute(
                f"INSERT INTO jobs ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)}) "
                f"ON CONFLICT (job_id) DO UPDATE SET {updates}",
                values,
            )
            row = cur.execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
            names = [d[0] for d in cur.description]
        return dict(zip(names, row, strict=True))

    # --- searches: which measured plans belong to which search, in the order they were tried ---

    def add_search_trial(
        self, search_id: str, result_key: str, origin: str, plan: dict[str, Any], predicted: dict[str, Any]
    ) -> bool:
        """Record that a search tried a plan; False (nothing written) if it had already."""
        with self._write() as cur:
            seq = cur.execute(
                "SELECT COALESCE(MAX(seq), -1) + 1 FROM search_trials WHERE search_id = ?", (search_id,)
            ).fetchone()[0]
            done = cur.execute(
                "INSERT OR IGNORE INTO search_trials (search_id, seq, result_key, origin, plan, predicted,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (search_id, seq, result_key, origin, json.dumps(plan), json.dumps(predicted), _now()),
            )
            return done.rowcount > 0

    def forget_search(self, search_id: str) -> int:
        """Drop a search's record of which plans it tried (the results stay): it starts over."""
        with self._write() as cur:
            return cur.execute("DELETE FROM search_trials WHERE search_id = ?", (search_id,)).rowcount

    def search_trials(self, search_id: str) -> list[dict[str, Any]]:
        """The plans a search tried, in order, each with its stored result (None if since deleted)."""
        rows = self._query("SELECT * FROM search_trials WHERE search_id = ? ORDER BY seq", (search_id,))
        out = []
        for row in rows:
            trial = dict(row)
            trial["plan"] = json.loads(trial["plan"])
            trial["predicted"] = json.loads(trial["predicted"])
            trial["result"] = self.get(trial["result_key"])
            out.append(trial)
        return out

    def search_ids(self, model_hash: str, data_hash: str) -> list[str]:
        """The searches that measured plans of a model (by content: two files may share a name) on
        a data set, the most recently active first."""
        rows = self._query(
            "SELECT t.search_id, MAX(t.created_at) AS last FROM search_trials t JOIN results r"
            " ON r.key = t.result_key WHERE r.model_hash = ? AND r.data_hash = ?"
            " GROUP BY t.search_id ORDER BY last DESC",
            (model_hash, data_hash),
        )
        return [str(r["search_id"]) for r in rows]

    def record_search(
        self,
        search_id: str,
        *,
        model_hash: str,
        data_hash: str,
        settings_hash: str,
        spec: dict[str, Any],
        calibration: str,
    ) -> None:
        """Keep a search's settings as it starts or continues (a larger budget replaces the spec kept)."""
        now = _now()
        with self._write() as cur:
            cur.execute(
                "INSERT INTO searches (search_id, model_hash, data_hash, settings_hash, spec, calibration,"
                " created_at, started_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (search_id) DO UPDATE"
                " SET spec = excluded.spec, calibration = excluded.calibration,"
                " started_at = excluded.started_at",
                (search_id, model_hash, data_hash, settings_hash, json.dumps(spec), calibration, now, now),
            )

    def get_search(self, search_id: str) -> dict[str, Any] | None:
        """A search's kept settings (spec parsed from JSON), or None if it started before they were kept."""
        rows = self._query("SELECT * FROM searches WHERE search_id = ?", (search_id,))
        return _search_row(rows[0]) if rows else None

    def latest_search(
        self, model_hash: str, data_hash: str, settings_hashes: Iterable[str] | None = None
    ) -> dict[str, Any] | None:
        """The kept settings of the search of a model on a data set that started (or continued) last,
        optionally only among those measured with one of `settings_hashes`; None if none was kept."""
        sql = "SELECT * FROM searches WHERE model_hash = ? AND data_hash = ?"
        params: list[str] = [model_hash, data_hash]
        if settings_hashes is not None:
            wanted = list(settings_hashes)
            sql += f" AND settings_hash IN ({', '.join('?' for _ in wanted)})"
            params += wanted
        rows = self._query(sql + " ORDER BY started_at DESC, rowid DESC LIMIT 1", params)
        return _search_row(rows[0]) if rows else None

    def get_job(self, job_id: str) -> dict[str, Any] | None:
        rows = self._query("SELECT * FROM jobs WHERE job_id = ?", (job_id,))
        return dict(rows[0]) if rows else None

    def list_jobs(self, states: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """Jobs, oldest first, optionally only those in the given states."""
        if states is None:
            return [dict(r) for r in self._query("SELECT * FROM jobs ORDER BY created_at, job_id")]
        wanted = list(states)
        marks = ", ".join("?" for _ in wanted)
        sql = f"SELECT * FROM jobs WHERE state IN ({marks}) ORDER BY created_at, job_id"
        return [dict(r) for r in self._query(sql, wanted)]

    def mark_orphaned_jobs(self) -> int:
        """Mark queued or running jobs whose owning process has exited as "stale"; returns how many.

        A job records the process that runs it (host, pid, start time). On this host, a job whose
        process is gone can never finish; a job owned by another host is left alone (its process
        cannot be checked from here); a job with no recorded owner predates owners and is stale.
        """
        host = _hostname()
        orphans = []
        for job in self.list_jobs(["queued", "running"]):
            owner = job.get("owner")
            if owner is None:
                orphans.append(job["job_id"])
                continue
            owner_host, pid, started = owner.rsplit(":", 2)
            if owner_host == host and not _process_alive(int(pid), float(started)):
                orphans.append(job["job_id"])
        if not orphans:
            return 0
        marks = ", ".join("?" for _ in orphans)
        with self._write() as cur:
            return cur.execute(
                f"UPDATE jobs SET state = 'stale', updated_at = ? WHERE job_id IN ({marks}) "
                "AND state IN ('queued', 'running')",
                (_now(), *orphans),
            ).rowcount


_PROC_STAT = Path("/proc/self/stat")


def _hostname() -> str:
    return os.uname().nodename


def process_owner() -> str:
    """This process as a job owner: "host:pid:start" (the start tells a reused pid apart)."""
    start = _process_start(os.getpid())
    assert start is not None  # this very process is running
    return f"{_hostname()}:{os.getpid()}:{start:.3f}"


def _process_alive(pid: int, started: float) -> bool:
    start = _process_start(pid)
    return start is not None and abs(start - started) < 0.01


def _process_start(pid: int) -> float | None:
    """When process ``pid`` started; None if it is gone or a zombie.

    On Linux: clock ticks since boot, from /proc. Not psutil's create_time(), which adds the boot
    time that Linux recomputes from the wall clock on every read: an NTP adjustment moves it by a
    second or more, and a running job's own process then looked dead (psutil issues 2526, 2541).
    """
    if _PROC_STAT.exists():
        try:
            # Fields after the command name (which may hold spaces): state first, starttime 20th.
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return None if fields[0] == "Z" else float(fields[19])
    try:
        proc = psutil.Process(pid)
        return None if proc.status() == psutil.STATUS_ZOMBIE else proc.create_time()
    except psutil.Error:
        return None


def _record_to_row(record: dict[str, Any]) -> dict[str, Any]:
    """Validate a record and turn it into column values, flattened metrics included."""
    unknown = set(record) - set(RECORD_FIELDS)
    if unknown:
        raise ValueError(f"unknown result fields {sorted(unknown)}; expected some of {RECORD_FIELDS}")
    for required in ("key", "model_name", "status"):
        if not record.get(required):
            raise ValueError(f"result record needs a non-empty {required!r}")
    if record["status"] not in STATUSES:
        raise ValueError(f"unknown status {record['status']!r}; expected one of {STATUSES}")
    row: dict[str, Any] = {f: record.get(f) for f in _TEXT_FIELDS}
    created = row["created_at"]
    if isinstance(created, datetime):
        created = created.astimezone(UTC).isoformat(timespec="microseconds")
    row["created_at"] = created or _now()
    for f in _JSON_FIELDS:
        row[f] = None if record.get(f) is None else json.dumps(record[f], sort_keys=True, default=str)
    duration = record.get("duration_s")
    row["duration_s"] = None if duration is None else float(duration)
    row.update(_flatten(record.get("metrics") or {}))
    return row


def _flatten(metrics: dict[str, Any]) -> dict[str, float | None]:
    out = {c: _number(metrics.get(c)) for c in FLAT_COLUMNS if c != "latency_ms_b1"}
    latency = metrics.get("latency") or {}
    # JSON keys are strings; accept an int key from a record that has not been through JSON yet.
    b1 = latency.get("1", latency.get(1)) if isinstance(latency, dict) else None
    # The latency plans are compared by (engine.latency_compare): ratio to FP32 on the model's FP32 scale.
    out["latency_ms_b1"] = None
    if isinstance(b1, dict) and _number(b1.get("median_ms")) is not None:
        try:
            out["latency_ms_b1"] = comparable_ms(b1)
        except (TypeError, ValueError):  # a ratio that is no number: the run's own median
            out["latency_ms_b1"] = float(b1["median_ms"])
    return out


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _search_row(row: sqlite3.Row) -> dict[str, Any]:
    search = dict(row)
    search["spec"] = json.loads(search["spec"])
    return search


def _row_to_record(row: sqlite3.Row) -> dict[str, Any]:
    record = dict(row)
    for f in _JSON_FIELDS:
        record[f] = _loads(record[f])
    return record
