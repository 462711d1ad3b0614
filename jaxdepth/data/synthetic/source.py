"""The data source: samples, batches, scene descriptions, and the compiled-program cache.

:func:`sample_batch` renders a batch with two jit-compiled programs: the render program
(:func:`.raycast._render_program`, all views of all samples) and :func:`_finish` (unpacks
the images and builds the output dict). :func:`sample` is one sample of it;
:class:`SyntheticSource` is the random-access data source the trainers and experiments
use; :func:`scene_description` returns a scene's primitives (for tests and debugging).

Speed: one compiled render program per (resolution, anomalies, max_depth, baseline,
camera_height): the split and ``moving_objects`` are traced inputs and the selected keys
only choose which views are rendered (see :func:`_canonical`). On CPU every view is its
own asynchronously dispatched call so that the views of a batch spread over the cores
(:func:`_chunk_size`; ``experiments/bench_synthetic.py`` measures it).
"""
from __future__ import annotations

import dataclasses
import functools
import operator

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from .layout import (_LABEL_OF_MAT, _SPLIT_CODE, ANOMALY, OUTPUT_KEYS, _camera, _config,
                     _Config, _make_scene, _sample_key, _view_ids, intrinsics)
from .raycast import _render_program, _unpack


# ----------------------------------------------------------------------------- programs
def _finish(chunks, K, cfg: _Config, batch: int):
    """Program 2 of 2: join the rendered views, unpack the images, build the output dict."""
    packed, depth, label, moving, pose = (jnp.concatenate(x) for x in zip(*chunks))
    B, ids = batch, _view_ids(cfg)
    V = len(ids)
    packed, depth, label, moving, pose = (x[:B * V].reshape((B, V) + x.shape[1:])
                                          for x in (packed, depth, label, moving, pose))
    rgb = _unpack(packed)
    depth = depth[..., None]
    out = {"image": rgb[:, 0], "depth": depth[:, 0], "labels": label[:, 0],
           "anomaly": label[:, 0] == ANOMALY, "moving": moving[:, 0],
           "K": jnp.broadcast_to(K, (B, 3, 3))}
    if "stereo" in cfg.groups:
        i = ids.index(1)
        T = jnp.eye(4, dtype=jnp.float32).at[0, 3].set(-cfg.baseline)
        out.update(image_right=rgb[:, i], depth_right=depth[:, i],
                   baseline=jnp.full((B,), cfg.baseline, jnp.float32),
                   stereo_T=jnp.broadcast_to(T, (B, 4, 4)))
    if "temporal" in cfg.groups:
        out["frames"] = {k: rgb[:, ids.index(v)] for k, v in ((-1, 2), (1, 3))}
        out["frames_depth"] = {k: depth[:, ids.index(v)] for k, v in ((-1, 2), (1, 3))}
        out["poses"] = {k: pose[:, ids.index(v)] for k, v in ((-1, 2), (1, 3))}
    return {k: v for k, v in out.items() if k in cfg.keys}


@functools.lru_cache(maxsize=16)
def _ones(*shape):
    return jnp.ones(shape, jnp.float32)


def _chunk_size(n_views: int) -> int:
    """Views per render call. XLA:CPU runs each fusion on a single thread but executes
    separately dispatched programs concurrently, so on CPU every view is its own call (one
    compiled program per config, whatever the batch size; the calls spread over the
    cores). Accelerators get all views in one call."""
    return 1 if jax.default_backend() == "cpu" else n_views


def _canonical(cfg: _Config, **changes) -> _Config:
    """The config with what the programs take as traced inputs (split, moving_objects)
    set to fixed values, so that configs differing only in those share compiled programs."""
    return dataclasses.replace(cfg, split="train", moving_objects=False, **changes)


@functools.lru_cache(maxsize=32)
def _finish_fn(cfg: _Config):
    return jax.jit(functools.partial(_finish, cfg=cfg), static_argnames="batch")


