"""Benchmarks; run them from the repository root as modules: ``python -m benchmarks.bench_models``."""


def load_average() -> str:
    """The 1-minute load average, printed with every table: other busy processes make timings unreliable."""
    import os

    try:
        return f"load average {os.getloadavg()[0]:.2f}"
    except (AttributeError, OSError):  # not on every platform
        return "load average unknown"
