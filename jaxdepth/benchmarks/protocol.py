"""What the KITTI and NYU protocols share: finding and loading the checkpoints of a
table, building its rows (models × methods) from the method table
(`jaxdepth.uncertainty.methods`), the published numbers in the `results.json` layout,
and the `ProtocolResult` they return.

    weights = resolve_weights("ckpt/M", names=("post", "log"))   # {model: checkpoint dir}
    models = {k: load_model(p) for k, p in weights.items()}      # (model, variables, meta)
    rows = build_rows(models, {"post": ("Base", "Grad"), "log": ("Base",)}, MethodOptions(),
                      labels={"post": "Post", "log": "Log"}, space="disp")
    evaluate(rows, source, batch_size=1, add=per_image(lambda row, est, sample, i: ...))

A protocol returns a `ProtocolResult` and prints nothing but progress lines; the tables
and plots are drawn by the caller (`jaxdepth.report.write_results`).
"""
from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Mapping
from pathlib import Path

from jaxdepth.benchmarks.reference import reference_var
from jaxdepth.evaluation import Row
from jaxdepth.uncertainty.maps import Estimate
from jaxdepth.uncertainty.methods import MethodOptions, ModelInfo, for_model, method

__all__ = ["ProtocolResult", "BASE_METHOD", "COLUMN_METHOD", "paper_row", "attach_paper",
           "load_model", "is_model_dir", "model_kind", "resolve_weights", "model_rows",
           "build_rows", "per_image", "input_size", "describe_models", "jsonable"]

#: the method-table name of each model's Base row (its own uncertainty)
BASE_METHOD = {"drop": "mc_drop", "boot": "ensemble", "post": "post", "log": "predictive",
               "self": "predictive"}
#: the method-table name of the other columns
COLUMN_METHOD = {"Var": "var", "In-Drop": "in_drop", "Grad": "grad"}
_PAPER_METRICS = ("abs_rel", "rmse", "a1")


@dataclasses.dataclass
class ProtocolResult:
    """What a protocol's `run` returns.

    `rows`: one dict per (model, method) in the `results.json` row layout of
    `jaxdepth.evaluation.Evaluator.rows` (`model`, `method`, `abs_rel`/`rmse`/`a1`:
    `{"ause", "aurg"}`, `ms_per_image`, `depth`: {...}, and `paper`: the published
    numbers where the paper has the row); `curves`: `{"Model: Method": {metric: {"x",
    "method", "oracle"}}}` mean sparsification curves (for `viz.plot_sparsification`);
    `config`: what was run (JSON-ready, `results.json`'s `config`); `title`: the table's
    title."""
    rows: list
    curves: dict
    config: dict
    title: str


def paper_row(values) -> dict:
    """`(a_ause, a_aurg, r_ause, r_aurg, d_ause, d_aurg, ms)` -> the results.json layout."""
    out = {m: {"ause": values[2 * i], "aurg": values[2 * i + 1]}
           for i, m in enumerate(_PAPER_METRICS)}
    out["ms_per_image"] = values[6]
    return out


def attach_paper(rows: list[dict], paper: Mapping) -> list[dict]:
    """Add `row["paper"]` to every row whose `(model, method)` is in `paper`."""
    for r in rows:
        if (r["model"], r["method"]) in paper:
            r["paper"] = paper_row(paper[(r["model"], r["method"])])
    return rows


# ----------------------------------------------------------------------------- models

_MODULES: dict = {}


@functools.cache
def _load_cached(path: str, stamp):
    from jaxdepth.export import load_checkpoint

    model, variables, meta = load_checkpoint(path)
    # one module instance per architecture: jit caches key on `model.apply`, so models
    # of one architecture (Post and Drop, Log and Self) share their compiled functions
    model = _MODULES.setdefault(json.dumps(meta["model"], sort_keys=True), model)
    return model, variables, meta


