"""What a measurement ran on: recorded beside every latency number."""

from __future__ import annotations

import datetime
import os
import platform
from functools import lru_cache
from pathlib import Path


@lru_cache(maxsize=1)
def cpu_name() -> str:
    """The CPU model (``/proc/cpuinfo``), else what ``platform`` says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> list[float] | None:
    """1/5/15-minute load averages (how busy the machine was), where the OS tells."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def machine() -> dict:
    """CPU, core count, load, OS, Python and runtime versions, and the date."""
    import numpy as np

    info = {
        "cpu": cpu_name(),
        "cpus": os.cpu_count(),
        "load_average": load_average(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    for mod in ("torch", "onnxruntime"):
        try:
            info[mod] = __import__(mod).__version__
        except ImportError:
            info[mod] = None
    return info
