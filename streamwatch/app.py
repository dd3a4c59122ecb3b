"""Composition root: wires the pipeline's stages. Keep it short.

::

  Kafka: predictions ─┐   (or recorded: the demo's stream, replay's files)
  Kafka: labels ──────┴─> source ─> decode ─> admission ─┬─> dead-letter topic, counter
                                                         │   (contract, limits, event time)
                                                         └─> event order ─> version cap ─┐
     (one order, whatever the partitioning)                                              │
                             ┌───────────────────────────────────────────────────────────┘
                             ├─> monitor (drift) ──────────────┬─> exporter (endpoint)
                             └─> quality (join, scores) ───────┘

  the loop (loop.py) runs the stages on every source; pipeline.py holds them
  beside the loop: worker (offsets stored after a batch; checkpoint = flush dead letters,
  then commit; paused while dead letters are not acknowledged), repartition (one engine
  across workers)
  at the edges: config, errors, cli
"""

from __future__ import annotations

import gc
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from streamwatch.activity import Activity
from streamwatch.baseline import load_profiles
from streamwatch.config import Settings
from streamwatch.exporter import (
    Health,
    HealthCollector,
    MonitorCollector,
    QualityCollector,
    Telemetry,
)
from streamwatch.monitor import Monitor
from streamwatch.pipeline import Pipeline
from streamwatch.quality import Quality
from streamwatch.worker import Worker


@dataclass
class App:
    settings: Settings
    registry: CollectorRegistry
    pipeline: Pipeline
    health: Health

    def worker(self) -> Worker:
        return Worker(self.settings, self.pipeline, self.health)


def build(settings: Settings, registry: CollectorRegistry | None = None) -> App:
    """The pipeline and its exporter, on a private registry unless one is given."""
    registry = registry or CollectorRegistry()
    profiles = load_profiles(settings)
    activity = Activity(settings.exporter.retire_after_seconds)  # one clock for both sides
    quality = Quality(settings, profiles, activity)
    monitor = Monitor(settings, profiles, quality.slicers, activity)  # quality counts slices
    telemetry = Telemetry(registry, (settings.topics.predictions, settings.topics.labels))
    health = Health(settings.worker.stall_seconds)
    registry.register(MonitorCollector(monitor, lambda: health.rebuilding))
    registry.register(QualityCollector(quality, lambda: health.rebuilding))
    registry.register(HealthCollector(health))
    return App(settings, registry, Pipeline(settings, monitor, quality, telemetry), health)


#: Allocations between young-generation collections (CPython's default is 700). A batch
#: allocates tens of thousands of short-lived objects (decoded records), most of them freed
#: with it: at 700, the collector runs hundreds of times per batch and promotes survivors.
YOUNG_THRESHOLD = 50_000


def tune_gc() -> None:
    """For a long-running worker or a replay, once its startup is done: move what exists
    now (modules, settings, the pipeline) out of the collector's reach (``gc.freeze``), and
    collect the young generation less often. Measured with bench/throughput (README,
    Performance)."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
