"""How long ``depthlab report`` takes per figure, with and without the fixed title placement.

The report of a results folder is written ``--repeats`` times (default 3) into a fresh copy of
the folder each time (the figure cache and the PNGs already there left alone), alternating two
modes (order swapped each repeat, after one untimed warm-up render) in one process, so both
see the same machine and the same warm font cache:

* ``new``: the code as it is (panel titles fixed at ``y = 1`` where matplotlib's automatic
  placement leaves them there: :func:`depthlab.report.figures._place_titles`);
* ``old``: ``_place_titles`` turned off, i.e. matplotlib measuring every titled axes' y axis
  before drawing it (what the report did before round 37).

Each PNG of the two modes is compared pixel for pixel (they must be the same). Times are the
process's CPU time per figure (``time.process_time``: on a host loaded by other processes the
wall clock adds the time spent waiting for a core), median and range over the repeats, plus
the ratio old / new of the medians. With ``--profile`` one more render of each mode is profiled and
the share of the report's time spent in matplotlib's title placement
(``_update_title_position``) and the number of Python function calls (a measure of the work
that the load of other processes does not blur) are printed for each mode.

    python benchmarks/report_speed.py DIR [--repeats 3] [--profile]

``DIR``: a results folder with a ``depthlab.db`` (``depthlab demo --out DIR --no-report``, or
``depthlab sweep examples/digits_sweep.toml --out DIR``).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

import depthlab.report.figures as figures
from depthlab.report import write_report

_PLACE = figures._place_titles


def _render(src: Path, mode: str, prof: cProfile.Profile | None = None) -> tuple[float, Path]:
    """CPU seconds to write the report of a copy of ``src`` in ``mode``; the copy's folder."""
    tmp = Path(tempfile.mkdtemp(prefix=f"report_speed_{mode}_"))
    shutil.copy2(src / "depthlab.db", tmp / "depthlab.db")
    figures._place_titles = _PLACE if mode == "new" else (lambda fig: None)
    try:
        t = time.process_time()
        if prof is not None:
            prof.enable()
        write_report(tmp)
        if prof is not None:
            prof.disable()
        return time.process_time() - t, tmp
    finally:
        figures._place_titles = _PLACE


def _same(a: Path, b: Path) -> tuple[int, int]:
    """(PNGs that differ, PNGs) between the figures of two report folders."""
    names = sorted(p.name for p in (a / "figures").glob("*.png"))
    bad = 0
    for n in names:
        x = np.asarray(Image.open(a / "figures" / n))
        y = np.asarray(Image.open(b / "figures" / n))
        bad += int(x.shape != y.shape or bool((x != y).any()))
    return bad, len(names)


def _title_share(mode: str, src: Path) -> tuple[float, int]:
    prof = cProfile.Profile()
    total, tmp = _render(src, mode, prof)
    shutil.rmtree(tmp, ignore_errors=True)
    stats = pstats.Stats(prof)
    spent = sum(v[3] for k, v in stats.stats.items() if k[2] == "_update_title_position")
    whole = sum(v[2] for v in stats.stats.values())  # total internal time = the profiled time
    return spent / whole, stats.total_calls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dir", type=Path)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    times: dict[str, list[float]] = {"old": [], "new": []}
    n_fig = 0
    shutil.rmtree(_render(args.dir, "new")[1], ignore_errors=True)  # warm-up: fonts, imports
    for i in range(args.repeats):
        dirs = {}
        for mode in (("old", "new") if i % 2 == 0 else ("new", "old")):
            t, dirs[mode] = _render(args.dir, mode)
            times[mode].append(t)
        bad, n_fig = _same(dirs["old"], dirs["new"])
        print(f"repeat {i + 1}: old {times['old'][-1]:.2f} s, new {times['new'][-1]:.2f} s CPU, "
              f"{n_fig} figures, {bad} differ")
        for d in dirs.values():
            shutil.rmtree(d, ignore_errors=True)
    for mode in ("old", "new"):
        per = [t / max(n_fig, 1) * 1000 for t in times[mode]]
        print(f"{mode}: {statistics.median(per):.0f} ms CPU per figure "
              f"(range {min(per):.0f}-{max(per):.0f}, {args.repeats} runs)")
    print(f"old / new: {statistics.median(times['old']) / statistics.median(times['new']):.2f}")
    if args.profile:
        for mode in ("old", "new"):
            share, calls = _title_share(mode, args.dir)
            print(f"{mode}: _update_title_position {100 * share:.1f}% of the profiled report, "
                  f"{calls:,} Python function calls (independent of the machine's load)")


if __name__ == "__main__":
    main()
