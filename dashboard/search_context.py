"""What every section of the Sensitivity & search page reads: the model and its layers, taken once a run."""

from __future__ import annotations

from dataclasses import dataclass

from dashboard import cached
from dashboard.runner import Runner
from engine.types import LayerInfo, Precision

POLL_S = 1.5  # how often a running pass or search is read back from the store


@dataclass(frozen=True)
class SearchPage:
    model: str
    runner: Runner
    layers: list[LayerInfo]
    offered: list[str]  # precision values some layer takes, FP32 aside
    # Added without labelled data: no accuracy to measure (sensitivity is drawn by SQNR, nothing to search).
    no_labels: bool

    @classmethod
    def of(cls, model: str) -> SearchPage:
        runner = cached.runner()
        layers = cached.layers(model)
        offered = [
            p.value for p in Precision if p is not Precision.FP32 and any(p in x.accepts for x in layers)
        ]
        return cls(model, runner, layers, offered, not cached.has_labels(model))

    @property
    def layer_names(self) -> list[str]:
        return [x.name for x in self.layers]

    def running(self, kind: str) -> bool:
        return bool(self.runner.active_jobs(kind, self.model))
