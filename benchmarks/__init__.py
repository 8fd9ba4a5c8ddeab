"""Benchmarks; run them from the repository root as modules: ``python -m benchmarks.bench_models``."""


def load_average() -> str:
    """The 1-minute load average, printed with every table: other busy processes make timings unreliable."""
    import os

    try:
        return f"load average {os.getloadavg()[0]:.2f}"
    except (AttributeError, OSError):  # not on every platform
        return "load average unknown"


def median_seconds(fn, runs: int, warmup: int = 1, sync=None) -> float:
    """Median wall time of fn() over runs calls, after warmup untimed calls. sync (for example
    torch.cuda.synchronize) runs before each clock read, so queued device work is counted."""
    import statistics
    import time

    sync = sync or (lambda: None)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)
