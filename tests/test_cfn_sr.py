"""CFN-SR (fusion 'cfn_sr'): the cross-modal kernel, shapes, masking, gradients, configs, pmap."""

import functools
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fbp_jax.model import frontend, fusion, network, ops
from tests.test_models import random_batch, tiny_config


def cfn_config(corpus="afew", **cfn):
    config = tiny_config("cfn_sr", corpus)
    with config.unlocked():
        config.model.cfn.num_layers = 2  # Enough to chain blocks; keeps the tests fast.
        for key, value in cfn.items():
            config.model.cfn[key] = value
    return config


# Models the tests share (initialised and compiled once): the default head, the options that
# change its structure, and the IEMOCAP marker encoder.
VARIANTS = {
    "default": ("afew", {}),
    "options": ("afew", {"audio_output": "encoder", "rescale_weights": True, "model_dim": 16}),
    "iemocap": ("iemocap", {}),
}


@functools.cache
def built(variant):
    """(config, batch with padding, model, params, jitted apply) of a VARIANTS entry."""
    corpus, cfn = VARIANTS[variant]
    config = cfn_config(corpus, **cfn)
    batch = random_batch(config, lengths=[1.0, 0.6, 0.25])
    model = network.get_model(config)
    params = jax.jit(model.init)(jax.random.key(0), frontend.model_inputs(batch, "cfn_sr"))
    return config, batch, model, params, jax.jit(model.apply, static_argnames="train")


def test_registered_as_a_sequence_fusion():
    assert fusion.streams_for("cfn_sr") == ("audio", "video")
    assert fusion.SEQUENCE_FUSIONS == {"cfn_sr"}


def test_cross_modal_attention_kernel():
    rng = np.random.default_rng(0)
    b, t, d, a = 3, 7, 5, 4
    video = rng.standard_normal((b, t, d)).astype(np.float32)
    video_proj = rng.standard_normal((b, t, a)).astype(np.float32)
    audio_proj = rng.standard_normal((b, a)).astype(np.float32)
    query = rng.standard_normal(a).astype(np.float32)
    mask = np.arange(t)[None] < np.array([[7], [3], [0]])  # Full, partial, empty.
    fused, w = ops.cross_modal_attention(video, video_proj, audio_proj, query, mask)
    fused, w = np.asarray(fused), np.asarray(w)
    scores = np.tanh(video_proj + audio_proj[:, None]) @ query
    for i, n in enumerate((7, 3)):
        e = np.exp(scores[i, :n] - scores[i, :n].max())
        np.testing.assert_allclose(w[i, :n], e / e.sum(), rtol=1e-5)
    assert np.all(w[~mask] == 0) and np.all(fused[~mask] == 0)
    np.testing.assert_allclose(fused[mask], ((1 + w)[..., None] * video)[mask], rtol=1e-6)
    assert np.all(np.isfinite(fused)) and np.all(w[2] == 0)  # An empty clip gives zeros.
    # rescale: the mean over valid frames is the uniform mean plus the attention-pooled video.
    fused_r, w_r = ops.cross_modal_attention(
        video, video_proj, audio_proj, query, mask, rescale=True
    )
    np.testing.assert_allclose(w_r, w)
    mean = ops.masked_mean_pooling(fused_r, mask).pooled
    expect = ops.masked_mean_pooling(video, mask).pooled + np.einsum("bt,btd->bd", w, video)
    np.testing.assert_allclose(mean, expect, rtol=1e-5, atol=1e-6)


