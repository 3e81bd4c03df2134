"""Step functions: every parameter learns, pmap over 4 devices equals one device, padded
evaluation equals unpadded evaluation, the schedule, no recompilation."""

import functools

import jax
import numpy as np
import pytest

from fbp_jax import parallel
from fbp_jax.model import fusion, network
from fbp_jax.training import steps
from tests.conftest import run_script
from tests.test_models import random_batch, tiny_config


def labelled_batch(config, n, seed=0):
    batch = random_batch(config, batch=n, seed=seed, lengths=list(np.linspace(1.0, 0.3, n)))
    batch["label"] = np.arange(n, dtype=np.int32) % config.data.num_classes
    batch["mask"] = np.ones(n, np.int32)
    return batch


def make_state(config):
    model = network.get_model(config)
    lr_fn = steps.create_learning_rate_fn(config, 10)
    return steps.create_train_state(config, model, jax.random.key(0), lr_fn)


@pytest.mark.parametrize("name", sorted(fusion.FUSION_STREAMS))
def test_every_parameter_changes_after_one_step(name):
    config = tiny_config(name)
    with config.unlocked():
        config.optim.learning_rate = 1e-2
    state = make_state(config)
    step = parallel.pmap(functools.partial(steps.train_step, fusion=name))
    new, metrics = step(
        parallel.replicate(state),
        parallel.shard(labelled_batch(config, 4)),
        rng=parallel.replicate(jax.random.key(1)),
    )
    new = parallel.unreplicate(new)
    unchanged = [
        jax.tree_util.keystr(path)
        for (path, a), b in zip(
            jax.tree_util.tree_flatten_with_path(state.params)[0], jax.tree.leaves(new.params)
        )
        if np.allclose(a, b)
    ]
    assert not unchanged, f"parameters not updated: {unchanged}"
    m = parallel.unreplicate(metrics).compute()
    assert np.isfinite(m["loss"]) and 0 <= m["accuracy"] <= 1
    assert int(new.step) == 1


def test_frozen_groups_keep_their_values_and_the_others_learn():
    config = tiny_config("am_fbp")
    with config.unlocked():
        config.optim.learning_rate = 1e-2
        config.optim.frozen = ("audio_encoder",)
    state = make_state(config)
    step = parallel.pmap(functools.partial(steps.train_step, fusion="am_fbp"))
    new = parallel.unreplicate(
        step(
            parallel.replicate(state),
            parallel.shard(labelled_batch(config, 4)),
            rng=parallel.replicate(jax.random.key(1)),
        )[0]
    )
    for group in state.params:
        same = jax.tree.map(np.array_equal, state.params[group], new.params[group])
        if group == "audio_encoder":
            assert all(jax.tree.leaves(same)), group
        else:
            assert not all(jax.tree.leaves(same)), group
    with config.unlocked():
        config.optim.frozen = ("no_such_group",)
    with pytest.raises(ValueError, match="no_such_group"):
        make_state(config)


def test_learning_rate_schedule_halves_after_epoch():
    config = tiny_config("audio")
    assert tuple(config.optim.lr_decay_epochs) == (50,)
    lr = steps.create_learning_rate_fn(config, steps_per_epoch=10)
    assert float(lr(0)) == pytest.approx(1e-4)
    assert float(lr(499)) == pytest.approx(1e-4)
    assert float(lr(501)) == pytest.approx(5e-5)


def test_padded_evaluation_equals_unpadded():
    config = tiny_config("am_fbp")
    state = parallel.replicate(make_state(config))
    p_eval = parallel.pmap(functools.partial(steps.eval_step, fusion="am_fbp"))
    data = labelled_batch(config, 10, seed=3)

    def batches(size):
        for i in range(0, 10, size):
            b = {k: v[i : i + size] for k, v in data.items()}
            n = len(b["label"])
            if n < size:  # Pad with mask-0 copies of garbage.
                b = {
                    k: np.concatenate([v, np.full((size - n, *v.shape[1:]), 7, v.dtype)])
                    for k, v in b.items()
                }
                b["mask"][n:] = 0
            yield parallel.shard(b)

    padded = steps.evaluate_batches(p_eval, state, batches(4)).compute()  # 4 + 4 + 2 (+2 pad)
    exact = steps.evaluate_batches(p_eval, state, batches(5)).compute()  # 5 + 5
    for k in exact:
        np.testing.assert_allclose(padded[k], exact[k], rtol=1e-5, err_msg=k)