def load_model(path):
    """`(model, variables, meta)` of a checkpoint or run directory
    (`jaxdepth.export.load_checkpoint`), cached per path and `meta.json` time stamp."""
    p = Path(path).resolve()
    meta = p / "meta.json"
    return _load_cached(str(p), meta.stat().st_mtime_ns if meta.is_file() else None)


def is_model_dir(p) -> bool:
    """A jaxdepth checkpoint (`meta.json`) or a trainer's run directory (orbax steps)."""
    p = Path(p)
    if (p / "meta.json").is_file():
        return True
    return p.is_dir() and any(c.is_dir() and c.name.isdigit() and (c / "state").is_dir()
                              for c in p.iterdir())


def model_kind(meta) -> str:
    """`boot` for an ensemble, `log` for log σ heads, `drop` for a model trained with
    dropout, `post` otherwise."""
    if meta.get("ensemble"):
        return "boot"
    if meta["model"].get("log_sigma"):
        return "log"
    return "drop" if meta.get("dropout_trained") else "post"


def resolve_weights(weights, models=None, *, names) -> dict[str, Path]:
    """`{model: checkpoint dir}` in the order of `names` from `weights`: a `{model: dir}`
    mapping, one checkpoint (its kind: the folder name if it is one of `names`, else the
    one model of `models`, else `model_kind`), or a folder with one subfolder per model
    (`post/`, `log/`, …; missing ones are skipped). `models` picks a subset and insists
    on it."""
    names = tuple(names)
    wanted = list(models) if models else None
    for m in wanted or []:
        if m not in names:
            raise ValueError(f"unknown model {m!r}; expected some of {names}")
    if weights is None:
        raise ValueError("--weights is required: a converted checkpoint or a folder with "
                         f"{'/ '.join(names)}/ checkpoints")
    if isinstance(weights, Mapping):
        found = {}
        for name, path in weights.items():
            if name not in names:
                raise ValueError(f"unknown model {name!r} in weights; expected some of {names}")
            if not Path(path).exists():
                raise FileNotFoundError(f"weights[{name!r}] = {path} does not exist")
            found[name] = Path(path)
        if wanted:
            missing = [m for m in wanted if m not in found]
            if missing:
                raise FileNotFoundError(f"weights has no checkpoint for {missing}")
        return {m: found[m] for m in names if m in found and (not wanted or m in wanted)}
    p = Path(weights)
    if not p.exists():
        raise FileNotFoundError(f"--weights {p} does not exist")
    if is_model_dir(p):
        if p.name.lower() in names:
            kind = p.name.lower()
        elif wanted and len(wanted) == 1:
            kind = wanted[0]
        elif wanted:
            raise ValueError(f"{p} is one checkpoint; --models must name one kind, got {wanted}")
        else:
            kind = model_kind(load_model(p)[2])
            if kind not in names:
                raise ValueError(f"{p} looks like a {kind!r} model, which this table does not "
                                 f"have ({names}); name it with --models")
        if wanted and kind not in wanted:
            raise ValueError(f"{p} is a {kind!r} checkpoint but --models asks for {wanted}")
        return {kind: p}
    found = {}
    for name in names:
        for cand in (p / name, p / name.capitalize(), p / name.upper()):
            if cand.is_dir() and is_model_dir(cand):
                found[name] = cand
                break
    if wanted:
        missing = [m for m in wanted if m not in found]
        if missing:
            raise FileNotFoundError(f"--weights {p} has no checkpoint for {missing} (expected "
                                    f"{', '.join(str(p / m) for m in missing)})")
        found = {m: found[m] for m in names if m in wanted}
    if not found:
        raise FileNotFoundError(
            f"--weights {p} is neither a jaxdepth checkpoint nor a folder with checkpoints "
            f"named {', '.join(n + '/' for n in names)} (convert the released weights with "
            "`jaxdepth convert monodepth2 --folder ... --out WEIGHTS/<model>`)")
    return found


