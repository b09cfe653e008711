"""Peak memory of a process, with the standard library only: a measured process imports this
last, so it must not load anything that raises its high-water mark."""

from pathlib import Path


def own_peak_rss() -> float:
    """This process's peak RSS in MiB. Linux's VmHWM, not getrusage's ru_maxrss: a process
    started from another inherits in ru_maxrss the RSS its parent had when it started it."""
    status = Path("/proc/self/status")
    if status.exists():
        return next(int(line.split()[1]) for line in status.read_text().splitlines() if line.startswith("VmHWM")) / 1024
    import resource  # elsewhere (macOS: bytes), with the caveat above

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