def test_masked_mean_pooling():
    x = np.random.default_rng(1).standard_normal((2, 5, 3)).astype(np.float32)
    mask = np.array([[1, 1, 0, 0, 0], [0, 0, 0, 0, 0]], bool)
    out = ops.masked_mean_pooling(x, mask)
    np.testing.assert_allclose(out.pooled[0], x[0, :2].mean(0), rtol=1e-6)
    np.testing.assert_array_equal(out.weights, [[0.5, 0.5, 0, 0, 0], [0, 0, 0, 0, 0]])
    np.testing.assert_array_equal(out.pooled[1], 0.0)
    np.testing.assert_allclose(out.weighted.sum(1), out.pooled, rtol=1e-6)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_shapes_and_outputs(variant):
    config, batch, _, params, apply = built(variant)
    corpus, cfn = VARIANTS[variant]
    out = apply(params, frontend.model_inputs(batch, "cfn_sr"))
    p = params["params"]
    # No attention pooling parameters (they would get no gradient); the head owns the rest.
    assert set(p) == {"audio_encoder", "video_encoder", "fusion"}
    assert set(p["fusion"]) == {"audio_self_attention", "cross_modal", "classifier"}
    assert ("input_proj" in p["fusion"]["audio_self_attention"]) == bool(cfn.get("model_dim"))
    c_audio = config.model.audio.features[-1]
    a_dim = c_audio if cfn.get("audio_output") == "encoder" else cfn.get("model_dim", c_audio)
    v_dim = {"afew": config.data.video_shape[0] // 4, "iemocap": c_audio}[corpus]
    assert out["embedding"].shape == (3, a_dim + v_dim)
    assert out["logits"].shape == (3, config.data.num_classes)
    for stream in ("audio", "video"):
        w, m = np.asarray(out[f"{stream}_attention"]), np.asarray(out[f"{stream}_mask"])
        assert w.shape == m.shape and (~m).any()
        np.testing.assert_allclose(w.sum(1), 1.0, rtol=1e-5)
        assert np.all(w[~m] == 0)
    # Audio: the uniform weights of the masked mean. Video: the cross-modal weights.
    wa, ma = np.asarray(out["audio_attention"]), np.asarray(out["audio_mask"])
    np.testing.assert_allclose(wa[ma], np.repeat(1 / ma.sum(1), ma.sum(1)), rtol=1e-6)
    assert np.std(np.asarray(out["video_attention"])[0]) > 0
    np.testing.assert_allclose(out["mu"] + out["eta"], 1.0, rtol=1e-5)
    for leaf in jax.tree.leaves(out):
        assert np.all(np.isfinite(np.asarray(leaf)))


def test_bfloat16_logits_are_close_to_float32():
    _, batch, _, params, apply = built("default")
    inputs = frontend.model_inputs(batch, "cfn_sr")
    bf16 = cfn_config()
    with bf16.unlocked():
        bf16.model.dtype = "bfloat16"
    logits = np.asarray(jax.jit(network.get_model(bf16).apply)(params, inputs)["logits"])
    assert logits.dtype == np.float32 and np.all(np.isfinite(logits))
    np.testing.assert_allclose(logits, apply(params, inputs)["logits"], atol=0.1)


def test_padded_values_change_no_output():
    _, batch, _, params, apply = built("default")
    noisy = {k: v.copy() for k, v in batch.items()}
    for key in ("audio", "video"):
        noisy[key][~batch[f"{key}_mask"]] = 1e3
    rngs = {"dropout": jax.random.key(3)}
    for train in (False, True):  # Dropout masks depend on the rng only.
        out = apply(params, frontend.model_inputs(batch, "cfn_sr"), train=train, rngs=rngs)
        out2 = apply(params, frontend.model_inputs(noisy, "cfn_sr"), train=train, rngs=rngs)
        for k in out:
            np.testing.assert_allclose(out[k], out2[k], rtol=1e-5, atol=1e-6, err_msg=k)
    w, m = np.asarray(out["video_attention"]), np.asarray(out["video_mask"])
    assert (~m).any() and np.all(w[~m] == 0)


@pytest.mark.parametrize("variant", ["default", "options"])  # audio_output summary, encoder
def test_every_parameter_gets_a_nonzero_gradient(variant):
    config, batch, model, params, _ = built(variant)
    labels = jnp.arange(3) % config.data.num_classes

    def loss(p):
        out = model.apply(p, frontend.model_inputs(batch, "cfn_sr"))
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(out["logits"], labels))

    grads = jax.jit(jax.grad(loss))(params)
    zero = [
        jax.tree_util.keystr(path)
        for path, g in jax.tree_util.tree_flatten_with_path(grads)[0]
        if not np.any(np.asarray(g))
    ]
    assert not zero, f"parameters without gradient: {zero}"


@pytest.mark.parametrize("module", ["afew_cfnsr", "iemocap_cfnsr", "demo"])
def test_configs_build(module):
    """Every corpus config of the other variants has a cfn_sr twin; parameter shapes only."""
    mod = importlib.import_module(f"configs.{module}")
    config = mod.get_config("cfn_sr") if module == "demo" else mod.get_config()
    assert config.model.fusion == "cfn_sr"
    model = network.get_model(config)
    inputs = frontend.model_inputs(frontend.input_spec(config), "cfn_sr")
    shapes = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), inputs)
    sa = shapes["params"]["fusion"]["audio_self_attention"]
    assert len([k for k in sa if k.startswith("layer")]) == config.model.cfn.num_layers == 5
    assert "input_proj" not in sa  # model_dim = 0: the audio channel count.
    c = config.model.audio.features[-1]  # 256 (AlexNet), 64 (demo's 'tiny').
    assert sa["layer1"]["mlp_in"]["kernel"].shape == (c, 4 * c)
