"""Tables, `results.json` and plots of a results table, for the experiments and the CLI
(the protocols and the evaluation loop return numbers and draw nothing).

    result = kitti.run(KittiConfig(kitti_root="kitti_data", weights="ckpt/M"))
    write_results("runs/kitti", result.rows, result.curves, result.config, result.title)

`results.json` is `{"config": {...}, "rows": [...]}` with the rows in the layout of
`jaxdepth.evaluation.Evaluator.rows` (`model`, `method`, `abs_rel` / `rmse` / `a1`:
`{"ause", "aurg"}`, `ms_per_image`, `depth`: {...}, optionally `paper`: the published
numbers of the row).
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from jaxdepth.evaluation import format_table

__all__ = ["SPARSE_METRICS", "paper_table", "write_results"]

#: the metrics of the sparsification plots (`sparsification_<metric>.png`)
SPARSE_METRICS = ("abs_rel", "rmse", "a1")


def paper_table(rows: Sequence[dict]) -> str | None:
    """The table of the published numbers of the rows that carry `paper` (None if none
    does); the depth columns are blank (the papers' uncertainty tables have none)."""
    paper = [r for r in rows if "paper" in r]
    if not paper:
        return None
    nan = float("nan")
    return format_table([{**r, **r["paper"], "depth": {"abs_rel": nan, "rmse": nan, "a1": nan}}
                         for r in paper])


def write_results(out, rows: Sequence[dict], curves: Mapping, config: Mapping, title: str,
                  paper: bool = True, note: str | None = None, extra: Mapping | None = None,
                  tables: Sequence[str] = ()) -> Path:
    """Print the table (`jaxdepth.evaluation.format_table`, `note` on a line below it),
    the further `tables` (already formatted) and, with `paper`, the "published (paper)"
    table of the rows that carry `paper`; write `out/table.txt` (the measured tables),
    `out/results.json` (`{"config", "rows"}` and the keys of `extra`)
    and `out/sparsification_<metric>.png` for abs_rel, rmse and a1
    (`jaxdepth.viz.plot_sparsification` of `curves`, `{"Model: Method": {metric: {"x",
    "method", "oracle"}}}`). Returns `out`."""
    from jaxdepth import viz

    out = Path(out)
    table = format_table(rows, title)
    if note:
        table += "\n" + note
    for more in tables:
        table += "\n\n" + more
    print(table)
    published = paper_table(rows) if paper else None
    if published:
        print("published (paper):")
        print(published)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.txt").write_text(table + "\n")
    with open(out / "results.json", "w") as f:
        json.dump({"config": dict(config), "rows": list(rows), **dict(extra or {})}, f,
                  indent=2, default=str)
    for metric in SPARSE_METRICS:
        viz.plot_sparsification(out / f"sparsification_{metric}.png",
                                {k: v[metric] for k, v in curves.items()}, metric)
    return out
