"""AppTest fixtures: one data folder for the module, evaluations inline in this process, quick timing."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[2] / "dashboard" / "streamlit_app.py")


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("qdhome")
    mp = pytest.MonkeyPatch()
    mp.setenv("QUANTDASH_HOME", str(home))
    mp.delenv("QUANTDASH_STORE", raising=False)
    mp.setenv("QUANTDASH_INLINE", "1")  # AppTest cannot host the Dask cluster; the engine runs here
    mp.setenv("QUANTDASH_QUICK", "1")
    # The runner is cached per process: start each module with a fresh one on the fresh folder.
    st.cache_resource.clear()
    st.cache_data.clear()
    yield home
    st.cache_resource.clear()
    st.cache_data.clear()
    mp.undo()


def app(**query: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    for k, v in query.items():
        at.query_params[k] = v
    return at


def wait_for_jobs(at: AppTest, timeout: float = 120.0) -> None:
    """Rerun the app until no evaluation job is queued or running."""
    from dashboard import cached

    store = cached.runner().store
    deadline = time.monotonic() + timeout
    while store.list_jobs(["queued", "running"]):
        assert time.monotonic() < deadline, f"jobs still running: {store.list_jobs(['queued', 'running'])}"
        time.sleep(0.3)
    at.run()
