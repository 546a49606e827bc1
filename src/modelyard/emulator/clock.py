"""The emulator's virtual clock and the US equity market-hours rule.

The clock walks a *timeline*: the sorted union of every bar timestamp the emulator serves.
``now`` is the timestamp of the latest published bar (Alpaca stamps a bar with its opening
time). Stepping the clock publishes the next timestamp's bars and runs the matching engine
against them.

Market hours: ``is_open`` follows NYSE regular hours, 09:30-16:00 America/New_York on weekdays
(so 14:30-21:00 UTC in winter, 13:30-20:00 UTC in summer). Exchange holidays and early closes
are ignored: the emulator is a rehearsal venue, not a calendar.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

__all__ = ["VirtualClock", "market_clock", "ns_to_datetime"]

NEW_YORK = ZoneInfo("America/New_York")
_OPEN = time(9, 30)
_CLOSE = time(16, 0)


def ns_to_datetime(ns: int) -> datetime:
    """Nanoseconds since the epoch to a tz-aware UTC datetime (microsecond precision)."""
    return datetime.fromtimestamp(ns // 1_000 / 1_000_000, tz=UTC)


def datetime_to_ns(moment: datetime) -> int:
    """A tz-aware datetime to nanoseconds since the epoch (naive means UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


class VirtualClock:
    """A cursor over the timeline; not thread-safe, the venue serialises access."""

    def __init__(self, timeline: npt.NDArray[np.int64], start_ns: int | None = None) -> None:
        self._timeline = timeline
        if start_ns is None:
            self._pos = 0 if len(timeline) else -1
            self._before_ns = datetime_to_ns(datetime.now(UTC)) if not len(timeline) else 0
        else:
            self._pos = int(np.searchsorted(timeline, start_ns, side="right")) - 1
            self._before_ns = start_ns

    @property
    def position(self) -> int:
        """Index of the latest published timestamp (-1 before the first bar)."""
        return self._pos

    @property
    def now_ns(self) -> int:
        if self._pos < 0:
            return self._before_ns
        return int(self._timeline[self._pos])

    @property
    def now(self) -> datetime:
        return ns_to_datetime(self.now_ns)

    @property
    def at_end(self) -> bool:
        return self._pos + 1 >= len(self._timeline)

    @property
    def remaining(self) -> int:
        return max(0, len(self._timeline) - self._pos - 1)

    def step(self) -> int | None:
        """Move to the next timestamp and return it, or ``None`` at the end of the data."""
        if self.at_end:
            return None
        self._pos += 1
        return int(self._timeline[self._pos])

    def restore(self, now_ns: int) -> None:
        """Put the cursor back on ``now_ns`` (used when reloading persisted state)."""
        self._pos = int(np.searchsorted(self._timeline, now_ns, side="right")) - 1
        self._before_ns = now_ns


def _session_bounds(day: datetime) -> tuple[datetime, datetime]:
    local = day.astimezone(NEW_YORK).date()
    open_ = datetime.combine(local, _OPEN, tzinfo=NEW_YORK)
    close = datetime.combine(local, _CLOSE, tzinfo=NEW_YORK)
    return open_, close


def _next_weekday_open(after: datetime) -> datetime:
    local_day = after.astimezone(NEW_YORK)
    for offset in range(0, 8):
        candidate = local_day + timedelta(days=offset)
        if candidate.weekday() >= 5:
            continue
        open_, _ = _session_bounds(candidate)
        if open_ > after:
            return open_
    raise AssertionError("unreachable: a weekday occurs within 8 days")


def market_clock(now: datetime, *, force_closed: bool = False) -> dict[str, object]:
    """The ``GET /v2/clock`` body for ``now``; timestamps carry New York offsets like Alpaca."""
    local = now.astimezone(NEW_YORK)
    open_, close = _session_bounds(local)
    is_open = local.weekday() < 5 and open_ <= local < close and not force_closed
    next_open = _next_weekday_open(local)
    if is_open or (local.weekday() < 5 and local < open_):
        next_close = close
    else:
        next_close = _session_bounds(next_open)[1]
    return {
        "timestamp": local.isoformat(),
        "is_open": is_open,
        "next_open": next_open.isoformat(),
        "next_close": next_close.isoformat(),
    }
