"""`created_at` of streamed records: UTC RFC 3339 with microseconds, formatted per second."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

from supervisor.inference import created_at


def test_created_at_is_utc_rfc3339_with_microseconds_and_now() -> None:
    before = time.time()
    text = created_at()
    after = time.time()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", text)
    moment = datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    assert before - 1e-6 <= moment <= after + 1e-6


def test_created_at_follows_the_clock_across_seconds() -> None:
    first = created_at()
    time.sleep(1.05)
    second = created_at()
    assert second[:19] != first[:19]  # the cached date and time of day moved on
    assert datetime.fromisoformat(second.replace("Z", "+00:00")).tzinfo == UTC
