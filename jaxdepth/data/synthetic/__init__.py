"""Procedural street scenes: KITTI-like images with exact depth, labels, stereo and motion.

Every sample is a pure function of ``(seed, split, index, options)``, rendered by ray
casting analytic primitives in JAX (jit-compiled, batched):

- a road plane (``y = camera_height`` in camera coordinates: x right, y down, z forward)
  with dashed centre line, edge lines, tyre tracks and optional parking strips; kerbs;
  raised sidewalks with paving slabs;
- building facades (axis-aligned boxes with floors, windows, shop fronts, stone blocks,
  cornices) at varying setbacks, with gaps;
- cars (body box + cabin box) with windows, painted wheels, lights and number plates,
  parked and in both lanes; poles (vertical cylinders); trees (trunk cylinder + ellipsoid
  crown); sky (gradient + clouds on a plane at infinity) beyond the depth cap;
- with ``anomalies=True`` (default only for split ``"ood"``): objects no training class
  has, on the road (a checker/zebra/dotted box, a sphere, an animal-like pair of
  ellipsoids, a cone) in neon colours, labelled ``ANOMALY``.

Textures are analytic functions of the hit point in the primitive's own frame, antialiased
by the pixel footprint (:mod:`.materials`); shading is Lambertian with cast sun shadows and
ambient occlusion under cars (:mod:`.raycast`). Nothing depends on the viewing direction
except the footprint-based antialiasing (which only fades sub-pixel detail), so the same
surface point has the same colour in every view: warping with the true depth and pose
reproduces the image. Images are quantised to 10 bits per channel; depth is exact up to a
relative 8e-6 (the low 6 mantissa bits carry the primitive id). Kerb faces are labelled
``SIDEWALK`` and tree trunks ``VEGETATION`` (as in Cityscapes).

Speed: one compiled render program per (resolution, anomalies, max_depth, baseline,
camera_height); on CPU every view is its own asynchronously dispatched call so that the
views of a batch spread over the cores (``experiments/bench_synthetic.py`` measures it).

Geometry and conventions: pixel centres at integer coordinates (see
:mod:`jaxdepth.geometry`); ``K`` is KITTI's normalised ``[[0.58, 0, 0.5], [0, 1.92,
0.5]]`` scaled by ``(width, height)``; depth is the z coordinate of the first hit, 0 (and
label ``SKY``) where nothing lies within ``max_depth``. ``poses[k]`` maps points from
camera 0 into camera ``k`` (``X_k = poses[k] @ [X_0, 1]``); the right camera is camera 0
moved by ``+baseline`` along its x axis (``stereo_T`` = identity with ``t_x = -baseline``).
The camera has no pitch or roll, so a road pixel in row ``v`` has depth
``camera_height · f_y / (v - c_y)`` exactly.

Modules, one concept each:

- :mod:`.layout`: constants, options and configuration, the random scene description
  and the cameras of every view;
- :mod:`.materials`: material ids, palettes, noise and tiles, and the albedo of every
  material;
- :mod:`.raycast`: intersection of each primitive family, surfaces, lighting and
  compositing of one view; the render program;
- :mod:`.source`: :func:`sample_batch`, :func:`sample`, :func:`scene_description`,
  :class:`SyntheticSource` and the compiled-program cache;
- :mod:`.preview`: the preview command.

Public API: :func:`sample`, :func:`sample_batch`, :func:`scene_description`,
:class:`SyntheticSource`, :data:`CLASSES` (and ``ROAD = 0`` … ``ANOMALY = 7``).
``python -m jaxdepth.data.synthetic --preview out.png`` saves a grid of samples.
"""
from __future__ import annotations

from .layout import (ANOMALY, BUILDING, CAR, CLASS_COLORS, CLASSES, K_NORM, OPTIONS,
                     OUTPUT_KEYS, POLE, ROAD, SIDEWALK, SKY, SPLITS, VEGETATION, intrinsics)
from .materials import (M_ANOMALY, M_BUILDING, M_CABIN, M_CAR, M_CROWN, M_KERB,  # noqa: F401
                        M_POLE, M_ROAD, M_SIDEWALK, M_SKY, M_TRUNK)
from .preview import _main, _preview  # noqa: F401
from .source import SyntheticSource, sample, sample_batch, scene_description

__all__ = ["CLASSES", "CLASS_COLORS", "ROAD", "SIDEWALK", "BUILDING", "CAR", "POLE",
           "VEGETATION", "SKY", "ANOMALY", "SPLITS", "OPTIONS", "OUTPUT_KEYS", "K_NORM",
           "intrinsics", "sample", "sample_batch", "scene_description", "SyntheticSource"]
