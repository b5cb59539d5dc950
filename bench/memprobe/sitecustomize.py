"""Memory and GC probe inside a Roost server started by ``bench/run`` (investigation aid, issue 15).

    PYTHONPATH=$PWD/bench/memprobe ROOST_MEMPROBE=/tmp/probe.txt bench/run soak --servers roost ...

(an absolute PYTHONPATH: the servers run in their own directories)

Python imports ``sitecustomize`` at start-up; this one acts only in a ``roost … run`` process with
``ROOST_MEMPROBE`` set. Every 20 s it appends one line to that file: RSS, glibc's heap (``mallinfo2``:
arena size, bytes in use, free bytes), Python's allocated blocks, SQLite's memory, frozen objects and
``roost.util.gcstats.STATS`` (collections, longest pause wall/CPU, objects freed, per generation).
Optional: ``ROOST_MEMPROBE_TRIM=SECONDS`` runs one ``malloc_trim(0)`` then and logs what it gave back;
``ROOST_MEMPROBE_GCRESET=SECONDS`` resets the GC figures then (to see steady state only);
``ROOST_MEMPROBE_FRAMES=N`` starts tracemalloc (slow: a snapshot stops the server for seconds) and
writes the top differences between a snapshot at ``ROOST_MEMPROBE_SNAP1`` seconds and one at
``ROOST_MEMPROBE_SNAP2`` seconds (default: exit, when the sessions are gone).
``ROOST_MEMPROBE_UNFROZEN=SECONDS`` then unfreezes everything, collects with ``gc.DEBUG_SAVEALL`` and
logs how many unreachable objects the frozen generation held, by type (cycles that formed among
objects after they were frozen, which the periodic collections never see).
``ROOST_MEMPROBE_MALLOC_INFO=S1,S2,…`` writes glibc's ``malloc_info`` (every arena, free chunks by
size) to ``<probe file>.malloc-<S>.xml`` at those seconds.
The sampling itself is not free. ``gc.get_freeze_count()`` walks the whole frozen list while it holds
the GIL: 113–129 ms inside a 10,000-session server (~790,000 frozen objects scattered over the heap).
With it in the line every 20 s, p99 jumped to ~200 ms in every other 10 s interval. Roost itself no
longer calls it periodically (it counts what it freezes). ``ROOST_MEMPROBE_LIGHT=1`` logs only RSS and
the GC figures, and times that call during the first 150 s only; ``ROOST_MEMPROBE_EVERY=SECONDS`` sets
the period.
``ROOST_MEMPROBE_LAG=MS`` logs every event-loop stall longer than MS (a probe callback every 10 ms
from this thread), with what the GC figures and a stack sample of the loop's thread said then.
``ROOST_MEMPROBE_TYPES=S1,S2`` counts the collector-tracked objects (frozen ones included) by type at
both times and logs the types that grew most between them (cheap next to tracemalloc).
``ROOST_MEMPROBE_REFS=S1,S2,…`` counts, at those seconds, the objects not frozen yet and the
references out of them by type: what the next periodic collection will walk, and the five objects
with most references (``ROOST_MEMPROBE_HOLDERS=1``: and who holds them; slow, it unfreezes everything).
"""

from __future__ import annotations

import os
import sys


