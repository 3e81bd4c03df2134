"""The model family: shapes, masking, AG-FBP vs G-FBP, the fusion registry, no TensorFlow."""

import textwrap

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import common
from fbp_jax.model import frontend, fusion, network
from tests.conftest import BLOCK_TENSORFLOW, run_script

ALL = sorted(fusion.FUSION_STREAMS)


def tiny_config(name="am_fbp", corpus="afew"):
    config = common.get_config(corpus, name)
    with config.unlocked():
        config.model.audio = common.fcn_config("tiny")
        config.model.video.fcn = common.fcn_config("tiny", first_stride=1)
        config.data.num_bins = 40
        config.data.clip_seconds = 1.28
        if corpus == "afew":
            config.data.video_shape = (32,)
        else:
            config.data.video_shape = (10, 3)
        config.model.fbp.num_trunks = 3
        config.model.fbp.global_dim = 8
        config.model.fbp.multi_dim = 6
    return config


def random_batch(config, batch=3, seed=0, lengths=None):
    spec = frontend.input_spec(config, batch)
    rng = np.random.default_rng(seed)
    out = {
        k: rng.standard_normal(v.shape).astype(np.float32)
        if v.dtype != bool
        else np.ones(v.shape, bool)
        for k, v in spec.items()
    }
    ta, tv = out["audio"].shape[1], out["video"].shape[1]
    for i, frac in enumerate(lengths or []):
        out["audio_mask"][i, int(frac * ta) :] = False
        out["video_mask"][i, int(frac * tv) :] = False
    return out


def init(config, batch):
    model = network.get_model(config)
    params = model.init(jax.random.key(0), frontend.model_inputs(batch, config.model.fusion))
    return model, params


@pytest.mark.parametrize("name", ALL)
def test_shapes_and_outputs(name):
    config = tiny_config(name)
    batch = random_batch(config, lengths=[1.0, 0.5, 0.3])
    model, params = init(config, batch)
    out = model.apply(params, frontend.model_inputs(batch, name))
    assert out["logits"].shape == (3, config.data.num_classes)
    assert out["embedding"].ndim == 2
    for stream in fusion.streams_for(name):
        w, m = np.asarray(out[f"{stream}_attention"]), np.asarray(out[f"{stream}_mask"])
        assert w.shape == m.shape
        np.testing.assert_allclose(w.sum(1), 1.0, rtol=1e-5)
        assert np.all(w[~m] == 0)
    if len(fusion.streams_for(name)) == 2:
        np.testing.assert_allclose(out["mu"] + out["eta"], 1.0, rtol=1e-5)
    for leaf in jax.tree.leaves(out):
        assert np.all(np.isfinite(np.asarray(leaf)))


def test_iemocap_marker_encoder():
    config = tiny_config("am_fbp", corpus="iemocap")
    batch = random_batch(config)
    assert batch["video"].shape[2:] == (10, 3)
    model, params = init(config, batch)
    out = model.apply(params, frontend.model_inputs(batch, "am_fbp"))
    assert "conv1" in params["params"]["video_encoder"]
    assert params["params"]["video_encoder"]["conv1"]["kernel"].shape[2] == 3
    assert out["logits"].shape == (3, 4)


@pytest.mark.parametrize("name", ["am_fbp", "decision"])
def test_padded_values_change_no_output(name):
    config = tiny_config(name)
    batch = random_batch(config, lengths=[1.0, 0.6, 0.25])
    model, params = init(config, batch)
    out = model.apply(params, frontend.model_inputs(batch, name))
    noisy = {k: v.copy() for k, v in batch.items()}
    for key in ("audio", "video"):
        noisy[key][~batch[f"{key}_mask"]] = 1e3
    out2 = model.apply(params, frontend.model_inputs(noisy, name))
    for k in out:
        np.testing.assert_allclose(out[k], out2[k], rtol=1e-5, atol=1e-6, err_msg=k)


