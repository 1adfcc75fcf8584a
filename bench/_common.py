"""Shared helpers for the bench/ scripts: machine description, peak memory, tables, JSON.

Peak memory, the method:
- CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``, minus what was
  allocated before the measured call (the caching allocator's own count of live tensor bytes).
- CPU: ``tracemalloc`` does not see torch's allocator and RSS is blurred by glibc keeping freed
  pages and by other processes, so we use torch's profiler with ``profile_memory=True``: the CPU
  allocator reports every allocation and free with its running total of live bytes
  (``total_allocated``); the peak is the maximum of that total over the call minus its value just
  before the call's first event (tensors alive before the call are not included). Profiling slows the call, so times
  come from separate, unprofiled runs.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    """A short description of the machine the numbers come from."""
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    try:
        with open("/proc/cpuinfo") as f:
            names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
        info["cpu"] = names[0] if names else platform.processor()
    except OSError:
        info["cpu"] = platform.processor()
    try:
        with open("/proc/meminfo") as f:
            info["mem_total_gb"] = round(int(f.readline().split()[1]) / 2**20, 1)
        info["loadavg"] = os.getloadavg()
    except OSError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_mem_gb"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        pass
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        )
        info["git"] = rev.stdout.strip() or None
    except OSError:
        pass
    return info


def _cpu_peak_bytes(fn: Callable[[], Any]) -> tuple[int, Any]:
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = fn()
    events = []  # (time, bytes +/-, running total)
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        node = stack.pop()
        if node.typed[0] == _EventType.Allocation:
            alloc = node.typed[1]
            events.append((node.start_time_ns, alloc.alloc_size, alloc.total_allocated))
        stack.extend(node.children)
    if not events:
        return 0, result
    # the allocator's running total is global and can carry bytes from earlier profiled calls
    # that were freed unprofiled; count from the total just before this call's first event
    events.sort()
    base = events[0][2] - events[0][1]
    return max(total for _, _, total in events) - base, result


def peak_memory(fn: Callable[[], Any], device: torch.device) -> tuple[int, Any]:
    """(peak bytes of tensors allocated during fn() beyond those alive before, fn's result)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        result = fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before, result
    return _cpu_peak_bytes(fn)


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, float, Any]:
    """(wall seconds, process CPU seconds, result) of fn(), synchronising CUDA around it.

    CPU seconds (all threads of this process) are much less disturbed than wall time when other
    processes share the cores; on a quiet machine with one thread the two agree.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start, cpu = time.perf_counter(), time.process_time()
    result = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, time.process_time() - cpu, result


def print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    """Plain fixed-width table of the given columns."""

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return "-" if v is None else str(v)

    cells = [[fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.rjust(w) for c, w in zip(columns, widths)))
    for row in cells:
        print("  ".join(v.rjust(w) for v, w in zip(row, widths)))


def write_json(name: str, payload: dict[str, Any], out_dir: Path | None = None) -> Path:
    """Write payload (plus the machine description) to bench/results/<name>.json."""
    out_dir = out_dir or RESULTS_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    payload = {"machine": machine(), "created": time.strftime("%Y-%m-%dT%H:%M:%S"), **payload}
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return path
