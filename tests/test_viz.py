"""Colour maps and PNG figures: sizes, masking, no pyplot state leaking."""
import matplotlib
import numpy as np
import pytest
from PIL import Image

from jaxdepth import viz
from jaxdepth.metrics import sparsification_curves


def png_size(path):
    with Image.open(path) as im:
        return im.size  # (width, height)


def test_colorize_range_mask_and_grey():
    x = np.linspace(0.0, 1.0, 20).reshape(4, 5)
    x[0, 0] = np.nan
    mask = np.ones((4, 5), bool)
    mask[3, 4] = False
    rgb = viz.colorize(x[..., None], vmin=0.0, vmax=1.0, mask=mask)
    assert rgb.shape == (4, 5, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[0, 0]) == viz.GREY and tuple(rgb[3, 4]) == viz.GREY
    cmap = matplotlib.colormaps["magma"]
    np.testing.assert_array_equal(rgb[3, 3], cmap(x[3, 3], bytes=True)[:3])
    # Default range: robust percentiles, so one huge outlier does not flatten the map.
    y = np.arange(100.0).reshape(10, 10)
    y[0, 0] = 1e6
    out = viz.colorize(y, cmap="gray")
    assert out[5, 5, 0] not in (out[1, 1, 0], out[9, 9, 0])
    assert tuple(viz.colorize(np.full((2, 2), np.nan))[0, 0]) == viz.GREY


def test_save_panel_size(tmp_path):
    imgs = [np.zeros((10, 30, 3), np.uint8), np.random.default_rng(0).uniform(size=(10, 30)),
            np.ones((8, 20, 3))]
    p = viz.save_panel(tmp_path / "a.png", imgs, titles=["a", "b", "c"], ncols=2)
    # scale = ceil(192 / 30) = 7: cells 210 x 70; 2 columns, 2 rows, 24 px titles, 4 px pads.
    assert png_size(p) == (2 * (210 + 4) + 4, 2 * (70 + 24 + 4) + 4)
    p = viz.save_panel(tmp_path / "b.png", imgs[:2], scale=1)
    assert png_size(p) == (2 * (30 + 4) + 4, 1 * (10 + 4) + 4)  # ncols = ceil(sqrt(2))
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        viz.save_panel(tmp_path / "c.png", [np.zeros((4, 4, 2))])
    with pytest.raises(ValueError, match="titles"):
        viz.save_panel(tmp_path / "c.png", imgs, titles=["only one"])


def test_plot_sparsification_size_and_inputs(tmp_path):
    rng = np.random.default_rng(1)
    gt = rng.uniform(1, 50, (2, 6, 8)).astype(np.float32)
    pred = gt * rng.uniform(0.7, 1.3, gt.shape).astype(np.float32)
    gt[1] = 0.0  # an image without a valid pixel: its NaN row is left out of the mean
    c = sparsification_curves(gt, pred, np.abs(gt - pred) + rng.uniform(size=gt.shape) * 5)
    curves = {"grad": {"x": c["x"], "method": c["rmse"]["method"], "oracle": c["rmse"]["oracle"]},
              "const": {"x": c["x"], "method": c["rmse"]["random"][0].at[-1].set(0.0),
                        "oracle": c["rmse"]["oracle"][0]}}
    assert png_size(viz.plot_sparsification(tmp_path / "s.png", curves, "rmse")) == (600, 400)
    p = viz.plot_sparsification(tmp_path / "r.png", curves, "a1", show_raw=True)
    assert png_size(p) == (1100, 400)
    # many methods: the legend moves beside the plot, in two columns above 20, and the
    # figure grows so that every entry fits (0.2 inch per entry)
    g = curves["grad"]
    for n, size in ((15, (1000, 400)), (28, (1400, 400)), (60, (1400, 660))):
        many = {f"m{i}": g for i in range(n)}
        assert png_size(viz.plot_sparsification(tmp_path / f"m{n}.png", many, "rmse")) == size
    with pytest.raises(ValueError, match="no image"):
        viz.plot_sparsification(tmp_path / "n.png", {"bad": {
            "x": c["x"], "method": c["rmse"]["method"][1:], "oracle": c["rmse"]["oracle"][1:]}},
            "rmse")


def test_save_depth_uncertainty_png(tmp_path):
    rng = np.random.default_rng(2)
    image = rng.uniform(size=(12, 40, 3))
    depth = rng.uniform(1, 20, (12, 40, 1))
    gt = np.where(rng.uniform(size=(12, 40)) < 0.3, depth[..., 0] * 1.1, 0.0)
    p = viz.save_depth_uncertainty_png(tmp_path / "d.png", image, depth, rng.uniform(size=(12, 40)),
                                       gt=gt)
    # 5 panels (image, depth, uncertainty, error, gt) in one column, scale ceil(192/40) = 5.
    assert png_size(p) == (200 + 8, 5 * (60 + 24 + 4) + 4)
    p = viz.save_depth_uncertainty_png(tmp_path / "e.png", image, depth, depth, ncols=3)
    assert png_size(p) == (3 * (200 + 4) + 4, 60 + 24 + 8)
    with pytest.raises(ValueError, match="gt shape"):
        viz.save_depth_uncertainty_png(tmp_path / "f.png", image, depth, depth, gt=gt[:5])


def test_no_pyplot_state_leaks(tmp_path):
    import matplotlib.pyplot as plt

    backend, figs = matplotlib.get_backend(), plt.get_fignums()
    viz.save_panel(tmp_path / "p.png", [np.zeros((4, 4))])
    assert matplotlib.get_backend() == backend and plt.get_fignums() == figs
