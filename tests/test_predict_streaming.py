"""`jaxdepth predict` on many images (issue 17, item 6): one batch in memory at a time,
a progress bar, and `--skip-existing` resuming a stopped run to the outputs of an
uninterrupted one. (Peak memory for 100 vs 1,000 images is measured by
experiments/bench_predict_memory.py, not here: RSS assertions would flake.)"""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from jaxdepth.cli import main
from jaxdepth.cli import predict as P
from jaxdepth.export import save_checkpoint
from jaxdepth.models import DepthNet

H, W = 64, 96
KW = {"num_layers": 18, "width": 0.125}
N = 8


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("stream")
    ckpt = save_checkpoint(root / "ckpt", KW, DepthNet(**KW).init_variables(0, H, W), H, W)
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(N):
        Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)).save(
            images / f"im{i:02d}.png")
    return ckpt, images


def _predict(capsys, ckpt, images, out, *extra):
    rc = main(["predict", "--checkpoint", str(ckpt), "--out", str(out), "--batch-size", "3",
               *map(str, extra), str(images)])
    o, e = capsys.readouterr()
    assert rc == 0, e
    return o, e


def test_batches_stream_and_skip_existing_resumes_a_stopped_run(setup, tmp_path, capsys,
                                                                 monkeypatch):
    ckpt, images = setup
    args = ("--method", "post")
    # an uninterrupted run: each batch is read only after the previous one is written
    events = []
    batches, save = P.image_batches, P.save_npy

    def logged_batches(*a, **k):
        for chunk, originals, batch in batches(*a, **k):
            events.append(("read", tuple(chunk)))
            yield chunk, originals, batch

    monkeypatch.setattr(P, "image_batches", logged_batches)
    monkeypatch.setattr(P, "save_npy", lambda path, a: (events.append(("write", path)),
                                                        save(path, a)))
    out, err = _predict(capsys, ckpt, images, tmp_path / "straight", *args, "--no-panel")
    monkeypatch.setattr(P, "image_batches", batches)
    reads = [i for i, e in enumerate(events) if e[0] == "read"]
    assert [events[i][1] for i in reads] == [(0, 1, 2), (3, 4, 5), (6, 7)]
    assert reads == [0, 1 + 6, 2 + 12] and len(events) == 3 + 2 * N  # 2 maps per image
    assert f"{N}/{N}" in err and "predict (post)" in err  # the progress bar, on stderr
    assert sum("mean uncertainty" in line for line in out.splitlines()) == N

    # a run stopped in the middle of image 4 (half a temporary file left behind)
    stopped, calls = tmp_path / "stopped", []

    def dies_on_the_10th(path, a):
        calls.append(path)
        if len(calls) == 10:
            P._partial(P.Path(path)).write_bytes(b"\x93NUMPY trunc")
            raise KeyboardInterrupt
        save(path, a)

    monkeypatch.setattr(P, "save_npy", dies_on_the_10th)
    with pytest.raises(KeyboardInterrupt):
        main(["predict", "--checkpoint", str(ckpt), "--out", str(stopped), "--batch-size", "3",
              *args, str(images)])
    capsys.readouterr()
    monkeypatch.setattr(P, "save_npy", save)
    assert len(list(stopped.glob("*_depth.npy"))) == 5  # image 4 lacks its uncertainty
    assert len(list(stopped.glob("*_panel.png"))) == 4
    (stopped / "im01_panel.png").unlink()  # an image missing only its panel is redone

    out, err = _predict(capsys, ckpt, images, stopped, *args, "--skip-existing")
    assert f"3 of {N} images have their outputs" in err
    redone = sorted(line.split(":")[0].rsplit("/", 1)[-1] for line in out.splitlines()
                    if "mean uncertainty" in line)
    assert redone == ["im01.png"] + [f"im{i:02d}.png" for i in range(4, N)]
    for kind in ("depth", "uncertainty"):
        for i in range(N):
            name = f"im{i:02d}_{kind}.npy"
            np.testing.assert_array_equal(np.load(stopped / name),
                                          np.load(tmp_path / "straight" / name), err_msg=name)
    assert len(list(stopped.glob("*_panel.png"))) == N
    assert not list(stopped.glob(".*partial*"))

    out, err = _predict(capsys, ckpt, images, stopped, *args, "--skip-existing")
    assert f"{N} of {N} images have their outputs" in err and "mean uncertainty" not in out


def test_skipping_keeps_the_batches_of_an_uninterrupted_run(setup):
    """Noise / dropout methods draw per batch slot: a resumed run predicts the batches
    an uninterrupted one would (chunks of only finished images are not read)."""
    _, images = setup
    paths = P.collect_images([str(images)])
    chunks = lambda skip: [c for c, _, _ in P.image_batches(  # noqa: E731
        paths, 3, W, H, Image.Resampling.BILINEAR, skip=skip)]
    assert chunks(()) == [[0, 1, 2], [3, 4, 5], [6, 7]]
    assert chunks({0, 1, 2, 4, 7}) == [[3, 4, 5], [6, 7]]
    assert P.output_names("a", (0.9,), panel=False) == ["a_depth.npy", "a_uncertainty.npy",
                                                        "a_bound0.9.npy"]
    assert P.output_names("a") == ["a_depth.npy", "a_uncertainty.npy", "a_panel.png"]
