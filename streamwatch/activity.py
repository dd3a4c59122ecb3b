"""Activity: when each model version was last seen, to retire the versions that went away.

The clock is event time, per model: the newest prediction of any of its versions. A version
whose newest activity (a prediction, or a label joined to one of its predictions) falls more
than ``retire_after`` seconds behind that clock is idle; the drift engine and the quality
side then forget it, and its series leave /metrics. A model that stops sending entirely
keeps its last series (its clock stops too): staleness alerts cover that case. A version
seen since the last :meth:`Activity.take_idle` is never idle, whatever the clock says: a
version that is still sending is never retired.
"""

from __future__ import annotations

from streamwatch.records import VersionKey


class Activity:
    def __init__(self, retire_after: float) -> None:
        self.retire_after = retire_after
        self.last_seen: dict[VersionKey, float] = {}
        self.clock: dict[str, float] = {}  # per model: its newest prediction time
        self._fresh: set[VersionKey] = set()  # seen since the last take_idle

    def clear(self) -> None:
        """Forget everything (the engine's state was handed over: repartition)."""
        self.last_seen.clear()
        self.clock.clear()
        self._fresh.clear()

    def saw(self, key: VersionKey, newest: float, prediction: bool = True) -> None:
        """Record activity of a version at event time ``newest``; predictions (not labels)
        also move their model's clock."""
        self.last_seen[key] = max(self.last_seen.get(key, newest), newest)
        self._fresh.add(key)
        if prediction:
            model = key[0]
            self.clock[model] = max(self.clock.get(model, newest), newest)

    def take_idle(self) -> list[VersionKey]:
        """The versions idle for longer than ``retire_after``, forgotten here."""
        idle = [
            key
            for key, t in self.last_seen.items()
            if self.clock.get(key[0], t) - t > self.retire_after and key not in self._fresh
        ]
        self._fresh.clear()
        for key in idle:
            del self.last_seen[key]
        return idle

    def forget(self, key: VersionKey) -> None:
        self.last_seen.pop(key, None)
        self._fresh.discard(key)