def input_size(models: Mapping) -> tuple[int, int]:
    """The one input size `(height, width)` stored in every loaded checkpoint."""
    sizes = {(int(m[2]["height"]), int(m[2]["width"])) for m in models.values()}
    if len(sizes) != 1:
        raise ValueError(f"the models were trained at different input sizes {sorted(sizes)}; "
                         "evaluate them in separate runs (--models)")
    return sizes.pop()


def jsonable(x):
    """A config as `results.json` stores it: paths as strings, tuples as lists."""
    if isinstance(x, Mapping):
        return {k: jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    return str(x) if isinstance(x, Path) else x


def describe_models(weights: Mapping, models: Mapping, *keys: str) -> dict:
    """`{model: {"path", <meta keys>...}}` for a result's config."""
    return {k: {"path": str(weights[k]), **{key: m[2].get(key) for key in keys}}
            for k, m in models.items()}


# ----------------------------------------------------------------------------- rows

def model_rows(name: str, model, variables, meta, columns, opts: MethodOptions, *,
               space: str | None = None, var_fill: float | None = None) -> dict:
    """`{column: (fn(images, key) -> Estimate, normalize)}` of one model of kind `name`:
    `Base` is the model's own uncertainty (`BASE_METHOD`), `Var` / `In-Drop` / `Grad`
    come from the method table. `opts.variance_weight` (λ of Grad) applies to models with
    log σ heads; the others get λ = 0. `space` (default `opts.space`, else the table's
    choice) is where Post / Var / In-Drop / Drop / Boot take their spreads. `var_fill`:
    Var as the reference computes it (`reference.reference_var`, rotated-out pixels
    filled with this value) instead of `jaxdepth.uncertainty.var`. `normalize`: whether
    the reference min-max normalises the map before storing it (the Base rows of every
    model but Post; the other methods come normalised)."""
    info = ModelInfo.of(model, variables, meta)
    opts = for_model(opts, model)
    if opts.variance_weight is not None and not info.log_sigma:
        opts = dataclasses.replace(opts, variance_weight=0.0)
    space = space or opts.space or ("depth" if info.metric else "disp")
    opts = dataclasses.replace(opts, space=space)
    fill = None if var_fill is None else float(var_fill)
    out = {}
    for column in columns:
        key = BASE_METHOD[name] if column == "Base" else COLUMN_METHOD[column]
        if key == "var" and fill is not None:
            def fn(x, k):
                return reference_var(model.apply, variables, x, rng=k, space=space, fill=fill,
                                     rot_angle=opts.rot_angle, noise_std=opts.noise_std)
        else:
            fn = method(key, model.apply, variables, opts, info=info)
        out[column] = (fn, column == "Base" and key != "post")
    return out


def build_rows(models: Mapping, columns: Mapping, opts: MethodOptions, *, labels: Mapping,
               order=None, space: str | None = None, var_fill: float | None = None) -> list[Row]:
    """The `jaxdepth.evaluation.Row`s of a table for the loaded `{name: (model, variables,
    meta)}`, in `order` (default: the order of `columns`), with `columns[name]` the table's
    columns of that model (`Base`, `Var`, `In-Drop`, `Grad`) and `labels[name]` its row
    label; `Row.name` is the model's key. See `model_rows` for `opts`, `space`, `var_fill`."""
    rows = []
    for name in order or columns:
        if name not in models:
            continue
        model, variables, meta = models[name]
        fns = model_rows(name, model, variables, meta, columns[name], opts, space=space,
                         var_fill=var_fill)
        for column in columns[name]:
            fn, normalize = fns[column]
            rows.append(Row(labels[name], column, fn, name=name, normalize=normalize))
    return rows


def per_image(add):
    """Adapt `add(row, estimate [1,h,w,1], sample, index)` (one image) to the batch
    callback of `jaxdepth.evaluation.evaluate`."""
    def batch_add(row, est, samples, indices):
        for j, i in enumerate(indices):
            add(row, Estimate(est.depth[j:j + 1], est.uncertainty[j:j + 1]), samples[j], i)
    return batch_add
