"""More stores for ``depthlab report`` than the first tests built: run names that matplotlib
would read as math (``$...$``) or a browser as markup, sweeps whose names share no
anchor-safe character, and sweeps with hundreds of values (the metric figure must stay
readable)."""

from __future__ import annotations

import dataclasses
import html
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from test_report import synthetic_record

from depthlab.experiments.store import Store
from depthlab.report import figures, write_report


def _store(folder: Path, records) -> Path:
    store = Store(folder)
    for r in records:
        store.add_run(r)
    store.close()
    return folder


def _drawn_texts(monkeypatch) -> list[str]:
    """Every legend entry and tick label of the figures the report renders (recorded)."""
    seen: list[str] = []
    render = figures.figure_png

    def recording(fig):
        for ax in fig.axes:
            leg = ax.get_legend()
            seen.extend(t.get_text() for t in (leg.get_texts() if leg else []))
            seen.extend(t.get_text() for t in ax.get_xticklabels())
        for leg in fig.legends:
            seen.extend(t.get_text() for t in leg.get_texts())
        return render(fig)

    monkeypatch.setattr(figures, "figure_png", recording)
    return seen


def test_names_with_dollars_and_markup_are_drawn_and_shown_literally(tmp_path, monkeypatch):
    # was: ValueError from matplotlib's math parser ("$\frac{1$": the report stopped), and
    # "cost $5 and $x" drawn as italic math "cost 5andx"
    names = [r"lr $\frac{1$ <b>bold</b>", "cost $5 and $x & <script>alert(1)</script>"]
    records = [dataclasses.replace(synthetic_record(f"dollar{k}", depth=2, lr=0.1 * (k + 1)),
                                   name=n) for k, n in enumerate(names)]
    seen = _drawn_texts(monkeypatch)
    text = write_report(_store(tmp_path, records)).read_text()
    for n in names:  # the page escapes them; matplotlib gets every "$" escaped: drawn as "$"
        assert html.escape(n, quote=True) in text
        assert n.replace("$", r"\$") in seen, (n, seen)
    assert "<script>alert" not in text and "<b>bold" not in text


def test_sweeps_whose_names_lose_every_character_get_distinct_anchors(tmp_path):
    records = [dataclasses.replace(synthetic_record(f"uni{k}", depth=2, probes=False,
                                                    sweep=s), name=f"point {k}")
               for k, s in enumerate(("深さ", "幅", "σ"))]
    text = write_report(_store(tmp_path, records)).read_text()
    anchors = re.findall(r'<h2 id="([^"]+)">Sweep', text)
    assert len(anchors) == 3 and len(set(anchors)) == 3, anchors
    toc = re.search(r'<nav class="toc">(.*?)</nav>', text).group(1)
    links = re.findall(r'<a href="#([^"]+)">([^<]+)</a>', toc)
    assert {a for a, _ in links} == set(anchors)
    for anchor, title in links:  # each entry leads to its own sweep
        assert f'<h2 id="{anchor}">{title}</h2>' in text


def test_a_sweep_with_hundreds_of_values_keeps_a_readable_metric_figure():
    """400 learning rates (40 of them failed everywhere): at most 25 tick labels, no per-bar
    text, one legend entry for the failed values; a short sweep keeps its per-bar values."""
    lrs = np.round(np.linspace(0.001, 0.4, 400), 6)
    runs = pd.DataFrame({"train.lr": lrs, "val_acc": np.linspace(0.1, 0.9, 400),
                         "status": ["failed" if k % 10 == 0 else "finished"
                                    for k in range(400)]})
    fig = figures.sweep_bars(runs, "train.lr")
    ax = fig.axes[0]
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert 10 <= len(ticks) <= figures.MAX_CATEGORY_TICKS and ticks[0] == "0.001"
    assert not ax.texts
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["✗ every run failed"]
    figures.figure_png(fig)
    few = figures.sweep_bars(runs.iloc[:5], "train.lr")
    assert len(few.axes[0].texts) == 5  # 4 values and one "✗ failed" label
    assert [t.get_text() for t in few.axes[0].get_xticklabels()] == [
        "0.001", "0.002", "0.003", "0.004", "0.005"]
    heat = pd.DataFrame([{"a": i, "b": j, "val_acc": (i * j % 7) / 7, "status": "finished"}
                         for i in range(60) for j in range(40)])
    ax = figures.sweep_heatmap(heat, "a", "b").axes[0]
    assert not ax.texts and len(ax.get_xticklabels()) <= figures.MAX_CATEGORY_TICKS


def test_many_stand_alone_runs_are_one_table_and_a_few_details(tmp_path, monkeypatch):
    """Beyond ``max_runs`` stand-alone runs the page does not grow a section per run: one
    section lists every run, the best ``max_runs`` are detailed, a diagnosis keeps its own,
    and the metric chart has one bar per run, labelled by its name (not by the combination
    of every setting in which unrelated runs differ)."""
    seen = _drawn_texts(monkeypatch)
    records = [dataclasses.replace(synthetic_record(f"solo{k:02d}", probes=False, sweep=None,
                                                    val_acc=0.5 + 0.01 * k), name=f"solo {k}")
               for k in range(9)]
    records.append(dataclasses.replace(synthetic_record("doc01", probes=False, sweep=None),
                                       kind="doctor", name="diagnosis"))
    text = write_report(_store(tmp_path, records), max_runs=3).read_text()
    assert re.findall(r'<h2 id="([^"]+)">', text) == ["runs", "doctor-doc01"]
    assert "9 stand-alone runs" in text
    table = re.search(r'<table class="sortable" id="runs-table-runs">(.*?)</table>', text, re.S)
    assert table and all(f"solo{k:02d}" in table.group(1) for k in range(9))
    detailed = re.findall(r'<details class="run" id="run-([^"]+)"', text)
    assert detailed == ["solo08", "solo07", "solo06", "doc01"]  # the best three, by val acc
    assert all(f"solo {k}" in seen for k in range(9)), seen


