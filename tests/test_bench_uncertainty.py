"""The benchmark's FLOP floor of gradient uncertainty: XLA's count of the activation
backward agrees with the analytic conv count (Monodepth2), and works on MonoViT."""
import jax
import pytest

from experiment_scripts import load_experiment
from jaxdepth.models import DepthNet, MonoViT


@pytest.fixture(scope="module")
def bench():
    return load_experiment("bench_uncertainty")


@pytest.mark.parametrize("tap", ["dec6", "dec3"])
def test_xla_backward_floor_matches_the_analytic_conv_count(bench, tap):
    model = DepthNet()
    variables = model.init_variables(0, 32, 96)
    images = jax.random.uniform(jax.random.PRNGKey(1), (1, 32, 96, 3))
    xla = bench.backward_floor_flops_xla(model, variables, images, tap)
    analytic = bench.backward_floor_flops(model, variables, images, tap)
    # XLA also counts the ELU derivatives and the nearest-upsampling sums (a few %)
    assert analytic <= xla <= 1.1 * analytic, (xla, analytic)


def test_monovit_floor_and_bad_tap(bench):
    model = MonoViT(size="tiny", width=0.5)
    variables = model.init_variables(0, 32, 96)
    images = jax.random.uniform(jax.random.PRNGKey(1), (1, 32, 96, 3))
    deep = bench.backward_floor_flops_xla(model, variables, images, "X_04_Conv_1")
    shallow = bench.backward_floor_flops_xla(model, variables, images, model.default_tap)
    assert 0 < deep < shallow  # from a tap nearer the output, less to differentiate through
    with pytest.raises(ValueError, match="unknown tap"):
        bench.backward_floor_flops_xla(model, variables, images, "dec6")