def test_confusion_matrix_metric():
    logits = np.eye(3)[[0, 1, 1, 2, 2, 0]] * 5.0
    labels = np.array([0, 1, 2, 2, 2, 1])
    mask = np.array([1, 1, 1, 1, 1, 0])
    m = steps.ConfusionMatrix.from_model_output(logits=logits, labels=labels, mask=mask)
    np.testing.assert_array_equal(m.matrix, [[1, 0, 0], [0, 1, 0], [0, 1, 2]])
    # Recalls 1, 1, 2/3 -> UA 8/9; padding (mask 0) not counted.
    assert float(m.compute()) == pytest.approx(8 / 9)


@pytest.mark.parametrize("name", ["am_fbp", "cfn_sr"])
def test_pmap_on_four_devices_equals_one_device(name):
    script = """
        import os, sys
        os.environ['XLA_FLAGS'] += ' --xla_force_host_platform_device_count=4'
        import functools, jax, numpy as np, optax
        from fbp_jax import parallel
        from fbp_jax.training import steps
        from tests.test_models import tiny_config
        from tests.test_train_steps import labelled_batch, make_state
        assert jax.local_device_count() == 4
        name = sys.argv[1]
        config = tiny_config(name)
        with config.unlocked():  # Dropout masks differ per device by design.
            config.model.dropout_rate = 0.0
            config.model.cfn.dropout_rate = 0.0
            config.model.cfn.attention_dropout_rate = 0.0
        # SGD, so that parameter deltas are the averaged gradients (Adam's first step is
        # about sign(g), which amplifies float noise in near-zero gradients).
        state = make_state(config).replace(tx=optax.sgd(0.1))
        state = state.replace(opt_state=state.tx.init(state.params))
        batch = labelled_batch(config, 8)
        step = functools.partial(steps.train_step, fusion=name)
        rng = jax.random.key(1)
        four = parallel.pmap(step)
        s4, m4 = four(parallel.replicate(state), parallel.shard(batch),
                      rng=parallel.replicate(rng))
        # The same step on one device: the named axis (size 1) comes from vmap.
        one = jax.jit(jax.vmap(step, axis_name=parallel.AXIS))
        s1, m1 = one(jax.tree.map(lambda x: np.asarray(x)[None], state),
                     jax.tree.map(lambda x: x[None], batch), rng=rng[None])
        for a, b in zip(jax.tree.leaves(s4.params), jax.tree.leaves(s1.params)):
            assert a.shape[1:] == b.shape[1:], (a.shape, b.shape)
            np.testing.assert_allclose(a[0], b[0], rtol=1e-4, atol=1e-7)
            for i in range(1, 4):  # Replicas stay identical.
                np.testing.assert_array_equal(a[0], a[i])
        l4 = parallel.unreplicate(m4).compute()['loss']
        l1 = parallel.unreplicate(m1).compute()['loss']
        np.testing.assert_allclose(l4, l1, rtol=1e-5)
        print('OK', float(l4))
        """
    assert "OK" in run_script(script, name).stdout