def test_long_category_labels_are_cut_so_the_axes_keep_their_size():
    # was: labels of 120 characters; matplotlib gave up its layout ("axes sizes collapsed")
    # and the labels ran off the figure
    runs = pd.DataFrame({"data.path": ["/data/experiments/2026/" + "x" * 90 + f"/set_{k}.npz"
                                       for k in range(3)],
                         "val_acc": [0.5, 0.6, 0.7], "status": ["finished"] * 3})
    fig = figures.sweep_bars(runs, "data.path")
    ticks = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert all(len(t) <= figures.MAX_TICK_CHARS and "…" in t for t in ticks), ticks
    assert len(set(ticks)) == 3, ticks  # cut in the middle: the three paths stay apart
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "constrained_layout not applied" is a UserWarning
        figures.figure_png(fig)


def test_markup_in_every_stored_string_stays_text(tmp_path):
    """Names, sweep names, config values, errors, divergence reports and a diagnosis's
    findings holding markup: the page has one script (its own), no event attribute and only
    its own embedded images."""
    from html.parser import HTMLParser

    x = '<img src=x onerror=alert(1)>"\'&'
    findings = {"summary": x, "findings": [
        {"kind": x, "severity": x, "layers": [1], "message": x, "evidence": {x: x},
         "prescription": {x: x}, "prescription_text": x}],
        "verifications": [{"kind": x, "before": {"train_loss": 1}, "after": {"train_loss": 0.5},
                           "metric": x, "helped": True}],
        "baseline": {"train_loss": 1.0}, "settings": {"optimizer": x, "steps": 3}}
    base = synthetic_record("m0", depth=2, sweep=x, probes=False)
    cfg = {**base.config, "data": {**base.config["data"], "path": x},
           "model": {**base.config["model"], "activation": x}}
    records = [dataclasses.replace(
        synthetic_record(f"m{k}", depth=2, sweep=x, probes=False), name=x + str(k),
        config={**cfg, "train": {**cfg["train"], "lr": 0.1 * (k + 1)}}) for k in range(2)]
    records += [
        dataclasses.replace(synthetic_record("md", sweep=None, status="diverged", probes=False),
                            name=x, divergence={"message": x, x: x, "step": 3}),
        dataclasses.replace(synthetic_record("mf", sweep=None, status="failed", probes=False),
                            name=x, error=x),
        dataclasses.replace(synthetic_record("mdoc", sweep=None, probes=False), kind="doctor",
                            name=x, findings=findings)]
    text = write_report(_store(tmp_path, records)).read_text()

    class Tags(HTMLParser):
        def __init__(self):
            super().__init__()
            self.scripts, self.bad = 0, []

        def handle_starttag(self, tag, attrs):
            self.scripts += tag == "script"
            self.bad += [(tag, k) for k, _ in attrs if k.startswith("on")]
            if tag == "img" and not dict(attrs).get("src", "").startswith("data:image/png"):
                self.bad.append((tag, attrs))

    tags = Tags()
    tags.feed(text)
    assert tags.scripts == 1 and not tags.bad, tags.bad
    assert text.count(html.escape(x, quote=True)) >= 10


def test_a_second_report_into_the_folder_replaces_the_first_ones_figures(tmp_path):
    """Figures the previous report wrote and this one does not draw are removed (after the new
    page is in place); a file the report did not write stays."""
    first = _store(tmp_path / "a", [dataclasses.replace(
        synthetic_record("alpha01", probes=False, sweep=None), name="alpha")])
    out = tmp_path / "out"
    store = Store(first)
    write_report(out, store)
    store.close()
    figs = out / "figures"
    assert {p.name for p in figs.glob("alpha_*.png")} == {"alpha_training.png"}
    (figs / "mine.png").write_bytes(b"not the report's")
    second = _store(tmp_path / "b", [dataclasses.replace(
        synthetic_record("beta01", probes=False, sweep=None), name="beta")])
    store = Store(second)
    text = write_report(out, store).read_text()
    store.close()
    assert "beta" in text and "alpha" not in text
    assert sorted(p.name for p in figs.glob("*.png")) == ["beta_training.png", "mine.png"]
    assert not [p for p in figs.iterdir() if p.name.endswith(".tmp")]


def test_every_element_id_of_the_page_is_unique(tmp_path):
    records = [dataclasses.replace(synthetic_record(f"solo{k}", probes=False, sweep=None),
                                   name=f"solo {k}") for k in range(2)]
    records += [synthetic_record(f"pt{k}", probes=False, sweep="s", lr=0.1 * (k + 1))
                for k in range(2)]
    text = write_report(_store(tmp_path, records)).read_text()
    ids = re.findall(r'\bid="([^"]+)"', text)
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    for href in re.findall(r'<a href="#([^"]+)"', text):  # every link has its target
        assert href in ids, href