def _install(path: str) -> None:
    import atexit
    import ctypes
    import ctypes.util
    import gc
    import threading
    import time
    import tracemalloc
    from typing import Any

    out = open(path, "a", buffering=1)  # noqa: SIM115 - lives as long as the process
    frames = int(os.environ.get("ROOST_MEMPROBE_FRAMES", "0"))
    if frames:
        tracemalloc.start(frames)
    libc = ctypes.CDLL(None)

    class MallInfo2(ctypes.Structure):
        _fields_ = [
            (n, ctypes.c_size_t)
            for n in (
                "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
                "fordblks", "keepcost",
            )
        ]  # fmt: skip

    libc.mallinfo2.restype = MallInfo2
    libc.fopen.restype = ctypes.c_void_p
    libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
    libc.fclose.argtypes = [ctypes.c_void_p]
    sqlite: Any = None
    name = ctypes.util.find_library("sqlite3")
    if name:
        sqlite = ctypes.CDLL(name)
        sqlite.sqlite3_memory_used.restype = ctypes.c_int64
    t0 = time.monotonic()
    done: set[str] = set()
    snapshots: dict[str, tracemalloc.Snapshot] = {}

    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    light = bool(os.environ.get("ROOST_MEMPROBE_LIGHT"))

    def line(tag: str = "") -> None:
        row: dict[str, Any] = {"t": round(time.monotonic() - t0), "rss_mib": rss() >> 20}
        if not light:
            mi = libc.mallinfo2()
            row.update(
                heap_mib=mi.arena >> 20,
                malloc_used_mib=mi.uordblks >> 20,
                malloc_free_mib=mi.fordblks >> 20,
                py_blocks=sys.getallocatedblocks(),
                sqlite_kib=sqlite.sqlite3_memory_used() >> 10 if sqlite else -1,
            )
        if not light or time.monotonic() - t0 < 150:
            # It walks the frozen list holding the GIL (see the docstring): light mode times it
            # during the warm-up only, then reads the count Roost keeps.
            started = time.perf_counter()
            row["frozen"] = gc.get_freeze_count()
            row["freeze_count_ms"] = round((time.perf_counter() - started) * 1000, 1)
        else:
            from roost.util.gcstats import STATS as stats

            row["frozen_total"] = stats.frozen
        try:
            from roost.util.gcstats import STATS

            snap = STATS.snapshot()
            row["gc"] = [
                (g["collections"], round(g["pause_ms_max"], 2), round(g["cpu_ms_max"], 2), g["collected"])
                for g in snap["generations"]
            ]
            if STATS.slow_periodic:  # (CPU ms, unfrozen before, survivors, s since previous)
                row["slow"] = [(round(ms, 1), n, kept, round(s, 2)) for ms, n, kept, s in STATS.slow_periodic]
                STATS.slow_periodic.clear()
        except Exception as exc:  # the server may not have imported it yet
            row["gc"] = repr(exc)
        out.write(f"{tag} {row}\n")

    def env_after(name: str) -> bool:
        value = os.environ.get(name)
        if not value or name in done or time.monotonic() - t0 < float(value):
            return False
        done.add(name)
        return True

    def unfrozen_garbage() -> None:
        import collections

        frozen = gc.get_freeze_count()
        gc.unfreeze()
        gc.set_debug(gc.DEBUG_SAVEALL)
        found = gc.collect()
        gc.set_debug(0)
        kinds = collections.Counter(type(o).__qualname__ for o in gc.garbage)
        sample = collections.Counter(
            repr(o)[:120] for o in gc.garbage if type(o).__name__ in ("function", "method", "cell", "tuple")
        )
        gc.garbage.clear()
        gc.freeze()
        out.write(f"unfrozen: {frozen} frozen, {found} unreachable; {kinds.most_common(40)}\n")
        out.write(f"unfrozen samples: {sample.most_common(30)}\n")

    counts: dict[str, Any] = {}

    def census(first: bool) -> None:
        import collections

        gc.unfreeze()
        now = collections.Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.get_objects())
        gc.freeze()
        jids = collections.Counter(str(o) for o in gc.get_objects() if type(o).__name__ == "JID")
        from roost.jid import _parse_cached

        if first:
            counts["a"], counts["jids"] = now, jids
            out.write(f"types: {sum(now.values())} objects; JID parse cache {_parse_cached.cache_info()}\n")
            return
        now.subtract(counts.pop("a"))
        out.write(f"types grown: {[(k, v) for k, v in now.most_common(30) if v > 0]}\n")
        jids.subtract(counts.pop("jids"))
        grown = [(k, v) for k, v in jids.most_common(15) if v > 0]
        out.write(f"JIDs grown: {sum(v for v in jids.values() if v > 0)} by string, top {grown}; ")
        fresh = sum(1 for v in jids.values() if v > 0)
        out.write(f"new strings {fresh}; cache {_parse_cached.cache_info()}\n")

    def referents() -> None:
        """What a periodic collection walks: the objects not frozen yet, and the references out of
        them (each one a visit to a referent's header, a cache miss when it lies in a big heap)."""
        import collections

        objects: collections.Counter[str] = collections.Counter()
        refs: collections.Counter[str] = collections.Counter()
        for generation in range(3):
            for o in gc.get_objects(generation):
                name = f"{type(o).__module__}.{type(o).__qualname__}"
                objects[name] += 1
                refs[name] += len(gc.get_referents(o))
        out.write(f"referents: {sum(objects.values())} unfrozen objects, {sum(refs.values())} references; ")
        out.write(f"by references {[(k, v, objects[k]) for k, v in refs.most_common(25)]}\n")
        biggest = sorted(
            (o for g in range(3) for o in gc.get_objects(g)), key=lambda o: len(gc.get_referents(o))
        )[-5:]
        for o in reversed(biggest):
            keys = list(o.items())[:2] if isinstance(o, dict) else list(o)[:2] if isinstance(o, list) else []
            if not os.environ.get("ROOST_MEMPROBE_HOLDERS"):  # slow: ~1 s with everything unfrozen
                out.write(f"  {type(o).__qualname__} of {len(gc.get_referents(o))}: items {keys!r:.300}\n")
                continue
            gc.unfreeze()  # the holders are usually frozen: let get_referrers see them
            try:
                holders = [h for h in gc.get_referrers(o) if not isinstance(h, list)][:3]
                named = [
                    f"{type(h).__qualname__} {list(h)[:6] if isinstance(h, dict) else ''}" for h in holders
                ]
                above = [type(g).__qualname__ for h in holders for g in gc.get_referrers(h)][:6]
            finally:
                gc.freeze()
            out.write(
                f"  {type(o).__qualname__} of {len(gc.get_referents(o))} (tracked {gc.is_tracked(o)}): "
                f"items {keys!r:.300} held by {named!r:.400} held by {above}\n"
            )

    def watch_lag(limit: float) -> None:
        """Post a callback to the running loop every 10 ms; log when one waits longer than ``limit``,
        with the main thread's stack sampled while it waits."""
        import traceback

        main = threading.main_thread().ident
        while "loop" not in loops:
            time.sleep(0.5)
        running = loops["loop"]
        out.write(f"lag watcher on {running!r}\n")
        while True:
            done = threading.Event()
            posted = time.perf_counter()
            running.call_soon_threadsafe(done.set)
            sample = ""
            if not done.wait(limit):
                frame = sys._current_frames().get(main)
                sample = "".join(traceback.format_stack(frame, limit=12)) if frame is not None else ""
                done.wait()
            waited = time.perf_counter() - posted
            if waited > limit:
                out.write(f"LAG {waited * 1000:.0f} ms at t={time.monotonic() - t0:.0f}\n{sample}\n")
            time.sleep(0.01)

    def loop() -> None:
        every = float(os.environ.get("ROOST_MEMPROBE_EVERY", "20"))
        while True:
            time.sleep(every)
            line()
            if env_after("ROOST_MEMPROBE_GCRESET"):
                from roost.util.gcstats import STATS

                STATS.reset()
                out.write("gc figures reset\n")
            if frames and env_after("ROOST_MEMPROBE_SNAP1"):
                snapshots["a"] = tracemalloc.take_snapshot()
                out.write("snapshot a\n")
            if frames and "a" in snapshots and env_after("ROOST_MEMPROBE_SNAP2"):
                compare()
            for at in os.environ.get("ROOST_MEMPROBE_MALLOC_INFO", "").split(","):
                if at and at not in done and time.monotonic() - t0 >= float(at):
                    done.add(at)
                    stream = libc.fopen(f"{path}.malloc-{at}.xml".encode(), b"w")
                    libc.malloc_info(0, stream)
                    libc.fclose(stream)
            census_at = os.environ.get("ROOST_MEMPROBE_TYPES", "").split(",")
            for n, at in enumerate(census_at):
                if at and f"types{at}" not in done and time.monotonic() - t0 >= float(at):
                    done.add(f"types{at}")
                    census(n == 0)
            for at in os.environ.get("ROOST_MEMPROBE_REFS", "").split(","):
                if at and f"refs{at}" not in done and time.monotonic() - t0 >= float(at):
                    done.add(f"refs{at}")
                    referents()
            if env_after("ROOST_MEMPROBE_UNFROZEN"):
                unfrozen_garbage()
            if env_after("ROOST_MEMPROBE_TRIM"):
                before, start = rss(), time.perf_counter()
                libc.malloc_trim(0)
                took = time.perf_counter() - start
                out.write(f"malloc_trim: RSS {before >> 20} -> {rss() >> 20} MiB in {took * 1000:.1f} ms\n")

    # The server's event loop, caught when the GC policy starts measuring (inside the running loop).
    loops: dict[str, Any] = {}
    from roost.util import gcstats

    original_install = gcstats.GcStats.install

    def install(self: Any) -> None:
        import asyncio

        with_loop = asyncio.get_running_loop()
        loops.setdefault("loop", with_loop)
        original_install(self)

    gcstats.GcStats.install = install  # type: ignore[method-assign]
    threading.Thread(target=loop, name="memprobe", daemon=True).start()
    lag_ms = float(os.environ.get("ROOST_MEMPROBE_LAG", "0"))
    if lag_ms:
        threading.Thread(target=watch_lag, args=(lag_ms / 1000,), name="memprobe-lag", daemon=True).start()

    def compare() -> None:
        a = snapshots.pop("a")
        ignore = [tracemalloc.Filter(False, tracemalloc.__file__)]
        b = tracemalloc.take_snapshot().filter_traces(ignore)
        key = "traceback" if frames > 1 else "lineno"
        for stat in b.compare_to(a.filter_traces(ignore), key)[:25]:
            out.write(f"DIFF {stat}\n")
            if frames > 1:
                out.writelines(f"    {frame}\n" for frame in stat.traceback.format()[-2 * frames :])

    def at_exit() -> None:
        line("exit")
        if "a" in snapshots:
            compare()

    atexit.register(at_exit)


_path = os.environ.get("ROOST_MEMPROBE")
if _path and "run" in sys.argv[1:] and "roost" in os.path.basename(sys.argv[0]):
    _install(_path)
