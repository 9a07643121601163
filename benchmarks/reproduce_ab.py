"""Quick reproductions, old code against new: the same outputs bit for bit, and the CPU time.

    python benchmarks/reproduce_ab.py --old /tmp/orig/src schoenholz2017 yang2019 --pairs 3

``--old``: the ``src`` folder of another checkout (e.g. ``git archive HEAD src | tar -x``). For
each experiment and pair the quick run is made in a fresh process with each ``src`` on
``PYTHONPATH``, alternating which goes first (interleaved A/B, one BLAS thread), and its
outputs dumped: claims and checks (claim, paper, measured, holds, value), notes, captions,
tables (without the wall-clock ``seconds`` columns) and every figure's axes data (titles,
limits, ticks, lines' ``get_xydata()``, collections' offsets and arrays, texts, images, legend
entries). It prints IDENTICAL or the fields that differ, and the CPU seconds (``process_time``
of the run) per side: median and range over the pairs.
"""

from __future__ import annotations

import argparse
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
NEW_SRC = HERE.parents[1] / "src"


def figure_data(fig) -> list[dict]:
    """What a figure shows, per axes, as comparable values (arrays as bytes)."""
    import numpy as np

    def raw(a) -> bytes | None:
        return None if a is None else np.asarray(a).tobytes()

    out = []
    for ax in fig.axes:
        legend = ax.get_legend()
        out.append({
            "title": ax.get_title(), "label": ax.get_label(),
            "xlim": ax.get_xlim(), "ylim": ax.get_ylim(),
            "xticks": raw(ax.get_xticks()), "yticks": raw(ax.get_yticks()),
            "ticklabels": [t.get_text() for t in ax.get_xticklabels() + ax.get_yticklabels()],
            "lines": [(ln.get_label(), raw(ln.get_xydata())) for ln in ax.lines],
            "texts": [(t.get_text(), t.get_position()) for t in ax.texts],
            "collections": [(raw(c.get_offsets()), raw(c.get_array()))
                            for c in ax.collections],
            "images": [raw(im.get_array()) for im in ax.images],
            "legend": None if legend is None else [t.get_text() for t in legend.get_texts()],
        })
    return out


def dump(name: str, path: str) -> None:
    """Run ``name`` quick (one BLAS thread) in this process and pickle its outputs."""
    from threadpoolctl import threadpool_limits

    from depthlab.reproduce import experiments  # noqa: F401  (registers every experiment)
    from depthlab.reproduce.base import REGISTRY

    with threadpool_limits(1):
        t0 = time.process_time()
        res = REGISTRY[name].run(quick=True, data=None, progress=False)
        cpu = time.process_time() - t0

    def rows(claims):
        return [(c.claim, c.paper, c.measured, bool(c.holds), c.value) for c in claims]

    tables = {k: pickle.dumps(df.drop(columns=["seconds"], errors="ignore")
                              .to_dict(orient="list")) for k, df in res.tables.items()}
    data = {"claims": rows(res.claims), "checks": rows(res.checks), "notes": list(res.notes),
            "captions": dict(res.captions), "tables": tables,
            "figures": {k: figure_data(f) for k, f in res.figures.items()}}
    with open(path, "wb") as fh:
        pickle.dump({"data": data, "cpu": cpu}, fh)


def run_side(src: Path, name: str, folder: Path, tag: str) -> dict:
    path = folder / f"{name}-{tag}.pkl"
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, str(HERE), "--dump", name, str(path)], env=env, check=True)
    with open(path, "rb") as fh:
        return pickle.load(fh)


def differences(a: dict, b: dict) -> list[str]:
    """The output fields (and their keys) where two dumps differ."""
    out = []
    for key in a:
        if a[key] == b[key]:
            continue
        if isinstance(a[key], dict):
            out += [f"{key}[{k!r}]" for k in sorted(set(a[key]) | set(b[key]))
                    if a[key].get(k) != b[key].get(k)]
        else:
            out.append(key)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("names", nargs="*", help="experiments (default: the six slowest)")
    p.add_argument("--old", type=Path, help="the src folder of the code to compare with")
    p.add_argument("--pairs", type=int, default=3, help="interleaved old/new pairs (default 3)")
    p.add_argument("--dump", nargs=2, metavar=("NAME", "PATH"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.dump:
        dump(*args.dump)
        return 0
    if args.old is None or not (args.old / "depthlab").is_dir():
        p.error(f"--old must be a src folder holding depthlab/, got {args.old}")
    if args.pairs < 1:
        p.error(f"--pairs must be >= 1, got {args.pairs}")
    names = args.names or ["yang2019", "schoenholz2017", "he2015", "glorot2010",
                           "depth-ladder", "xu2016"]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name in names:
            cpu: dict[str, list[float]] = {"old": [], "new": []}
            same = True
            for k in range(args.pairs):
                order = [("old", args.old), ("new", NEW_SRC)]
                if k % 2:
                    order.reverse()
                got = {tag: run_side(src, name, folder, f"{tag}{k}") for tag, src in order}
                diff = differences(got["old"]["data"], got["new"]["data"])
                same = same and not diff
                if diff:
                    print(f"{name} pair {k}: DIFFERENT: {', '.join(diff)}")
                for tag in cpu:
                    cpu[tag].append(got[tag]["cpu"])
            med = {t: statistics.median(v) for t, v in cpu.items()}
            print(f"{name}: {'IDENTICAL' if same else 'DIFFERENT'}; CPU s old "
                  f"{med['old']:.1f} ({min(cpu['old']):.1f}-{max(cpu['old']):.1f}), new "
                  f"{med['new']:.1f} ({min(cpu['new']):.1f}-{max(cpu['new']):.1f}): "
                  f"{1 - med['new'] / med['old']:.0%} less", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
