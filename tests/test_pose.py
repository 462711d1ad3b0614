"""PoseNet: shapes, the frame −1 inversion, and that converted Monodepth2 pose weights
(the names `jaxdepth.convert.monodepth2.convert_pose` writes) load into it."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from jaxdepth import geometry
from jaxdepth.convert.monodepth2 import convert_pose
from jaxdepth.models import PoseNet
from jaxdepth.models.pose import from_converted
from jaxdepth.train import selfsup

H, W = 32, 64


@pytest.fixture(scope="module")
def net():
    model = PoseNet(width=0.125)
    return model, model.init_variables(0, H, W)


def test_shapes_and_scale(net):
    model, variables = net
    x = jnp.asarray(np.random.default_rng(0).uniform(0, 1, (3, H, W, 6)), jnp.float32)
    axisangle, translation = jax.jit(model.apply)(variables, x)
    assert axisangle.shape == translation.shape == (3, 2, 3)  # Monodepth2: 2 frames, first used
    # ×0.01 on a mean of random-init outputs: small motions at initialisation
    assert 0 < float(jnp.abs(jnp.concatenate([axisangle, translation])).max()) < 0.05
    p = variables["params"]
    assert set(p) == {"pose_encoder", "pose_decoder"}
    assert set(p["pose_decoder"]) == {"squeeze", "pose_0", "pose_1", "pose_2"}
    assert p["pose_encoder"]["conv1"]["kernel"].shape == (7, 7, 6, 8)
    assert p["pose_decoder"]["pose_2"]["kernel"].shape == (1, 1, 32, 12)
    with pytest.raises(ValueError, match="6"):
        model.apply(variables, x[..., :3])


def test_pose_vec_to_mat_composition_and_frame_minus_one():
    rng = np.random.default_rng(1)
    a = rng.normal(0, 0.1, (4, 3)).astype(np.float32)
    t = rng.normal(0, 1.0, (4, 3)).astype(np.float32)
    T = geometry.pose_vec_to_mat(a, t)
    Tinv = geometry.pose_vec_to_mat(a, t, invert=True)
    np.testing.assert_allclose(np.asarray(T @ Tinv), np.tile(np.eye(4), (4, 1, 1)), atol=1e-5)
    np.testing.assert_allclose(np.asarray(geometry.invert_pose(T)), np.asarray(Tinv), atol=1e-6)
    # a rotation about y by the angle of the axis-angle vector
    Ry = geometry.pose_vec_to_mat(np.array([[0, 0.3, 0]], np.float32), np.zeros((1, 3), np.float32))
    np.testing.assert_allclose(np.asarray(Ry)[0, :3, :3],
                               [[np.cos(.3), 0, np.sin(.3)], [0, 1, 0], [-np.sin(.3), 0, np.cos(.3)]],
                               atol=1e-6)

    # pose_transforms: pairs in temporal order, frame −1's transform inverted
    seen = {}

    def fake_apply(variables, x, train=False, **kw):
        seen["x"] = x
        b = x.shape[0]
        out = (jnp.tile(jnp.asarray(a[:1])[:, None], (b, 2, 1)),
               jnp.tile(jnp.asarray(t[:1])[:, None], (b, 2, 1)))
        return (out, {"batch_stats": {}}) if train else out

    tgt, prev, nxt = (np.full((2, 4, 4, 3), v, np.float32) for v in (0.0, -1.0, 1.0))
    inputs = {"target": tgt, "target_aug": tgt, "sources_aug": [prev, nxt], "stereo_T": None}
    (T_prev, T_next), _ = selfsup.pose_transforms(fake_apply, None, inputs, (-1, 1))
    x = np.asarray(seen["x"])
    assert x.shape == (4, 4, 4, 6)
    assert (x[:2, ..., :3] == -1).all() and (x[:2, ..., 3:] == 0).all()  # [I_-1, I_0]
    assert (x[2:, ..., :3] == 0).all() and (x[2:, ..., 3:] == 1).all()   # [I_0, I_1]
    np.testing.assert_allclose(np.asarray(T_next), np.tile(np.asarray(T)[:1], (2, 1, 1)), atol=1e-6)
    np.testing.assert_allclose(np.asarray(T_prev), np.tile(np.asarray(Tinv)[:1], (2, 1, 1)), atol=1e-6)


def _to_torch_names(variables):
    """The Monodepth2 state dicts (`pose_encoder.pth`, `pose.pth`) of PoseNet variables."""
    enc, dec = {}, {}
    flat = traverse_util.flatten_dict(variables)
    for path, v in flat.items():
        v = np.asarray(v)
        col, scope, *mod, leaf = path
        if scope == "pose_decoder":
            i = {"squeeze": 0, "pose_0": 1, "pose_1": 2, "pose_2": 3}[mod[0]]
            dec[f"net.{i}.{'weight' if leaf == 'kernel' else 'bias'}"] = (
                v.transpose(3, 2, 0, 1) if leaf == "kernel" else v)
            continue
        name = ".".join(p.replace("_", ".") for p in mod)
        torch_leaf = {("params", "kernel"): "weight", ("params", "scale"): "weight",
                      ("params", "bias"): "bias", ("batch_stats", "mean"): "running_mean",
                      ("batch_stats", "var"): "running_var"}[(col, leaf)]
        enc[f"encoder.{name}.{torch_leaf}"] = v.transpose(3, 2, 0, 1) if leaf == "kernel" else v
    return enc, dec


def test_converted_monodepth2_pose_weights_load_into_posenet():
    model = PoseNet(width=0.125, decoder_width=1.0)  # converted decoders have 256 channels
    rng = np.random.default_rng(2)
    variables = model.init_variables(3, H, W)
    # non-trivial BatchNorm statistics, so that running averages are exercised
    variables = jax.tree_util.tree_map_with_path(
        lambda p, v: (v + rng.uniform(0.1, 0.5, v.shape).astype(np.float32))
        if p[0].key == "batch_stats" else v, variables)
    enc_sd, dec_sd = _to_torch_names(variables)
    assert "encoder.layer2.0.downsample.0.weight" in enc_sd and "net.3.weight" in dec_sd
    tree, info = convert_pose(enc_sd, dec_sd)
    loaded_model, loaded = from_converted(tree, info)
    assert info["num_frames_to_predict_for"] == 2 and info["num_input_images"] == 2
    assert jax.tree.structure(loaded) == jax.tree.structure(variables)
    x = jnp.asarray(rng.uniform(0, 1, (2, H, W, 6)), jnp.float32)
    a0, t0 = jax.jit(model.apply)(variables, x)
    a1, t1 = jax.jit(loaded_model.apply)(loaded, x)
    np.testing.assert_allclose(np.asarray(a1), np.asarray(a0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.asarray(t1), np.asarray(t0), rtol=1e-5, atol=1e-7)
