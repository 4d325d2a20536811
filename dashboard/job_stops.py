"""Stop buttons of long background jobs (a sensitivity pass, a search, the presets).

A press sets the job's flag; the job sees it at its next progress report and raises JobStopped
there, which ends it the way an error would (the engine cancels the plans still running in the
workers) but is told as a stop. Everything measured before is already in the store, so pressing
the job's button again continues from there.
"""

from __future__ import annotations

import threading


class JobStopped(Exception):
    """The user asked the job to stop."""


class StopRequests:
    """The stoppable jobs of this server process and whether a stop was asked for each."""

    def __init__(self) -> None:
        self._asked: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def open(self, job_id: str) -> None:
        """The job can be stopped from now on."""
        with self._lock:
            self._asked[job_id] = threading.Event()

    def close(self, job_id: str) -> None:
        """The job has ended: nothing left to stop."""
        with self._lock:
            self._asked.pop(job_id, None)

    def stoppable(self, job_id: str) -> bool:
        """Whether the job runs here and takes a stop (a job of another server process does not)."""
        with self._lock:
            return job_id in self._asked

    def request(self, job_id: str) -> bool:
        """Ask the job to stop; False if it has ended or is not stoppable from here."""
        with self._lock:
            asked = self._asked.get(job_id)
        if asked is None:
            return False
        asked.set()
        return True

    def asked(self, job_id: str) -> bool:
        """Whether a stop was asked for the job, which is still running (it stops at its next report)."""
        with self._lock:
            asked = self._asked.get(job_id)
        return asked is not None and asked.is_set()

    def check(self, job_id: str) -> None:
        """Raise JobStopped if a stop was asked for the job."""
        if self.asked(job_id):
            raise JobStopped