def test_jit_and_pmap_give_the_same_parameters_on_four_devices():
    """config.parallel = 'jit' (shard_map under jit, NamedSharding over a 4-device mesh) runs
    the same step functions as pmap: three AM-FBP steps with dropout and mixup (the same
    per-device keys) end with the same parameters, EMA and metrics."""
    script = """
        import os
        os.environ['XLA_FLAGS'] += ' --xla_force_host_platform_device_count=4'
        import functools, jax, numpy as np
        from fbp_jax import parallel
        from fbp_jax.training import loop, steps
        from tests.test_models import tiny_config
        from tests.test_train_steps import labelled_batch, make_state
        assert jax.device_count() == 4
        config = tiny_config('am_fbp')
        with config.unlocked():
            config.augment.mixup_alpha = 0.4
            config.optim.ema_decay = 0.9
            config.optim.learning_rate = 1e-2
        state = make_state(config)
        batches = [labelled_batch(config, 8, seed=i) for i in range(3)]
        out = {}
        for mode in ('pmap', 'jit'):
            dp = parallel.DataParallel(mode)
            step = dp.compile(loop.train_step_fn(config), donate_state=True, num_replicated=1)
            evaluate = dp.compile(functools.partial(steps.eval_step, fusion='am_fbp'))
            s, rng = dp.replicate(state), dp.replicate(jax.random.key(1))
            losses = []
            for b in batches:
                s, m = step(s, dp.put_batch(b), rng)
                losses.append(float(dp.unreplicate(m).compute()['loss']))
            e = steps.evaluate_batches(evaluate, s, dp.prefetch(batches), dp.unreplicate)
            out[mode] = (dp.host_copy(s), losses, e.compute())
        (sp, lp, ep), (sj, lj, ej) = out['pmap'], out['jit']
        assert int(sp.step) == int(sj.step) == 3
        for a, b in zip(jax.tree.leaves((sp.params, sp.ema_params)),
                        jax.tree.leaves((sj.params, sj.ema_params))):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(lp, lj, rtol=1e-5)
        for k in ep:
            np.testing.assert_allclose(ep[k], ej[k], rtol=1e-5)
        print('OK', lp)
        """
    assert "OK" in run_script(script).stdout


def test_no_recompilation_over_steps_and_evaluations():
    compiles = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda event, _, **kw: compiles.append(event) if "backend_compile" in event else None
    )
    config = tiny_config("g_fbp")
    state = parallel.replicate(make_state(config))
    p_train = parallel.pmap(functools.partial(steps.train_step, fusion="g_fbp"), donate_state=True)
    p_eval = parallel.pmap(functools.partial(steps.eval_step, fusion="g_fbp"))
    rng = parallel.replicate(jax.random.key(0))
    batches = [labelled_batch(config, 4, seed=i) for i in range(3)]
    train_iter = parallel.prefetch(batches[i % 3] for i in range(8))
    for i in range(8):
        if i == 2:  # The first train step and the first evaluation have compiled.
            warmup_compiles = len(compiles)
        state, _ = p_train(state, next(train_iter), rng=rng)
        if i % 2:
            steps.evaluate_batches(p_eval, state, parallel.prefetch(batches[:2]))
    jax.block_until_ready(state)
    assert warmup_compiles >= 2
    assert compiles[warmup_compiles:] == [], "a step or evaluation compiled again"


def test_bfloat16_step_runs_and_its_loss_is_close_to_float32():
    losses = {}
    for dtype in ("float32", "bfloat16"):
        config = tiny_config("am_fbp")
        with config.unlocked():
            config.model.dtype = dtype
            config.model.dropout_rate = 0.0
        state = make_state(config)
        step = parallel.pmap(functools.partial(steps.train_step, fusion="am_fbp"))
        new, metrics = step(
            parallel.replicate(state),
            parallel.shard(labelled_batch(config, 4)),
            rng=parallel.replicate(jax.random.key(1)),
        )
        # Parameters and optimiser state stay float32.
        assert all(x.dtype == np.float32 for x in jax.tree.leaves(new.params))
        losses[dtype] = float(parallel.unreplicate(metrics).compute()["loss"])
    assert np.isfinite(losses["bfloat16"])
    assert losses["bfloat16"] == pytest.approx(losses["float32"], rel=2e-2)
