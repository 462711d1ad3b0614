"""TFDS ``kitti_eigen`` builder over the user's KITTI raw folder, and TFDS readers — no
TensorFlow anywhere.

tensorflow-datasets (and array-record) are optional (``pip install 'jaxdepth[data]'``) and
imported only inside this module's functions; importing the module needs neither. The
builder class is created (and registered with TFDS under ``kitti_eigen``) by
:func:`builder_class`, on first use, or at import time when TFDS is already imported.

Build (``manual_dir`` = the KITTI raw root; array_record; TFDS reads image files as bytes
from their paths, so nothing needs TensorFlow)::

    from jaxdepth.data import tfds_kitti
    tfds_kitti.build("eigen_benchmark", manual_dir="/data/kitti_raw", data_dir="~/tfds")
    # or: python -m jaxdepth.data.tfds_kitti --manual_dir /data/kitti_raw --data_dir ~/tfds
    # (TFDS's own `tfds build` CLI imports TensorFlow, so it is not the way here)

Read (``tfds.data_source("kitti_eigen/...")`` needs the builder registered: import this
module after ``tensorflow_datasets`` or call :func:`builder_class`; ``KittiEigenTFDS`` reads
the prepared folder directly and needs neither)::

    src = tfds_kitti.KittiEigenTFDS("eigen_benchmark", data_dir="~/tfds")  # = KittiTest samples
    ds = tfds.data_source("kitti_eigen/eigen_benchmark", split="test", data_dir="~/tfds",
                          decoders={"depth_png": tfds.decode.SkipDecoding()})  # raw records

Configs (records keep the order of the split list; ``index`` is the line number in it):

- ``eigen_benchmark`` (split ``test``): ``image`` (the PNG, embedded), ``depth_png`` (the
  uint16 improved-gt PNG, embedded; PIL cannot decode uint16 through TFDS, so read it with
  ``SkipDecoding`` and :func:`jaxdepth.data.kitti.read_depth_png`), metadata.
- ``eigen`` (``test``): ``image`` embedded, the velodyne ground truth projected at build time
  (Monodepth2 ``generate_depth_map``, velodyne x as depth) stored sparsely as ``depth_rc``
  int32 [N, 2] (row, col) and ``depth_val`` float32 [N] metres.
- ``eigen_zhou``, ``eigen_full`` (``train``, ``val``): an index only — paths relative to the
  KITTI root (``image_path``, ``stereo_path``), ``frame_range`` (first, last frame of the
  sequence), intrinsics;
  images stay in the KITTI folder (embedding 40k triplets would copy ~100 GB), and
  :class:`KittiEigenTFDS` loads them through :class:`jaxdepth.data.kitti.KittiRaw` from
  ``root`` (default: the ``manual_dir`` recorded in the dataset's metadata).

Every config stores ``folder``, ``frame``, ``side``, ``index``, ``K`` ([3,3] float32
normalised, from ``P_rect_02``/``03``), ``native_size`` int32 [2] (h, w) and ``baseline``
(metres, from the calibration).

Builder options (constructor kwargs): ``gt_root`` (depth-completion layout of the improved
gt, as :class:`~jaxdepth.data.kitti.KittiTest`) and ``skip_missing`` (drop frames whose files
are missing, with a warning, instead of failing the build).

NYU Depth V2: :class:`NyuTFDS` reads TFDS's ``nyu_depth_v2`` through ``tfds.data_source``
(needs that dataset prepared with ``file_format="array_record"``; preparing it runs TFDS's
own builder, which uses ``tf.io.gfile`` and TensorFlow's PNG encoder, so *building* it needs
TensorFlow — reading does not). Its ``depth`` is float16 (TFDS's choice: ~4 mm steps at
8 m), and records are in TFDS's hashed order, not FastDepth's file order.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import numpy as np

from . import kitti as K
from . import nyu as N
from .splits import SplitEntry, read_split

__all__ = ["builder_class", "build", "KittiEigenTFDS", "NyuTFDS", "CONFIGS", "KittiEigenSpec",
           "main"]

VERSION = "1.0.0"


@dataclass(frozen=True)
class KittiEigenSpec:
    """What a ``kitti_eigen`` config holds: split list(s), test or training, gt kind."""

    name: str
    subsets: tuple
    test: bool
    gt: str = ""                 # "improved" | "velodyne" for test configs
    velodyne_depth: str = "x"
    split_files: tuple = ()      # ((subset, path), ...) to use a user list instead


CONFIGS = {
    "eigen_benchmark": KittiEigenSpec("eigen_benchmark", ("test",), True, "improved"),
    "eigen": KittiEigenSpec("eigen", ("test",), True, "velodyne"),
    "eigen_zhou": KittiEigenSpec("eigen_zhou", ("train", "val"), False),
    "eigen_full": KittiEigenSpec("eigen_full", ("train", "val"), False),
}


def _tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError as err:
        raise ImportError("jaxdepth.data.tfds_kitti needs the optional packages "
                          "tensorflow-datasets and array-record (pip install "
                          "'jaxdepth[data]'); TensorFlow itself is not needed") from err
    return tfds


_BUILDER = None


def builder_class():
    """The ``kitti_eigen`` ``tfds.core.GeneratorBasedBuilder`` subclass (created once)."""
    global _BUILDER
    if _BUILDER is not None:
        return _BUILDER
    tfds = _tfds()

    class KittiEigenConfig(tfds.core.BuilderConfig):
        def __init__(self, spec: KittiEigenSpec, **kw):
            super().__init__(name=spec.name, version=VERSION,
                             description=f"KITTI {spec.name} ({', '.join(spec.subsets)})", **kw)
            self.spec = spec

    class KittiEigen(tfds.core.GeneratorBasedBuilder):
        """KITTI raw, Eigen splits (Monodepth2 lists), read from ``manual_dir``."""

        VERSION = tfds.core.Version(VERSION)
        MANUAL_DOWNLOAD_INSTRUCTIONS = (
            "Download KITTI raw (jaxdepth/data/splits/kitti/kitti_archives_to_download.txt) "
            "and unzip it into manual_dir: <manual_dir>/<date>/calib_cam_to_cam.txt, "
            "<manual_dir>/<date>/<date>_drive_<n>_sync/image_02/data/*.png, ...; for "
            "eigen_benchmark also the improved ground truth (proj_depth/groundtruth) in the "
            "drive folders, or pass gt_root=<depth-completion folder>.")
        BUILDER_CONFIGS = [KittiEigenConfig(s) for s in CONFIGS.values()]

        def __init__(self, *, gt_root=None, skip_missing=False, **kwargs):
            self._gt_root, self._skip_missing = gt_root, skip_missing
            super().__init__(**kwargs)

        @classmethod
        def config_for(cls, spec: KittiEigenSpec):
            """A config object for a custom spec (e.g. a user split file)."""
            return KittiEigenConfig(spec)

        def _info(self):
            spec = self.builder_config.spec
            f = tfds.features
            feats = {"index": f.Scalar(np.int32), "folder": f.Text(), "frame": f.Scalar(np.int32),
                     "side": f.Text(), "image_path": f.Text(),
                     "K": f.Tensor(shape=(3, 3), dtype=np.float32),
                     "native_size": f.Tensor(shape=(2,), dtype=np.int32),
                     "baseline": f.Scalar(np.float32)}
            if spec.test:
                feats["image"] = f.Image(shape=(None, None, 3))
                if spec.gt == "improved":
                    feats["depth_png"] = f.Image(shape=(None, None, 1), dtype=np.uint16,
                                                 encoding_format="png")
                else:
                    feats["depth_rc"] = f.Tensor(shape=(None, 2), dtype=np.int32)
                    feats["depth_val"] = f.Tensor(shape=(None,), dtype=np.float32)
            else:
                feats["stereo_path"] = f.Text()
                feats["frame_range"] = f.Tensor(shape=(2,), dtype=np.int32)
            return tfds.core.DatasetInfo(
                builder=self, description=__doc__.split("\n\n")[0],
                features=f.FeaturesDict(feats), disable_shuffling=True,
                homepage="https://www.cvlibs.net/datasets/kitti/raw_data.php",
                metadata=tfds.core.MetadataDict())

        def _split_generators(self, dl_manager):
            root = os.fspath(dl_manager.manual_dir)
            self.info.metadata["kitti_root"] = os.path.abspath(root)
            spec = self.builder_config.spec
            return {sub: self._generate_examples(root, sub) for sub in spec.subsets}

        def _generate_examples(self, root, subset):
            yield from _examples(self.builder_config.spec, root, subset, self._gt_root,
                                 self._skip_missing)

    KittiEigen.__qualname__ = "KittiEigen"
    KittiEigenConfig.__qualname__ = "KittiEigenConfig"
    _BUILDER = KittiEigen
    return KittiEigen


def _spec_entries(spec: KittiEigenSpec, subset: str):
    files = dict(spec.split_files)
    return read_split(files[subset]) if subset in files else read_split(spec.name, subset)


def _examples(spec: KittiEigenSpec, root: str, subset: str, gt_root, skip_missing):
    """(key, record) pairs of one subset; validates every file it references."""
    entries = _spec_entries(spec, subset)
    if spec.test:
        src = K.KittiTest(root, spec.name, gt=spec.gt, velodyne_depth=spec.velodyne_depth,
                          gt_root=gt_root,
                          entries=entries, skip_missing=skip_missing)
    else:
        src = K.KittiRaw(root, spec.name, subset, entries=entries, frame_ids=(0,),
                         skip_missing=skip_missing)
    from PIL import Image

    for n, e in enumerate(src.entries):
        cam = K._CAM[e.side]
        img = K.image_path(root, e.folder, e.frame, e.side, src.image_ext)
        if not os.path.isfile(img):
            raise FileNotFoundError(f"expected KITTI {'left' if e.side == 'l' else 'right'} "
                                    f"image {img} (image_0{cam}/data/{e.frame:010d}.png)")
        with Image.open(img) as im:
            native = (im.height, im.width)
        cal = src.calib(e.folder)
        rec = {"index": src.lines[n], "folder": e.folder, "frame": e.frame, "side": e.side,
               "image_path": os.path.relpath(img, root), "K": cal.K_norm(cam),
               "baseline": np.float32(cal.baseline)}
        if spec.test:
            rec["image"] = img
            if spec.gt == "improved":
                gt_path = src.gt_path(e)
                native = K.read_depth_png(gt_path).shape  # validates the PNG
                rec["depth_png"] = gt_path
            else:
                d = src.load_gt(e)
                native = d.shape
                rc = np.argwhere(d > 0).astype(np.int32)
                rec["depth_rc"], rec["depth_val"] = rc, d[rc[:, 0], rc[:, 1]].astype(np.float32)
        else:
            other = "r" if e.side == "l" else "l"
            rec["stereo_path"] = os.path.relpath(
                K.image_path(root, e.folder, e.frame, other, src.image_ext), root)
            rec["frame_range"] = np.array(src.frame_range(e.folder, e.side), np.int32)
        rec["native_size"] = np.array(native, np.int32)
        yield n, rec


def build(config: str | KittiEigenSpec = "eigen_benchmark", *, manual_dir, data_dir,
          gt_root=None, skip_missing=False):
    """Prepare ``kitti_eigen/<config>`` as array_record under ``data_dir``; returns the builder.

    ``config``: a name of :data:`CONFIGS`, or a :class:`KittiEigenSpec` (e.g. with
    ``split_files=(("test", "/path/my_list.txt"),)``) for a custom list."""
    tfds = _tfds()
    cls = builder_class()
    cfg = config if isinstance(config, str) else cls.config_for(config)
    b = cls(data_dir=os.fspath(data_dir), config=cfg, file_format="array_record",
            gt_root=gt_root, skip_missing=skip_missing)
    b.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=os.fspath(manual_dir)))
    return b


def _data_dir_of(config: str, data_dir) -> str:
    return os.path.join(os.path.expanduser(os.fspath(data_dir)), "kitti_eigen", config, VERSION)


class KittiEigenTFDS:
    """Source over a prepared ``kitti_eigen`` config (the Source protocol of
    :mod:`jaxdepth.data.pipeline`).

    Test configs give exactly :class:`~jaxdepth.data.kitti.KittiTest`'s samples (``image``,
    ``depth``, ``mask``, ``K``, ``K_norm``, ``meta``) from the embedded data, without the
    KITTI folder. Training configs give :class:`~jaxdepth.data.kitti.KittiRaw`'s samples,
    loading images from ``root`` (default: the ``manual_dir`` the dataset was built from);
    ``frame_ids``, ``stereo``, ``sequence_ends`` as there.

    ``data_dir``: the TFDS data dir (``<data_dir>/kitti_eigen/<config>/1.0.0``), or pass
    ``path=`` to a prepared version folder directly.
    """

    def __init__(self, config: str = "eigen_benchmark", subset: str | None = None, *,
                 data_dir=None, path=None, root=None, height=192, width=640,
                 intrinsics="calib", pad_to=None, crop=None, frame_ids=(0, -1, 1), stereo=False,
                 sequence_ends="clamp"):
        tfds = _tfds()
        if path is None:
            if data_dir is None:
                raise ValueError("pass data_dir (the TFDS data dir) or path (a prepared "
                                 "kitti_eigen/<config>/<version> folder)")
            path = _data_dir_of(config, data_dir)
        path = os.fspath(path)
        if not os.path.isfile(os.path.join(path, "dataset_info.json")):
            raise FileNotFoundError(f"expected a prepared kitti_eigen dataset at {path} "
                                    "(dataset_info.json missing: run tfds_kitti.build first)")
        builder = tfds.builder_from_directory(path)
        splits = list(builder.info.splits.keys())
        subset = subset or ("test" if "test" in splits else "train")
        if subset not in splits:
            raise ValueError(f"{path} has splits {splits}, not {subset!r}")
        feats = builder.info.features
        self.test = "image" in feats
        self.sparse = "depth_rc" in feats
        decoders = {"depth_png": tfds.decode.SkipDecoding()} if "depth_png" in feats else None
        self.ds = builder.as_data_source(split=subset, decoders=decoders)
        if len(self.ds) == 0:
            raise ValueError(f"{path} split {subset!r} is empty")
        if intrinsics not in ("calib", "monodepth2"):
            raise ValueError(f"intrinsics must be 'calib' or 'monodepth2', got {intrinsics!r}")
        self.height, self.width, self.intrinsics = height, width, intrinsics
        self.pad_to = None if pad_to is None else tuple(pad_to)
        self.crop = crop or ("garg" if self.sparse else "none")
        self.raw = None
        if not self.test:
            meta = builder.info.metadata or {}
            self.root = os.fspath(root) if root is not None else meta.get("kitti_root")
            if self.root is None:
                raise ValueError(f"{path} is an index of KITTI paths: pass root=<KITTI raw root>")
            n = len(self.ds)
            recs = (self.ds.__getitems__(list(range(n))) if hasattr(self.ds, "__getitems__")
                    else [self.ds[i] for i in range(n)])
            entries = [(_str(r["folder"]), int(r["frame"]), _str(r["side"])) for r in recs]
            self.raw = K.KittiRaw(self.root, entries=entries, height=height, width=width,
                                  frame_ids=frame_ids, stereo=stereo, intrinsics=intrinsics,
                                  sequence_ends=sequence_ends)
            self.raw.lines = [int(r["index"]) for r in recs]

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> dict:
        if self.raw is not None:
            return self.raw[i]
        r = self.ds[i]
        e = SplitEntry(_str(r["folder"]), int(r["frame"]), _str(r["side"]))
        img = K.to_network_image(r["image"], self.height, self.width)
        if self.sparse:
            depth = np.zeros(tuple(int(v) for v in r["native_size"]), np.float32)
            rc = np.asarray(r["depth_rc"]).reshape(-1, 2)
            depth[rc[:, 0], rc[:, 1]] = r["depth_val"]
        else:
            depth = K.read_depth_png(r["depth_png"], f"improved gt PNG of record {i} "
                                     f"({e.folder} {e.frame})")
        k_norm = (K.MONODEPTH2_K_NORM.copy() if self.intrinsics == "monodepth2"
                  else np.asarray(r["K"], np.float32))
        return K.make_test_sample(img, depth, k_norm, self.height, self.width, self.crop,
                                  self.pad_to, e, int(r["index"]))


def _str(x) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


class NyuTFDS:
    """NYU Depth V2 from TFDS ``nyu_depth_v2`` (array_record), as :class:`~jaxdepth.data.nyu.
    NyuV2` samples: ``mode="eval"`` (224×288 ``image``/``depth``/``mask``) or ``"raw"``
    (uint8 [480,640,3] ``image``, float32 [480,640,1] ``depth``). ``split``: ``"validation"``
    (the 654 test images) or ``"train"``; ``meta`` = {``index``}."""

    def __init__(self, split: str = "validation", *, data_dir=None, mode: str = "eval"):
        tfds = _tfds()
        if mode not in ("eval", "raw"):
            raise ValueError(f"mode must be 'eval' or 'raw', got {mode!r}")
        self.mode = mode
        self.ds = tfds.data_source("nyu_depth_v2", split=split, data_dir=data_dir)
        if len(self.ds) == 0:
            raise ValueError(f"TFDS nyu_depth_v2 split {split!r} is empty")

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> dict:
        r = self.ds[i]
        rgb, depth = np.asarray(r["image"], np.uint8), np.asarray(r["depth"], np.float32)
        if rgb.shape != (*N.NYU_SHAPE, 3) or depth.shape != N.NYU_SHAPE:
            raise ValueError(f"nyu_depth_v2 record {i}: expected image uint8 [480,640,3] and "
                             f"depth [480,640], got {rgb.shape} and {depth.shape}")
        meta = {"index": np.int64(i % len(self))}
        if self.mode == "raw":
            return {"image": rgb, "depth": depth[..., None], "meta": meta}
        out = N.eval_transform(rgb, depth)
        out["meta"] = meta
        return out


def main(argv=None) -> None:
    """``python -m jaxdepth.data.tfds_kitti --manual_dir KITTI --data_dir OUT [--config ...]``.

    (TFDS's own ``tfds build`` command imports TensorFlow; this one does not.)"""
    import argparse

    p = argparse.ArgumentParser(description="Build kitti_eigen (array_record) without TensorFlow")
    p.add_argument("--manual_dir", required=True, help="KITTI raw root")
    p.add_argument("--data_dir", required=True, help="TFDS data dir to write")
    p.add_argument("--config", default="eigen_benchmark", choices=sorted(CONFIGS))
    p.add_argument("--gt_root", default=None, help="depth-completion folder of the improved gt")
    p.add_argument("--skip_missing", action="store_true",
                   help="drop frames whose files are missing")
    a = p.parse_args(argv)
    b = build(a.config, manual_dir=a.manual_dir, data_dir=a.data_dir, gt_root=a.gt_root,
              skip_missing=a.skip_missing)
    print(f"kitti_eigen/{a.config}: {dict((k, v.num_examples) for k, v in b.info.splits.items())}"
          f" -> {b.data_dir}")


if "tensorflow_datasets" in sys.modules:  # so tfds.data_source("kitti_eigen/...") just works
    builder_class()

if __name__ == "__main__":
    main()
