"""Keys: (model, version, slice) interned as small integers, freed when retired.

The quality side's pending predictions, windows and detectors are keyed by these codes.
"""

from __future__ import annotations

import numpy as np

from streamwatch.records import SegmentKey
from streamwatch.statistics import IntArray

SliceKey = SegmentKey


class Keys:
    """Interned (model, version, slice) keys: pending predictions store small integers.

    A retired code stays reserved while pending predictions may still carry it:
    :meth:`resolve` sends them to the key that now stands for them (``NAME:__other__`` for a
    slice value no longer tracked; a fresh code for a version that comes back). Once no
    pending prediction carries it (:meth:`sweep`), the code is free for a new key, so churn
    of versions and slice values does not grow the table for ever."""

    def __init__(self) -> None:
        self.codes: dict[SliceKey, int] = {}
        self.names: list[SliceKey] = []
        self.retired: dict[int, SliceKey] = {}  # code -> the key its events now count under
        self._free: list[int] = []
        self._swept = 0  # retired codes left by the last sweep

    def code(self, key: SliceKey) -> int:
        code = self.codes.get(key)
        if code is None:
            if self._free:
                code = self._free.pop()
                self.names[code] = key
            else:
                code = len(self.names)
                self.names.append(key)
            self.codes[key] = code
        return code

    def retire(self, code: int, successor: SliceKey) -> None:
        self.codes.pop(self.names[code], None)
        self.retired[code] = successor

    def resolve(self, codes: IntArray) -> IntArray:
        if not self.retired:
            return codes
        out = codes.copy()
        for code in np.unique(codes).tolist():
            successor = self.retired.get(code)
            if successor is not None:
                out[codes == code] = self.code(successor)
        return out

    def wants_sweep(self) -> bool:
        """Enough codes retired since the last sweep to pay for a scan of the pending
        predictions (the threshold doubles with what a sweep leaves: amortised)."""
        return len(self.retired) >= 2 * self._swept + 256

    def sweep(self, referenced: set[int]) -> int:
        """Free the retired codes no pending prediction carries; return how many."""
        freed = [code for code in self.retired if code not in referenced]
        for code in freed:
            del self.retired[code]
            self._free.append(code)
        self._swept = len(self.retired)
        return len(freed)