def test_clip_gives_same_output_with_more_padding():
    """A clip padded to a longer duration is encoded exactly as the shorter padded clip."""
    config = tiny_config("am_fbp")
    with config.unlocked():
        config.model.fbp.num_trunks = 1  # Trunks are defined on padded time, the rest is not.
    batch = random_batch(config, lengths=[0.5, 0.5, 0.5])
    longer = tiny_config("am_fbp")
    with longer.unlocked():
        longer.model.fbp.num_trunks = 1
        longer.data.clip_seconds = 2 * config.data.clip_seconds
    big = random_batch(longer, lengths=[0.25, 0.25, 0.25], seed=5)
    for key in ("audio", "video"):
        n = batch[key].shape[1]
        big[key][:, :n] = batch[key]
        big[f"{key}_mask"][:, :n] = batch[f"{key}_mask"]
    model, params = init(config, batch)
    a = model.apply(params, frontend.model_inputs(batch, "am_fbp"))
    b = model.apply(params, frontend.model_inputs(big, "am_fbp"))
    for k in ("logits", "embedding", "mu"):
        np.testing.assert_allclose(a[k], b[k], rtol=1e-4, atol=1e-5, err_msg=k)


def _zero_fbp_biases(params):
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params))
    flat = {
        k: (jnp.zeros_like(v) if "global_fbp" in k and k[-1] == "bias" else v)
        for k, v in flat.items()
    }
    return flax.traverse_util.unflatten_dict(flat)


def test_ag_fbp_equals_g_fbp_without_biases_and_differs_with():
    g_cfg, ag_cfg = tiny_config("g_fbp"), tiny_config("ag_fbp")
    batch = random_batch(g_cfg, batch=4, lengths=[1.0, 0.7, 0.5, 0.9])
    g_model, params = init(g_cfg, batch)
    ag_model = network.get_model(ag_cfg)
    params = {"params": jax.tree.map(lambda x: x + 0.1 * jnp.sign(x) + 0.05, params["params"])}
    inputs = frontend.model_inputs(batch, "g_fbp")
    with_bias = [m.apply(params, inputs)["logits"] for m in (g_model, ag_model)]
    assert np.max(np.abs(np.asarray(with_bias[0] - with_bias[1]))) > 1e-4
    zero = _zero_fbp_biases(params)
    without = [m.apply(zero, inputs)["logits"] for m in (g_model, ag_model)]
    np.testing.assert_allclose(without[0], without[1], rtol=1e-4, atol=1e-5)


def test_unknown_fusion_lists_valid_names():
    config = tiny_config("g_fbp")
    with config.unlocked():
        config.model.fusion = "nope"
    with pytest.raises(ValueError, match="am_fbp"):
        network.get_model(config)


def test_core_runs_without_tensorflow():
    """ops, layers, encoders, fusion, models and the step functions never import TensorFlow."""
    script = BLOCK_TENSORFLOW + textwrap.dedent(
        """
        import functools, jax, numpy as np
        from fbp_jax.model import ops, layers, encoders, fusion, network
        from fbp_jax import parallel
        from fbp_jax.model import frontend
        from fbp_jax.training import steps
        from tests.test_models import tiny_config, random_batch
        config = tiny_config('am_fbp')
        model = network.get_model(config)
        state = steps.create_train_state(config, model, jax.random.key(0), lambda s: 1e-3)
        batch = random_batch(config, batch=2)
        batch['label'] = np.array([0, 1]); batch['mask'] = np.ones(2, np.int32)
        step = parallel.pmap(functools.partial(steps.train_step, fusion='am_fbp'))
        state, metrics = step(parallel.replicate(state), parallel.shard(batch),
                              rng=parallel.replicate(jax.random.key(1)))
        assert np.isfinite(float(parallel.unreplicate(metrics).compute()['loss']))
        assert 'tensorflow' not in sys.modules
        print('OK')
        """
    )
    assert "OK" in run_script(script, timeout=300).stdout
