"""Comparison table (servers side by side, ratios against Roost) and the JSON result file."""

from __future__ import annotations

import json
import math
import os
import platform
import ssl
import sys
from pathlib import Path
from typing import Any

from .scenarios.base import Metric, ServerResult


def ratio_base(servers: list[str]) -> str:
    """Ratios are Roost / other when Roost ran, else first server / other."""
    return "roost" if "roost" in servers else servers[0]


def _fmt(metric: Metric, value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if abs(value) < 1e-9:
        value = 0.0  # no "-0.00"
    return metric.fmt.format(value)


def ratios(
    metrics: tuple[Metric, ...], results: dict[str, ServerResult]
) -> dict[str, dict[str, float | None]]:
    servers = list(results)
    base = ratio_base(servers)
    out: dict[str, dict[str, float | None]] = {}
    for other in servers:
        if other == base:
            continue
        col: dict[str, float | None] = {}
        for m in metrics:
            if not m.ratio:
                col[m.key] = None
                continue
            a = results[base].metrics.get(m.key)
            b = results[other].metrics.get(m.key)
            if a is None or b is None or math.isnan(a) or math.isnan(b) or b == 0:
                col[m.key] = None
            else:
                col[m.key] = a / b
        out[f"{base}/{other}"] = col
    return out


def table(metrics: tuple[Metric, ...], results: dict[str, ServerResult]) -> str:
    servers = list(results)
    rat = ratios(metrics, results)
    header = ["metric", "unit", *servers, *rat]
    rows = [header]
    for m in metrics:
        row = [m.label, m.unit]
        row += [_fmt(m, results[s].metrics.get(m.key)) for s in servers]
        for col in rat.values():
            r = col.get(m.key)
            row.append("-" if r is None else f"{r:.2f}x")
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = []
    for n, row in enumerate(rows):
        cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1])]
        cells += [c.rjust(w) for c, w in zip(row[2:], widths[2:], strict=True)]
        lines.append("  ".join(cells))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    note = "ratios: higher is better for logins/s and msgs/s; lower is better for latency, CPU and memory"
    return "\n".join([*lines, "", note])


def host_info(loop_name: str) -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu_model": model,
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "event_loop": loop_name,
        "openssl": ssl.OPENSSL_VERSION,
    }


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)

    def clean(value: Any) -> Any:
        if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [clean(v) for v in value]
        return value

    path.write_text(json.dumps(clean(document), indent=2, sort_keys=False) + "\n")
