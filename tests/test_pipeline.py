"""The batched Loader: seeded order, exact resumption, fast path, sharding, grain adapter."""
import json

import numpy as np
import pytest

import kitti_fixtures as kf
from jaxdepth.data import kitti
from jaxdepth.data.pipeline import Loader, grain_dataset, shard_batch, stack_samples


class Toy:
    """Source protocol: ``len`` and ``[i]`` -> nested dict of arrays (+ metadata string)."""

    def __init__(self, n=10):
        self.n, self.calls = n, 0

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        self.calls += 1
        return {"x": np.full((2, 3), i, np.float32),
                "frames": {-1: np.array([i - 1]), 1: np.array([i + 1])},
                "meta": {"name": np.asarray(f"s{i}")}}


class ToyFast(Toy):
    def get_batch(self, idx):
        self.fast = getattr(self, "fast", 0) + 1
        return stack_samples([Toy.__getitem__(self, i) for i in idx])


def ids(batch):
    return batch["x"][:, 0, 0].astype(int).tolist()


def noisy(sample, rng):
    return dict(sample, noise=rng.normal(size=(2,)).astype(np.float32))


@pytest.mark.parametrize("kw", [{}, {"transform": noisy}, {"num_threads": 2, "prefetch": 2}])
def test_resume_gives_the_uninterrupted_batches(kw):
    ref = Loader(Toy(10), 3, seed=5, **kw)
    want = [next(ref) for _ in range(12)]  # 3 batches per epoch: crosses 3 epoch boundaries
    run = Loader(Toy(10), 3, seed=5, **kw)
    for _ in range(7):
        next(run)
    state = json.loads(json.dumps(run.get_state()))
    assert state["epoch"] == 2 and state["position"] == 1 and state["seed"] == 5
    for resumed in (Loader(Toy(10), 3, seed=123, state=state, **kw), Loader(Toy(10), 3, **kw)):
        if resumed.seed != 5:
            resumed.set_state(state)
        got = [next(resumed) for _ in range(5)]
        for a, b in zip(got, want[7:]):
            assert ids(a) == ids(b)
            if "transform" in kw:
                np.testing.assert_array_equal(a["noise"], b["noise"])
        resumed.close()
    ref.close()
    run.close()


def test_order_is_a_function_of_seed_and_epoch():
    def epochs(seed, n_epochs=3):
        ld = Loader(Toy(10), 4, seed=seed, drop_remainder=False, num_epochs=n_epochs)
        out = [ids(b) for b in ld]
        assert len(out) == n_epochs * 3 and [len(b) for b in out[:3]] == [4, 4, 2]
        return out

    a, b, c = epochs(0), epochs(0), epochs(1)
    assert a == b and a != c
    for e in range(3):
        assert sorted(sum(a[3 * e:3 * e + 3], [])) == list(range(10))  # a permutation
    assert a[:3] != a[3:6]                                              # reshuffled per epoch
    plain = [ids(x) for x in Loader(Toy(10), 5, shuffle=False, num_epochs=2)]
    assert plain == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]] * 2
    with pytest.raises(StopIteration):
        ld = Loader(Toy(10), 5, num_epochs=1)
        next(ld), next(ld), next(ld)


def test_fast_path_nested_dicts_and_strings():
    src = ToyFast(6)
    b = next(Loader(src, 3, shuffle=False))
    assert src.fast == 1 and b["x"].shape == (3, 2, 3)
    np.testing.assert_array_equal(b["frames"][-1][:, 0], [-1, 0, 1])
    assert list(b["meta"]["name"]) == ["s0", "s1", "s2"]
    # a per-sample transform needs samples, so the fast path is not used
    src2 = ToyFast(6)
    b2 = next(Loader(src2, 3, shuffle=False, transform=noisy))
    assert not hasattr(src2, "fast") and b2["noise"].shape == (3, 2)
    bt = next(Loader(Toy(6), 3, batch_transform=lambda b, rng: dict(b, r=rng.integers(9, size=3))))
    assert bt["r"].shape == (3,)


def test_errors():
    with pytest.raises(ValueError, match="empty source"):
        Loader(Toy(0), 2)
    with pytest.raises(ValueError, match="every epoch is empty"):
        Loader(Toy(3), 4)
    ld = Loader(Toy(10), 3)
    with pytest.raises(ValueError, match="batch_size=3"):
        Loader(Toy(10), 2).set_state(ld.get_state())
    with pytest.raises(ValueError, match="num_samples=10"):
        Loader(Toy(11), 3).set_state(ld.get_state())
    with pytest.raises(ValueError, match="shapes differ"):
        stack_samples([{"a": np.zeros(2)}, {"a": np.zeros(3)}])
    with pytest.raises(ValueError, match="different keys"):
        stack_samples([{"a": np.zeros(2)}, {"b": np.zeros(2)}])


def test_shard_batch_on_devices():
    import jax

    n = jax.device_count()
    batch = next(Loader(Toy(2 * n), n, shuffle=False))
    sharded = shard_batch(batch)
    x = sharded["x"]
    assert isinstance(x, jax.Array) and x.shape == (n, 2, 3)
    assert len(x.sharding.device_set) == n and x.sharding.spec == jax.sharding.PartitionSpec("data")
    np.testing.assert_array_equal(np.asarray(x), batch["x"])
    assert isinstance(sharded["meta"]["name"], np.ndarray)  # strings stay on the host
    if n > 1:
        with pytest.raises(ValueError, match="multiple of"):
            shard_batch(next(Loader(Toy(2 * n), n - 1)))


def test_threaded_file_loading_matches_serial(tmp_path):
    tree = kf.write_kitti_raw(tmp_path, frames=range(6))
    src = kitti.KittiRaw(tmp_path, entries=tree.entries([1, 2, 3, 4]), height=10, width=32,
                         stereo=True)
    serial = list(Loader(src, 2, seed=1, num_epochs=1))
    threaded = list(Loader(src, 2, seed=1, num_epochs=1, num_threads=2, prefetch=1))
    assert len(serial) == len(threaded) == 2
    for a, b in zip(serial, threaded):
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["frames"][-1], b["frames"][-1])
        assert a["stereo_T"].shape == (2, 4, 4) and a["K"].shape == (2, 3, 3)
        np.testing.assert_array_equal(a["meta"]["frame"], b["meta"]["frame"])


def test_grain_adapter():
    grain = pytest.importorskip("grain", reason="grain is an optional extra (jaxdepth[data])")
    ds = grain_dataset(Toy(10), 5, seed=0, num_epochs=2, transform=noisy)
    it = iter(ds.to_iter_dataset())
    got = [ids(next(it)) for _ in range(2)]
    assert sorted(sum(got, [])) == list(range(10))
    state = it.get_state()
    want = ids(next(it))
    it2 = iter(ds.to_iter_dataset())
    it2.set_state(state)
    assert ids(next(it2)) == want
    assert isinstance(ds, grain.MapDataset)