@functools.lru_cache(maxsize=32)
def _render_fn(cfg: _Config):
    """(jitted render program, rays, n_scene) for a config whose split, moving_objects and
    keys are canonical: those are traced (or only select views), so train/val/test and
    moving on/off share one compiled program."""
    K = intrinsics(cfg.height, cfg.width)
    v, u = np.meshgrid(np.arange(cfg.height, dtype=np.float32),
                       np.arange(cfg.width, dtype=np.float32), indexing="ij")
    with jax.ensure_compile_time_eval():  # a concrete array, even if first called in a trace
        rays = jnp.asarray(np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1]]))
    n_scene = jax.eval_shape(lambda: ravel_pytree(_make_scene_and_camera(cfg))[0]).shape[0]
    return jax.jit(functools.partial(_render_program, cfg=cfg)), rays, n_scene


@functools.lru_cache(maxsize=64)
def _compiled(cfg: _Config):
    """``run(indices uint32 [B], seed uint32) -> dict`` for one config (see the performance
    notes in :mod:`.raycast` for why rendering is split into programs)."""
    render, rays, n_scene = _render_fn(_canonical(cfg, keys=OUTPUT_KEYS))
    finish = _finish_fn(_canonical(cfg))
    Kj = jnp.asarray(intrinsics(cfg.height, cfg.width))
    ids = np.array(_view_ids(cfg), np.int32)
    split_code = jnp.uint32(_SPLIT_CODE[cfg.split])
    moving = jnp.bool_(cfg.moving_objects)

    def run(indices, seed):
        B = int(indices.shape[0])
        n = B * len(ids)
        c = _chunk_size(n)
        pad = -n % c
        idx = np.concatenate([np.repeat(np.asarray(indices, np.uint32), len(ids)),
                              np.zeros(pad, np.uint32)])
        vid = np.concatenate([np.tile(ids, B), np.zeros(pad, np.int32)])
        ones_s, ones_px = _ones(c, n_scene), _ones(c, cfg.height, cfg.width)
        outs = [render(idx[i:i + c], vid[i:i + c], seed, split_code, moving, ones_s, ones_px,
                       rays) for i in range(0, n + pad, c)]  # dispatched asynchronously
        return finish(outs, Kj, batch=B)

    return run


def _traced_batch(cfg: _Config, indices, seed):
    """sample_batch inside a caller's trace: the same programs, inlined."""
    indices = jnp.asarray(indices)
    if indices.ndim != 1:
        raise ValueError(f"indices must be a 1-D integer array, got shape {indices.shape}")
    render, rays, n_scene = _render_fn(_canonical(cfg, keys=OUTPUT_KEYS))
    ids = jnp.asarray(_view_ids(cfg), jnp.int32)
    B, V = indices.shape[0], ids.shape[0]
    out = render(jnp.repeat(indices.astype(jnp.uint32), V), jnp.tile(ids, B),
                 jnp.asarray(seed).astype(jnp.uint32), jnp.uint32(_SPLIT_CODE[cfg.split]),
                 jnp.bool_(cfg.moving_objects), jnp.ones((B * V, n_scene), jnp.float32),
                 jnp.ones((B * V, cfg.height, cfg.width), jnp.float32), rays)
    return _finish([out], jnp.asarray(intrinsics(cfg.height, cfg.width)), cfg, batch=B)


def _make_scene_and_camera(cfg: _Config):
    S = _make_scene(_sample_key(jnp.uint32(0), jnp.uint32(0), jnp.uint32(0)), cfg)
    return S, _camera(S, jnp.int32(0), cfg)


def _check_seed(seed):
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be an integer in [0, 2**32), got {seed!r}")
    return np.uint32(seed)


def _check_indices(indices):
    idx = np.asarray(indices)
    if idx.ndim != 1 or not (np.issubdtype(idx.dtype, np.integer) or idx.size == 0):
        raise ValueError(f"indices must be a 1-D integer array, got shape {idx.shape} "
                         f"dtype {idx.dtype}")
    if idx.size and (idx.min() < 0 or idx.max() >= 2**31):
        raise ValueError(f"indices must lie in [0, 2**31), got min {idx.min()} max {idx.max()}")
    return idx.astype(np.uint32)


