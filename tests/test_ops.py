"""Kernels of fbp_jax.model.ops against hand-written numpy and TensorFlow."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from fbp_jax.model import conv, ops

jax.config.update("jax_enable_x64", False)


def _rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _lrn_numpy(x, r, bias, alpha, beta):
    c = x.shape[-1]
    out = np.empty_like(x)
    for d in range(c):
        lo, hi = max(0, d - r), min(c, d + r + 1)
        s = np.sum(np.square(x[..., lo:hi]), axis=-1)
        out[..., d] = x[..., d] / (bias + alpha * s) ** beta
    return out


@pytest.mark.parametrize("r,bias,alpha,beta", [(2, 2.0, 1e-4, 0.75), (1, 1.0, 0.5, 0.5)])
def test_lrn_matches_numpy(r, bias, alpha, beta):
    x = 3 * _rand(2, 5, 4, 9)
    np.testing.assert_allclose(
        ops.local_response_normalization(x, r, bias, alpha, beta),
        _lrn_numpy(x, r, bias, alpha, beta),
        rtol=1e-5,
        atol=1e-6,
    )


def test_lrn_matches_tensorflow():
    tf = pytest.importorskip("tensorflow")
    x = 10 * _rand(2, 6, 5, 16, seed=1)
    for r, bias, alpha, beta in [(2, 2.0, 1e-4, 0.75), (3, 1.0, 1e-2, 0.6)]:
        expected = tf.nn.local_response_normalization(
            x, depth_radius=r, bias=bias, alpha=alpha, beta=beta
        ).numpy()
        np.testing.assert_allclose(
            ops.local_response_normalization(x, r, bias, alpha, beta),
            expected,
            rtol=1e-5,
            atol=1e-6,
        )


def test_masked_softmax_zero_on_padding_and_sums_to_one():
    logits = _rand(3, 7)
    mask = np.array([[1] * 7, [1] * 4 + [0] * 3, [0] * 7], bool)
    w = np.asarray(ops.masked_softmax(logits, mask, temperature=0.7))
    assert np.all(w[~mask] == 0)
    np.testing.assert_allclose(w.sum(-1), [1, 1, 0], atol=1e-6)
    ref = np.exp(0.7 * logits[1, :4]) / np.exp(0.7 * logits[1, :4]).sum()
    np.testing.assert_allclose(w[1, :4], ref, rtol=1e-5)
    assert np.all(np.isfinite(w))


def test_temperature_zero_gives_uniform_weights():
    x, keys, u = _rand(2, 6, 4), _rand(2, 6, 4, seed=1), _rand(4, seed=2)
    mask = np.array([[1] * 6, [1, 1, 1, 0, 0, 0]], bool)
    out = ops.attention_pooling(x, keys, u, mask, temperature=0.0)
    np.testing.assert_allclose(out.weights[0], np.full(6, 1 / 6), rtol=1e-6)
    np.testing.assert_allclose(out.weights[1], [1 / 3] * 3 + [0] * 3, rtol=1e-6)
    np.testing.assert_allclose(out.pooled[1], x[1, :3].mean(0), rtol=1e-5)


def test_attention_pooling_ignores_padded_values():
    x, keys, u = _rand(2, 6, 4), _rand(2, 6, 4, seed=1), _rand(4, seed=2)
    mask = np.array([[1] * 6, [1, 1, 1, 1, 0, 0]], bool)
    a = ops.attention_pooling(x, keys, u, mask, 0.3)
    x2, k2 = x.copy(), keys.copy()
    x2[1, 4:] = 100.0
    k2[1, 4:] = -50.0
    b = ops.attention_pooling(x2, k2, u, mask, 0.3)
    np.testing.assert_allclose(a.pooled, b.pooled, rtol=1e-6)
    np.testing.assert_allclose(a.weights, b.weights, rtol=1e-6)
    assert np.all(np.asarray(b.weights)[1, 4:] == 0)
    # Equal to attention over the unpadded clip.
    c = ops.attention_pooling(x[1:, :4], keys[1:, :4], u, None, 0.3)
    np.testing.assert_allclose(a.pooled[1:], c.pooled, rtol=1e-5)
    np.testing.assert_allclose(a.weighted.sum(1), a.pooled, rtol=1e-5)


def test_fbp_equals_explicit_bilinear_form_without_bias():
    """Eq. 12-13: I_j = e_a^T (P_j Q_j^T) e_v when the projections have no bias."""
    c, d, o, k = 5, 6, 3, 4
    x, y = _rand(2, c), _rand(2, d, seed=1)
    p, q = _rand(c, o * k, seed=2), _rand(d, o * k, seed=3)
    got = ops.factorized_bilinear_pooling(x, y, p, None, q, None, k, normalize=False)
    expected = np.zeros((2, o))
    for j in range(o):
        lam = p[:, j * k : (j + 1) * k] @ q[:, j * k : (j + 1) * k].T  # [C, D] low-rank Lambda_j
        expected[:, j] = np.einsum("bc,cd,bd->b", x, lam, y)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    normed = ops.factorized_bilinear_pooling(x, y, p, None, q, None, k)
    np.testing.assert_allclose(
        normed, expected / np.linalg.norm(expected, axis=-1, keepdims=True), rtol=1e-4, atol=1e-5
    )


def test_adaptive_fbp_equals_global_fbp_without_bias_and_differs_with_bias():
    c, d, o, k = 5, 6, 3, 2
    x, y = _rand(4, c), 3 * _rand(4, d, seed=1)
    p, q = _rand(c, o * k, seed=2), _rand(d, o * k, seed=3)
    bp, bq = _rand(o * k, seed=4), _rand(o * k, seed=5)
    mu, eta = ops.adaptive_weights(x, y)
    np.testing.assert_allclose(mu + eta, 1.0, rtol=1e-6)
    np.testing.assert_allclose(
        mu,
        np.linalg.norm(x, axis=-1) / (np.linalg.norm(x, axis=-1) + np.linalg.norm(y, axis=-1)),
        rtol=1e-5,
    )
    g = ops.factorized_bilinear_pooling(x, y, p, None, q, None, k)
    ag = ops.factorized_bilinear_pooling(mu[:, None] * x, eta[:, None] * y, p, None, q, None, k)
    np.testing.assert_allclose(g, ag, rtol=1e-4, atol=1e-6)
    g_b = ops.factorized_bilinear_pooling(x, y, p, bp, q, bq, k)
    ag_b = ops.factorized_bilinear_pooling(mu[:, None] * x, eta[:, None] * y, p, bp, q, bq, k)
    assert np.max(np.abs(np.asarray(g_b) - np.asarray(ag_b))) > 1e-3


def test_fbp_options():
    x, y = _rand(3, 4), _rand(3, 5, seed=1)
    p, q = _rand(4, 8, seed=2), _rand(5, 8, seed=3)
    raw = ops.factorized_bilinear_pooling(x, y, p, None, q, None, 2, normalize=False)
    sq = ops.factorized_bilinear_pooling(
        x, y, p, None, q, None, 2, normalize=False, use_signed_sqrt=True
    )
    np.testing.assert_allclose(sq, np.sign(raw) * np.sqrt(np.abs(raw)), rtol=1e-4, atol=1e-5)
    drop = ops.factorized_bilinear_pooling(
        x, y, p, None, q, None, 2, dropout_rate=0.5, dropout_rng=jax.random.key(0), normalize=False
    )
    assert not np.allclose(drop, raw)
    same = ops.factorized_bilinear_pooling(
        x, y, p, None, q, None, 2, dropout_rate=0.5, dropout_rng=None, normalize=False
    )
    np.testing.assert_allclose(same, raw)
    with pytest.raises(ValueError, match="divisible"):
        ops.sum_pooling(jnp.ones((2, 7)), 2)


def test_trunk_assignment_and_pooling():
    assign = np.asarray(ops.trunk_assignment(10, 3))
    np.testing.assert_array_equal(assign.argmax(1), [(i * 3) // 10 for i in range(10)])
    np.testing.assert_array_equal(assign.sum(1), 1)
    e = _rand(2, 10, 4)
    trunks = np.asarray(ops.trunk_pooling(e, 3))
    np.testing.assert_allclose(trunks.sum(1), e.sum(1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(trunks[:, 0], e[:, :4].sum(1), rtol=1e-5, atol=1e-6)


def test_trunk_vectors_sum_to_global_attention_vector():
    x, keys, u = _rand(2, 12, 4), _rand(2, 12, 4, seed=1), _rand(4, seed=2)
    mask = np.array([[1] * 12, [1] * 7 + [0] * 5], bool)
    att = ops.attention_pooling(x, keys, u, mask, 1.0)
    trunks = ops.trunk_pooling(att.weighted, 5)
    np.testing.assert_allclose(trunks.sum(1), att.pooled, rtol=1e-5, atol=1e-6)


def test_multi_level_fbp_matches_per_trunk_loop():
    h, c, d, o, k = 3, 4, 5, 2, 2
    xt, yt = _rand(2, h, c), _rand(2, h, d, seed=1)
    p, q = _rand(h, c, o * k, seed=2), _rand(h, d, o * k, seed=3)
    bp, bq = _rand(h, o * k, seed=4), _rand(h, o * k, seed=5)
    got = ops.multi_level_fbp(xt, yt, p, bp, q, bq, k, normalize=False)
    expected = sum(
        ops.factorized_bilinear_pooling(
            xt[:, i], yt[:, i], p[i], bp[i], q[i], bq[i], k, normalize=False
        )
        for i in range(h)
    )
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_downsample_mask():
    mask = np.array([[1] * 10 + [0] * 6, [1] * 3 + [0] * 13], bool)
    out = np.asarray(ops.downsample_mask(mask, 3, 2, (1, 1)))
    # Output i is centred on input 2i.
    np.testing.assert_array_equal(out, mask[:, ::2])
    assert out.shape == (2, 8)
    out = np.asarray(ops.downsample_mask(mask, 11, 4, (5, 5)))
    np.testing.assert_array_equal(out.sum(1), [3, 1])  # ceil(10 / 4), ceil(3 / 4)


def test_kernels_are_jit_consistent():
    x = _rand(2, 3, 4, 8)
    np.testing.assert_allclose(
        jax.jit(ops.local_response_normalization)(x), ops.local_response_normalization(x), rtol=1e-6
    )


def test_gradients_of_kernels():
    x = _rand(2, 3, 6)
    check_grads(
        lambda x: ops.local_response_normalization(x, 2, 2.0, 0.1, 0.75),
        (x,),
        order=2,
        modes=["rev"],
        atol=1e-2,
        rtol=1e-2,
    )
    mask = np.array([[1, 1, 1], [1, 1, 0]], bool)
    check_grads(
        lambda z: ops.masked_softmax(z[..., 0], mask, 0.5),
        (x,),
        order=2,
        modes=["rev"],
        atol=1e-2,
        rtol=1e-2,
    )
    keys, u = _rand(2, 3, 6, seed=1), _rand(6, seed=2)
    check_grads(
        lambda x, k, u: ops.attention_pooling(x, k, u, mask, 0.3).pooled,
        (x, keys, u),
        order=1,
        modes=["rev"],
        atol=1e-2,
        rtol=1e-2,
    )
    a, b = _rand(2, 4, seed=3), _rand(2, 5, seed=4)
    p, q = _rand(4, 6, seed=5), _rand(5, 6, seed=6)
    bp, bq = _rand(6, seed=7), _rand(6, seed=8)
    check_grads(
        lambda a, b, p, q: ops.factorized_bilinear_pooling(a, b, p, bp, q, bq, 3),
        (a, b, p, q),
        order=1,
        modes=["rev"],
        atol=1e-2,
        rtol=1e-2,
    )
    check_grads(
        lambda a, b: ops.adaptive_weights(a, b)[0],
        (a, b),
        order=2,
        modes=["rev"],
        atol=1e-2,
        rtol=1e-2,
    )
    check_grads(lambda e: ops.trunk_pooling(e, 2), (x,), order=1, modes=["rev"])


@pytest.mark.parametrize("impl", [conv.conv2d_patches, conv.conv2d_matmul_grads])
@pytest.mark.parametrize(
    "shape,k,stride,pad",
    [
        ((2, 23, 17, 1), 11, 4, (5, 5)),
        ((2, 9, 7, 5), 3, 1, (1, 1)),
        ((1, 8, 6, 3), 5, 2, (2, 2)),
        ((2, 10, 7, 4), 5, 1, (2, 2)),
        ((1, 9, 8, 2), 3, 1, (0, 2)),
    ],
)
def test_conv_drop_ins_equal_lax_conv_with_gradients(impl, shape, k, stride, pad):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=shape), jnp.float32)
    w = jnp.asarray(rng.normal(size=(k, k, shape[-1], 4)), jnp.float32)
    padding = (pad, pad[::-1])

    def ref(x, w):
        return jax.lax.conv_general_dilated(
            x, w, (stride, stride), padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
        )

    def ours(x, w):
        return impl(x, w, (stride, stride), padding)

    np.testing.assert_allclose(ours(x, w), ref(x, w), rtol=1e-4, atol=1e-4)
    loss = lambda f: lambda x, w: jnp.sum(jnp.sin(f(x, w)))
    for a, b in zip(jax.grad(loss(ours), (0, 1))(x, w), jax.grad(loss(ref), (0, 1))(x, w)):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("shape", [(2, 11, 7, 3), (1, 10, 8, 2)])
def test_max_pool_2d_equals_flax_max_pool(shape):
    x = jnp.asarray(np.random.default_rng(1).normal(size=shape), jnp.float32)
    ref = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
    np.testing.assert_array_equal(conv.max_pool_2d(x, 3, 2, (1, 1)), ref)
    g_ours = jax.grad(lambda x: jnp.sum(conv.max_pool_2d(x, 3, 2, (1, 1)) ** 2))(x)
    g_ref = jax.grad(lambda x: jnp.sum(nn.max_pool(x, (3, 3), (2, 2), ((1, 1), (1, 1))) ** 2))(x)
    np.testing.assert_allclose(g_ours, g_ref, rtol=1e-6)
