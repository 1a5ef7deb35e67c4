"""Comparing runs of any families: their metric curves and a table of final figures.

A run's final figures are its last evaluation record in metrics.jsonl (from training's end-of-
run evaluation or `genstudio eval`). Sample-quality figures from different feature extractors
are not comparable, so a table shows one extractor's figures only and says which runs it left
out. Each distinct data source adds a row for the per-pixel categorical baseline measured in the
same evaluation, so every family is read against the same floor.
"""

from __future__ import annotations

import csv
import io
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..runs.paths import runs_dir
from ..runs.run import RunDir, RunError, plotted_figures

COLUMNS = ["run", "family", "data", "step", "bpd", "bpd_se", "bpd_kind", "bpd_images", "extractor", "samples", "fid",
           "kid", "precision", "recall", "density", "coverage"]
FEATURE_FIGURES = ("fid", "kid", "precision", "recall", "density", "coverage")
BASELINE_FAMILY = "baseline (per-pixel)"


@dataclass(frozen=True)
class RunSummary:
    path: str
    name: str
    family: str
    data: str
    step: int
    curves: dict[str, tuple[list[int], list[float]]]
    final: dict[str, Any] = field(default_factory=dict)
    evaluations: list[dict[str, Any]] = field(default_factory=list)  # oldest first; final is the last


@dataclass(frozen=True)
class ComparisonTable:
    columns: list[str]
    rows: list[dict[str, Any]]
    extractor: str | None
    notes: list[str]


def list_runs(root: str | os.PathLike | None = None) -> list[Path]:
    """Run folders directly under root (default: the app's runs folder), newest first."""
    folder = Path(root) if root is not None else runs_dir()
    if not folder.is_dir():
        return []
    runs = [p for p in folder.iterdir() if RunDir(p).exists()]
    return sorted(runs, key=lambda p: RunDir(p).config_path.stat().st_mtime, reverse=True)


def summarize_run(path: str | os.PathLike) -> RunSummary:
    run = RunDir(path)
    config = run.read_config()  # RunError for a folder that is not a run
    records = run.read_metrics()
    curves: dict[str, tuple[list[int], list[float]]] = {}
    for record in records:
        step = int(record.get("step", 0))
        for key, value in plotted_figures(record).items():
            steps, values = curves.setdefault(key, ([], []))
            steps.append(step)
            values.append(value)
    evaluations = [r for r in records if _is_evaluation(r)]
    last_step = max((int(r.get("step", 0)) for r in records), default=0)
    return RunSummary(str(run.path), run.path.name, config.get("family", "?"),
                      config.get("dataset", {}).get("source", config.get("settings", {}).get("data", "?")),
                      last_step, curves, dict(evaluations[-1]) if evaluations else {}, evaluations)


def _is_evaluation(record: dict[str, Any]) -> bool:
    return "reference_images" in record


def compare_runs(paths: list[str | os.PathLike], extractor: str | None = None) -> ComparisonTable:
    summaries = [summarize_run(p) for p in paths]
    used = Counter(s.final.get("extractor") for s in summaries if s.final.get("extractor"))
    extractor = extractor or (used.most_common(1)[0][0] if used else None)
    rows, notes, baselines = [], [], {}
    for summary in summaries:
        row, dropped = _row(summary, extractor)
        rows.append(row)
        if dropped:
            notes.append(f"{summary.name}: its FID/KID/precision/recall were measured with "
                         f"{summary.final.get('extractor')} and are left out (this table: {extractor}).")
        if not summary.final:
            notes.append(f"{summary.name} has no evaluation yet: run `genstudio eval` on it.")
        notes += _smaller_than_before(summary)
        baseline = _baseline_row(summary, extractor)
        if baseline and summary.data not in baselines:
            baselines[summary.data] = baseline
    return ComparisonTable(list(COLUMNS), rows + list(baselines.values()), extractor, notes)


def _row(summary: RunSummary, extractor: str | None) -> tuple[dict[str, Any], bool]:
    final = summary.final
    row: dict[str, Any] = {"run": summary.name, "family": summary.family, "data": summary.data,
                           "step": final.get("step", summary.step)}
    if any(k.endswith("_bpd") and not k.startswith("baseline") for k in final):
        row["bpd_images"] = final.get("reference_images")
    if "eval_bpd" in final:
        row["bpd"], row["bpd_kind"] = final["eval_bpd"], final.get("bpd_kind", "")
        if "eval_bpd_se" in final:  # an estimate's standard error (Hutchinson's probes)
            row["bpd_se"] = final["eval_bpd_se"]
        estimates = [v for k, v in final.items() if k.endswith("_est_bpd")]
        if row["bpd_kind"] == "bound" and final["eval_bpd"] in estimates:
            # Written before evaluations named their quick estimates (e.g. the shipped
            # diffusion runs): the figure is one draw of an estimate of the bound.
            row["bpd_kind"] = "bound estimate"
    elif (bounds := [v for k, v in final.items() if k.endswith("_bpd") and not k.startswith("baseline")]):
        row["bpd"], row["bpd_kind"] = min(bounds), "bound"  # end-of-training record: ELBO/IWAE
    same_extractor = final.get("extractor") == extractor
    if same_extractor:
        row["extractor"] = extractor
        row["samples"] = final.get("samples")
        row.update({k: final[k] for k in FEATURE_FIGURES if k in final})
    dropped = bool(final.get("extractor")) and not same_extractor
    return row, dropped


def _smaller_than_before(summary: RunSummary) -> list[str]:
    """Notes for a final evaluation made on fewer images than an earlier one of the same run:
    its figures are the ones shown, and a reader must see that they are the noisier ones."""
    final, notes = summary.final, []
    for count_key, figure, what in (("reference_images", "eval_bpd", "held-out images"),
                                    ("samples", "fid", "samples")):
        if figure not in final or count_key not in final:
            continue
        before = max((r[count_key] for r in summary.evaluations[:-1] if figure in r and count_key in r), default=0)
        if before > final[count_key]:
            name = "bits/dim" if figure == "eval_bpd" else "FID and the other sample figures"
            notes.append(f"{summary.name}: its {name} are from the last evaluation, on {final[count_key]:,} "
                         f"{what}; an earlier one used {before:,}.")
    return notes


def _baseline_row(summary: RunSummary, extractor: str | None) -> dict[str, Any] | None:
    final = summary.final
    if "baseline_bpd" not in final:
        return None
    row: dict[str, Any] = {"run": "—", "family": BASELINE_FAMILY, "data": summary.data,
                           "bpd": final["baseline_bpd"], "bpd_kind": "exact"}
    if final.get("extractor") == extractor:
        features = {k: final[f"baseline_{k}"] for k in FEATURE_FIGURES if f"baseline_{k}" in final}
        if features:
            row.update(extractor=extractor, **features)
    return row


def table_to_csv(table: ComparisonTable) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=table.columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in table.rows:
        writer.writerow({k: row.get(k, "") for k in table.columns})
    return out.getvalue()


__all__ = ["BASELINE_FAMILY", "COLUMNS", "ComparisonTable", "RunError", "RunSummary", "compare_runs",
           "list_runs", "summarize_run", "table_to_csv"]