# ----------------------------------------------------------------------------- API
def sample_batch(indices, *, seed: int = 0, height: int = 96, width: int = 320,
                 split: str = "train", keys=None, **options) -> dict:
    """Render the samples ``indices`` (1-D ints) with jit-compiled, batched programs.

    Returns a dict of JAX arrays with a leading batch axis ``B = len(indices)``; the keys
    and per-sample shapes are those of :func:`sample` (``baseline`` is ``[B]``). ``keys``
    (default: all of :data:`OUTPUT_KEYS`) selects outputs; the stereo view and the
    neighbour frames are rendered only if one of their keys is selected. Sample ``i`` of
    the result equals ``sample(indices[i], ...)`` bit for bit (when called eagerly).

    Called eagerly (the usual case) it compiles one render program per resolution and
    anomaly setting, whatever the batch size, split or ``moving_objects``. It can also be
    traced inside ``jax.jit`` (``indices`` and ``seed`` may then be traced arrays), e.g. to
    generate data on an accelerator within a training step: the same scenes, equal up to
    float rounding (XLA optimises the inlined programs differently); on CPU the eager call
    is faster (see the performance notes in :mod:`.raycast`).
    """
    cfg = _config(height, width, split, keys, options)
    if isinstance(indices, jax.core.Tracer) or isinstance(seed, jax.core.Tracer):
        return _traced_batch(cfg, indices, seed)
    idx = _check_indices(indices)
    return _compiled(cfg)(idx, jnp.uint32(_check_seed(seed)))


def sample(index: int, *, seed: int = 0, height: int = 96, width: int = 320,
           split: str = "train", keys=None, **options) -> dict:
    """One procedural street scene: a pure, deterministic function of its arguments.

    Keys (NumPy arrays; ``H = height``, ``W = width``):

    - ``image`` ``[H,W,3]`` float32 in [0, 1]; ``depth`` ``[H,W,1]`` float32 metres (z of
      the first hit; 0 where nothing lies within ``max_depth``: sky);
    - ``labels`` ``[H,W]`` int32 indices into :data:`CLASSES`; ``anomaly`` ``[H,W]`` bool
      (``labels == ANOMALY``); ``moving`` ``[H,W]`` bool (cars with their own motion);
    - ``K`` ``[3,3]`` float32 pixel intrinsics (:func:`intrinsics`);
    - ``image_right`` ``[H,W,3]``, ``depth_right`` ``[H,W,1]``: the right camera (camera 0
      moved ``+baseline`` along x); ``baseline`` float32 scalar (metres); ``stereo_T``
      ``[4,4]``: camera 0 -> right camera (identity, ``t_x = -baseline``);
    - ``frames`` ``{-1: [H,W,3], 1: [H,W,3]}`` previous / next frame, ``frames_depth``
      ``{-1: [H,W,1], 1: [H,W,1]}`` their depths, ``poses`` ``{-1: [4,4], 1: [4,4]}``
      float32 transforms of 3-D points from camera 0 into camera ±1.

    Images are quantised to 10 bits per channel (multiples of 1/1023). ``keys`` selects
    outputs (see :func:`sample_batch`).

    Options (see :data:`OPTIONS`): ``moving_objects`` (cars move between frames),
    ``anomalies`` (default: ``split == "ood"``), ``max_depth`` (80 m), ``baseline``
    (0.54 m), ``camera_height`` (1.65 m). Splits ``train``/``val``/``test``/``ood`` draw
    from disjoint random streams.
    """
    if np.ndim(index) != 0:
        raise ValueError(f"index must be a scalar integer, got shape {np.shape(index)}")
    out = sample_batch(np.array([index]), seed=seed, height=height, width=width, split=split,
                       keys=keys, **options)
    return jax.tree.map(lambda x: np.asarray(x[0]), out)


@functools.lru_cache(maxsize=16)
def _scene_fn(cfg: _Config):
    return jax.jit(lambda i, s, code, moving: _make_scene(_sample_key(s, code, i), cfg, moving))


