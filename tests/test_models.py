import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdepth.models import DepthNet, disp_to_depth, encoder_channels
from jaxdepth.models.depth_decoder import ReflectConv3x3, channel_dropout

H, W = 64, 96
TAP_TABLE = {  # docs/design.md §1: tap -> (channels at width 1, resolution divisor)
    "dec0": (256, 32), "dec1": (256, 16), "dec2": (128, 16), "dec3": (128, 8), "dec4": (64, 8),
    "dec5": (64, 4), "dec6": (32, 4), "dec7": (32, 2), "dec8": (16, 2), "dec9": (16, 1),
    "dec10": (1, 1)}


@pytest.fixture(scope="module")
def tiny():
    model = DepthNet(width=0.25, log_sigma=True)
    variables = model.init_variables(jax.random.PRNGKey(0), H, W)
    images = jax.random.uniform(jax.random.PRNGKey(1), (2, H, W, 3))
    return model, variables, images


@pytest.mark.slow
def test_outputs_and_taps_follow_protocol_table(tiny):
    model, variables, images = tiny
    out = model.apply(variables, images)
    for key in ("disp", "depth", "log_sigma"):
        assert out[key].shape == (2, H, W, 1)
    assert sorted(out["features"], key=lambda t: int(t[3:])) == [f"dec{i}" for i in range(11)]
    for tap, (ch, div) in TAP_TABLE.items():
        want_ch = 1 if tap == "dec10" else max(1, round(ch * 0.25))
        assert out["features"][tap].shape == (2, H // div, W // div, want_ch), tap
    for s, entry in enumerate(out["scales"]):
        assert entry["disp"].shape == (2, H >> s, W >> s, 1)
        assert entry["log_sigma"].shape == (2, H >> s, W >> s, 1)
    np.testing.assert_allclose(out["depth"] * out["disp"], 1.0, rtol=1e-5)
    assert float(out["depth"].min()) >= 0.1 - 1e-6 and float(out["depth"].max()) <= 100 + 1e-3
    # dec10 is the pre-sigmoid disparity head
    sig = jax.nn.sigmoid(out["features"]["dec10"])
    np.testing.assert_allclose(disp_to_depth(sig)[0], out["disp"], rtol=1e-6)


def test_full_size_parameter_count_matches_monodepth2():
    # Monodepth2 ResNet-18 encoder (no fc) 11,176,512 + depth decoder 3,152,724.
    variables = jax.eval_shape(DepthNet().init, jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3)))
    count = lambda t: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(t))
    assert count(variables["params"]["encoder"]) == 11_176_512
    assert count(variables["params"]["decoder"]) == 3_152_724
    names = variables["params"]["decoder"]
    assert {f"upconv_{i}_{j}" for i in range(5) for j in range(2)} | {
        f"dispconv_{s}" for s in range(4)} == set(names)
    assert names["upconv_1_1"]["kernel"].shape == (3, 3, 96, 32)  # concat(up(dec6), enc0)


def test_resnet50_encoder_shapes():
    model = DepthNet(num_layers=50, width=0.125)
    variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3)))
    feats = jax.eval_shape(lambda v, x: model.apply(v, x, method=lambda m, y: m.encoder(y)),
                           variables, jnp.zeros((1, 64, 64, 3)))
    assert [f.shape[-1] for f in feats] == list(encoder_channels(50, 0.125))
    assert [f.shape[1] for f in feats] == [32, 16, 8, 4, 2]


def test_offsets_are_added_where_the_tap_is_produced(tiny):
    model, variables, images = tiny
    base = model.apply(variables, images)
    shape = base["features"]["dec6"].shape
    zero = model.apply(variables, images, {"dec6": jnp.zeros(shape)})
    np.testing.assert_array_equal(zero["depth"], base["depth"])
    off = jax.random.normal(jax.random.PRNGKey(2), shape)
    moved = model.apply(variables, images, {"dec6": off})
    np.testing.assert_allclose(moved["features"]["dec6"], base["features"]["dec6"] + off, atol=1e-6)
    np.testing.assert_array_equal(moved["features"]["dec5"], base["features"]["dec5"])
    assert not np.allclose(moved["depth"], base["depth"])
    with pytest.raises(ValueError, match="dec6"):
        model.apply(variables, images, {"dec6": jnp.zeros((1, 2, 3, 4))})
    with pytest.raises(ValueError, match="unknown tap"):
        model.apply(variables, images, {"dec11": jnp.zeros(shape)})


def test_dropout_only_with_rng_and_whole_channels(tiny):
    model, variables, images = tiny
    base = model.apply(variables, images)["depth"]
    key = jax.random.PRNGKey(5)
    a = model.apply(variables, images, dropout_rng=key)["depth"]
    b = model.apply(variables, images, dropout_rng=key)["depth"]
    c = model.apply(variables, images, dropout_rng=jax.random.PRNGKey(6))["depth"]
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, base) and not np.allclose(a, c)
    np.testing.assert_array_equal(
        model.apply(variables, images, dropout_rng=key, dropout_rate=0.0)["depth"], base)


def test_channel_dropout_zeroes_whole_channels():
    x = jnp.ones((4, 5, 6, 64))
    y = np.asarray(channel_dropout(x, jax.random.PRNGKey(0), 0.25))
    per_channel = y.reshape(4, 30, 64)
    assert np.all(per_channel.min(1) == per_channel.max(1))  # constant over pixels
    np.testing.assert_allclose(np.unique(y), [0.0, 1.0 / 0.75], rtol=1e-6)
    assert 0.6 < (y > 0).mean() < 0.9


@pytest.mark.slow
def test_metric_mode_outputs_head_as_depth():
    model = DepthNet(width=0.125, metric=True)
    variables = model.init_variables(jax.random.PRNGKey(0), 32, 32)
    out = model.apply(variables, jnp.full((1, 32, 32, 3), 0.5))
    np.testing.assert_array_equal(out["depth"], out["features"]["dec10"])
    assert "depthconv_0" in variables["params"]["decoder"]


def test_batchnorm_train_mode_updates_statistics(tiny):
    model, variables, images = tiny
    out, updates = model.apply(variables, images, train=True, mutable=["batch_stats"])
    before = variables["batch_stats"]["encoder"]["bn1"]["mean"]
    after = updates["batch_stats"]["encoder"]["bn1"]["mean"]
    assert not np.allclose(before, after)
    assert out["depth"].shape == (2, H, W, 1)


def test_reflect_conv_equals_conv_of_concatenation():
    xs = [jax.random.normal(jax.random.PRNGKey(i), (2, 8, 10, c)) for i, c in enumerate((3, 5))]
    conv = ReflectConv3x3(4)
    params = conv.init(jax.random.PRNGKey(9), xs)
    got = conv.apply(params, xs)
    x = np.pad(np.concatenate([np.asarray(a) for a in xs], -1), ((0, 0), (1, 1), (1, 1), (0, 0)),
               mode="reflect")
    k = np.asarray(params["params"]["kernel"])
    want = np.zeros((2, 8, 10, 4)) + np.asarray(params["params"]["bias"])
    for dy in range(3):
        for dx in range(3):
            want += np.einsum("bhwc,co->bhwo", x[:, dy:dy + 8, dx:dx + 10], k[dy, dx])
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_bad_inputs_get_clear_errors(tiny):
    model, variables, _ = tiny
    with pytest.raises(ValueError, match="multiples of 32"):
        model.apply(variables, jnp.zeros((1, 60, 96, 3)))
    with pytest.raises(ValueError, match=r"\[B,H,W,3\]"):
        model.apply(variables, jnp.zeros((1, 64, 96)))
