"""The canonical digest of a run's results: what replay compares and RunCompleted carries.

SHA-256 over the canonical JSON encoding (msgspec, keys sorted) of each year's result, one per
line, followed by the summary. Wall-clock times are not part of any of these values.
"""

from __future__ import annotations

import hashlib

import msgspec

from domain.values import RunSummary, YearResult

_encoder = msgspec.json.Encoder(order="sorted")


def canonical(value: YearResult | RunSummary) -> bytes:
    return _encoder.encode(value)


class ResultDigest:
    """Feeds year results in order, then the summary; ``hexdigest`` names the whole run."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()

    def add_year(self, result: YearResult) -> None:
        self._hash.update(canonical(result))
        self._hash.update(b"\n")

    def add_summary(self, summary: RunSummary) -> None:
        self._hash.update(b"summary\n")
        self._hash.update(canonical(summary))

    def hexdigest(self) -> str:
        return "sha256:" + self._hash.hexdigest()