def scene_description(index: int, *, seed: int = 0, split: str = "train", **options) -> dict:
    """The primitives of a sample's scene at frame 0 (NumPy; for tests and debugging).

    World = camera 0's frame rotated by ``-yaw0`` about y (so the road runs along +z);
    camera 0 sits at the origin. Keys: ``box_lo``/``box_hi`` ``[Nb,3]`` and ``box_vz``
    ``[Nb]`` (z velocity, m/frame), ``box_label`` ``[Nb]``; ``cylinders`` ``[Nc,5]``
    ``(x, z, radius, y_top, y_bottom)`` and ``cylinder_label``; ``ellipsoids`` ``[Ne,6]``
    ``(centre, radii)`` and ``ellipsoid_label``; ``cones`` ``[Nk,5]`` ``(x, z, radius,
    y_apex, y_base)``; ``kerbs`` ``(x_left, x_right)``; ``sidewalk_y``; ``road_y``;
    ``yaw0`` (radians, camera 0's yaw: ``X_world = R_y(yaw0) X_cam``).
    """
    cfg = _config(1, 1, split, None, options)
    idx = int(_check_indices([index])[0])
    S = _scene_fn(_canonical(cfg))(jnp.uint32(idx), jnp.uint32(_check_seed(seed)),
                                   jnp.uint32(_SPLIT_CODE[split]), jnp.bool_(cfg.moving_objects))
    S = jax.tree.map(np.asarray, S)
    labels = np.concatenate([np.full(n, _LABEL_OF_MAT[mt]) for *_, n, mt in cfg.layout])
    nb, nc = cfg.count("box"), cfg.count("cyl")
    ne = cfg.count("ell")
    return {"box_lo": S["box_lo"], "box_hi": S["box_hi"], "box_vz": S["box_vz"],
            "box_label": labels[:nb], "cylinders": S["cyl"], "cylinder_label": labels[nb:nb + nc],
            "ellipsoids": S["ell"], "ellipsoid_label": labels[nb + nc:nb + nc + ne],
            "cones": S["cone"], "kerbs": S["band"][:2], "sidewalk_y": S["band"][2],
            "road_y": np.float32(cfg.camera_height), "yaw0": S["yaw0"]}


# ----------------------------------------------------------------------------- source
class SyntheticSource:
    """Random-access data source of procedural scenes (the project's source protocol).

    ``len(src)``; ``src[i]`` -> dict of NumPy arrays (one sample, keys as :func:`sample`,
    restricted to ``keys``); ``src.get_batch(indices)`` -> the same, stacked, rendered
    in one jit-compiled call. ``length`` defaults to :attr:`DEFAULT_LENGTH` of the split.
    Sample ``i`` is ``sample(i, seed=seed, split=split, ...)``.
    """

    DEFAULT_LENGTH = {"train": 20000, "val": 1000, "test": 1000, "ood": 1000}

    def __init__(self, split: str = "train", *, seed: int = 0, height: int = 96,
                 width: int = 320, length: int | None = None, keys=None, **options):
        self.cfg = _config(height, width, split, keys, options)
        self.split, self.seed = split, int(_check_seed(seed))
        self.height, self.width, self.options = int(height), int(width), dict(options)
        self.keys = self.cfg.keys
        length = self.DEFAULT_LENGTH[split] if length is None else length
        if not isinstance(length, (int, np.integer)) or isinstance(length, bool) or length <= 0:
            raise ValueError(f"length must be a positive integer, got {length!r}")
        self.length = int(length)

    def __len__(self) -> int:
        return self.length

    def __repr__(self) -> str:
        return (f"SyntheticSource(split={self.split!r}, seed={self.seed}, height={self.height}, "
                f"width={self.width}, length={self.length}, keys={list(self.keys)}, "
                f"options={self.options})")

    def _render(self, indices: np.ndarray) -> dict:
        out = _compiled(self.cfg)(indices.astype(np.uint32), jnp.uint32(self.seed))
        return jax.tree.map(np.asarray, out)

    def __getitem__(self, i) -> dict:
        if not isinstance(i, (int, np.integer)) or isinstance(i, bool):
            raise TypeError(f"index must be an integer, got {type(i).__name__}")
        j = int(i) + self.length if i < 0 else int(i)
        if not 0 <= j < self.length:
            raise IndexError(f"index {i} out of range for {self.length} samples")
        return jax.tree.map(operator.itemgetter(0), self._render(np.array([j])))

    def get_batch(self, indices) -> dict:
        idx = np.asarray(indices)
        if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
            raise ValueError(f"indices must be a 1-D integer array, got shape {idx.shape} "
                             f"dtype {idx.dtype}")
        if idx.size and (idx.min() < 0 or idx.max() >= self.length):
            raise IndexError(f"indices must lie in [0, {self.length}), got "
                             f"[{idx.min()}, {idx.max()}]")
        return self._render(idx)
