r"""One command that checks the project on an accelerator: `bash scripts/gpu_check.sh`.

    bash scripts/gpu_check.sh [OUT_DIR]           # a GPU machine: the checks below, < 8 min
    bash scripts/gpu_check.sh --smoke [OUT_DIR]   # the same at tiny sizes, ~3 min on 2 CPU cores

It needs JAX, Flax, optax, orbax-checkpoint, clu and ml_collections, and no TensorFlow (the
lent GPU machines have none). In order, each with its result in OUT_DIR/gpu_check.json and a
line of OUT_DIR/gpu_check.txt:

1. `benchmark`: `fbp_jax.tools.benchmark` for every fusion variant at the paper's AFEW sizes
   (AlexNet FCN, 6.4 s clips, 1024-d faces, batch 64) in float32 and bfloat16, with the
   share of the dense-matmul peak measured on the same device; the table in
   OUT_DIR/benchmark.txt, the rows in OUT_DIR/benchmark.json.
2. `peer` (with `--peer=amfbp_torch.py`): AM-FBP's train examples/s, ours under pmap and
   jit and the PyTorch peer's (`fbp_jax.tools.peer`, on the same GPU), float32 and bfloat16,
   the ratio and our share of the bf16 matmul peak: one table, OUT_DIR/peer.txt.
3. `pmap` and `jit` (`--checks=parallel`): one training step pmapped over all local devices
   equals one step on one device of the whole batch (loss, every parameter); the jit path
   (shard_map over a mesh) equals the pmap step.
4. `training`: AM-FBP trained on in-memory synthetic clips (`data_prep.builders.synthetic`,
   no TFDS): the training loss of the last steps is below that of the first ones.
5. `export`: the trained model exported with `jax.export` for this platform, reloaded by
   `serving.bundle.load_exported` and run: the same posteriors as the model itself.

The command exits non-zero when a check fails; a check that would run past the time budget
is skipped with a note.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from fbp_jax import base_config, io, parallel
from fbp_jax.model import fusion, network
from fbp_jax.training import steps

FLAGS = flags.FLAGS


def define_flags() -> None:
    flags.DEFINE_string("out", "gpu_check", "Folder of the results.")
    flags.DEFINE_bool(
        "smoke", False, "Tiny sizes (about 3 min on 2 CPU cores): checks the machinery."
    )
    flags.DEFINE_list(
        "variants",
        ["audio", "video", "g_fbp", "am_fbp"],
        f"Benchmarked variants, of {sorted(fusion.FUSION_STREAMS)} (--smoke: two of them).",
    )
    flags.DEFINE_float("budget_minutes", 7.5, "Checks that would start later are skipped.")
    flags.DEFINE_list("checks", list(CHECKS), f"Checks to run, of {list(CHECKS)}.")
    flags.DEFINE_string(
        "peer", None, "The PyTorch peer's file (amfbp_torch.py): timed beside ours ('peer')."
    )
    flags.DEFINE_string(
        "peer_python", None, "Python with PyTorch for the peer (default: this one)."
    )


CHECKS = ("benchmark", "peer", "parallel", "training", "export")


def _sizes(smoke: bool) -> dict[str, Any]:
    if smoke:
        return {
            # The peer's smallest FCN is our 'small' preset; its clips and features as ours.
            "peer": {"fcn": "small", "batch": 8, "clip_seconds": 0.64, "config": "demo"},
            "peer_steps": ["--steps=1", "--repeats=1"],
            "bench": [
                "--config=demo",
                "--fcn=tiny",
                "--clip_seconds=0.64",
                "--batch_sizes=8",
                "--steps=1",
                "--repeats=1",
                "--matmul_size=256",
                "--variants=video,am_fbp",
            ],
            "train_steps": 40,
            "train_clips": 64,
        }
    return {
        "bench": ["--config=afew", "--fcn=alexnet", "--batch_sizes=64", "--steps=5", "--repeats=3"],
        "peer": {"fcn": "alexnet", "batch": 64, "clip_seconds": 6.4, "config": "afew"},
        "peer_steps": ["--steps=5", "--repeats=3"],
        "train_steps": 150,
        "train_clips": 512,
    }


def check_benchmark(out: str, smoke: bool, variants) -> dict[str, Any]:
    """The benchmark command in a subprocess (its own flags), table and JSON under `out`."""
    path = os.path.join(out, "benchmark.json")
    cmd = [
        sys.executable,
        "-m",
        "fbp_jax.tools.benchmark",
        f"--variants={','.join(variants)}",
        *_sizes(smoke)["bench"],  # A later --variants wins: --smoke benchmarks two.
        "--dtypes=float32,bfloat16",
        f"--json={path}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return {"ok": False, "error": proc.stderr[-2000:]}
    result = io.read_json(path)
    io.atomic_write(os.path.join(out, "benchmark.txt"), lambda f: f.write(result["table"] + "\n"))
    best = max(result["rows"], key=lambda r: r.get("matmul_peak_fraction") or 0)
    return {
        "ok": True,
        "rows": len(result["rows"]),
        "best_matmul_peak_fraction": best.get("matmul_peak_fraction"),
        "table": result["table"],
    }


def check_peer(out: str, smoke: bool, peer: str | None, peer_python: str | None) -> dict:
    """Ours (AM-FBP, pmap and jit) and the PyTorch peer's train examples/s at the same sizes in
    float32 and bfloat16 on this machine's accelerator, their ratio, and our share of the bf16
    matmul peak measured in the same run; the table in OUT/peer.txt."""
    if not peer:
        return {"ok": None, "skipped": "no peer file (--peer, or gpu_carry/peer/amfbp_torch.py)"}
    sizes = _sizes(smoke)
    p = sizes["peer"]
    ours_json, peer_json = os.path.join(out, "ours_vs_peer.json"), os.path.join(out, "peer.json")
    ours_cmd = [
        sys.executable,
        "-m",
        "fbp_jax.tools.benchmark",
        f"--config={p['config']}",
        f"--fcn={p['fcn']}",
        f"--clip_seconds={p['clip_seconds']}",
        f"--batch_sizes={p['batch']}",
        "--variants=am_fbp",
        "--dtypes=float32,bfloat16",
        "--parallel=pmap,jit",
        *sizes["peer_steps"],
        f"--json={ours_json}",
    ]
    if smoke:
        ours_cmd.append("--matmul_size=256")
    peer_cmd = [
        peer_python or sys.executable,
        "-m",
        "fbp_jax.tools.peer",
        f"--peer={peer}",
        f"--fcn={p['fcn']}",
        f"--batch={p['batch']}",
        f"--clip_seconds={p['clip_seconds']}",
        "--dtypes=float32,bfloat16",
        *sizes["peer_steps"],
        f"--json={peer_json}",
    ]
    for cmd in (ours_cmd, peer_cmd):
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            return {"ok": False, "error": f"{' '.join(cmd[:3])}: {proc.stderr[-1500:]}"}
    ours = io.read_json(ours_json)
    theirs = {r["dtype"]: r for r in io.read_json(peer_json)["rows"]}
    peak = ours["matmul_peak_flop_s"]["bfloat16"]
    rows, lines = [], []
    head = (
        f"{'dtype':<9}{'ours pmap':>11}{'ours jit':>10}{'peer':>9}{'ours / peer':>13}"
        f"{'% bf16 peak':>13}"
    )
    lines += [head, "-" * len(head)]
    for dtype in ("float32", "bfloat16"):
        mine = {r["parallel"]: r for r in ours["rows"] if r["dtype"] == dtype}
        best = max(mine.values(), key=lambda r: r["train_ex_s"])
        row = {
            "dtype": dtype,
            "ours_pmap_ex_s": mine["pmap"]["train_ex_s"],
            "ours_jit_ex_s": mine["jit"]["train_ex_s"],
            "peer_ex_s": theirs[dtype]["train_ex_s"],
            "ratio": best["train_ex_s"] / theirs[dtype]["train_ex_s"],
            "bf16_peak_fraction": (best.get("achieved_gflop_s") or 0) * 1e9 / peak,
        }
        rows.append(row)
        lines.append(
            f"{dtype:<9}{row['ours_pmap_ex_s']:>11.1f}{row['ours_jit_ex_s']:>10.1f}"
            f"{row['peer_ex_s']:>9.1f}{row['ratio']:>12.2f}x{100 * row['bf16_peak_fraction']:>12.1f}%"
        )
    any_peer = next(iter(theirs.values()))
    lines.append(
        f"AM-FBP train examples/s, FCN {p['fcn']}, {p['clip_seconds']} s clips, batch "
        f"{p['batch']}; ours: {ours['rows'][0]['devices']} device(s), bf16 matmul peak "
        f"{peak / 1e12:.1f} TFLOP/s measured here; peer: {any_peer['framework']} on "
        f"{any_peer['device']} (bfloat16 = torch.autocast). Targets: >= 1.5x the peer, "
        ">= 50 % of the bf16 peak."
    )
    table = "\n".join(lines)
    io.atomic_write(os.path.join(out, "peer.txt"), lambda f: f.write(table + "\n"))
    best_bf16 = rows[1]
    return {
        "ok": True,
        "rows": rows,
        "meets_1_5x": all(r["ratio"] >= 1.5 for r in rows),
        "meets_half_peak": best_bf16["bf16_peak_fraction"] >= 0.5,
        "table": table,
    }


def check_jit(smoke: bool) -> dict[str, Any]:
    """config.parallel = 'jit' (shard_map over a mesh of every device) gives the pmap step's
    parameters and loss."""
    config = _demo_config(smoke, "am_fbp")
    batch = next(synthetic_batches(config, config.batch_size))
    model = network.get_model(config)
    state = steps.create_train_state(config, model, jax.random.key(0), lambda _: 1e-2)
    from fbp_jax.training import loop

    out = {}
    for mode in parallel.MODES:
        dp = parallel.DataParallel(mode)
        step = dp.compile(loop.train_step_fn(config), num_replicated=1)
        new, m = step(dp.replicate(state), dp.put_batch(batch), dp.replicate(jax.random.key(1)))
        out[mode] = (dp.host_copy(new).params, float(dp.unreplicate(m).compute()["loss"]))
    diff = max(
        float(np.max(np.abs(a - b)))
        for a, b in zip(jax.tree.leaves(out["pmap"][0]), jax.tree.leaves(out["jit"][0]))
    )
    losses = [out["pmap"][1], out["jit"][1]]
    ok = diff < 1e-4 and abs(losses[0] - losses[1]) < 1e-4 * max(1.0, abs(losses[0]))
    return {"ok": ok, "max_param_diff": diff, "loss": losses}


def _demo_config(smoke: bool, fusion_name: str = "am_fbp"):
    config = base_config.demo_config(fusion_name, size="tiny" if smoke else "afew")
    with config.unlocked():
        config.data.normalize = False  # `synthetic_batches` standardises the clips itself.
        config.batch_size = 8 * jax.local_device_count() if smoke else 32
        config.optim.learning_rate = 1e-3
    return config


def synthetic_batches(config, num_clips: int, seed: int = 0):
    """In-memory batches of synthetic clips (the demo corpus's generator, no TFDS)."""
    from data_prep.builders import synthetic
    from fbp_jax.model import frontend

    spec = synthetic.CONFIGS[config.data.name.split("/")[1]]
    ta, tv = frontend.clip_frames(config.data)
    examples = [synthetic.generate_example(spec, "train", i) for i in range(num_clips)]
    batch = {
        "audio": np.zeros((num_clips, ta, config.data.num_bins), np.float32),
        "audio_mask": np.zeros((num_clips, ta), bool),
        "video": np.zeros((num_clips, tv, *config.data.video_shape), np.float32),
        "video_mask": np.zeros((num_clips, tv), bool),
        "label": np.array([e["label"] for e in examples], np.int32),
        "mask": np.ones(num_clips, np.int32),
    }
    audio = np.concatenate([e["audio"] for e in examples])
    video = np.concatenate([e["video"] for e in examples])
    am, asd = audio.mean(0), audio.std(0) + 1e-3
    vm, vsd = video.mean(0), video.std(0) + 1e-3
    for i, e in enumerate(examples):
        a, v = (e["audio"][:ta] - am) / asd, (e["video"][:tv] - vm) / vsd
        batch["audio"][i, : len(a)], batch["audio_mask"][i, : len(a)] = a, True
        batch["video"][i, : len(v)], batch["video_mask"][i, : len(v)] = v, True
    rng = np.random.default_rng(seed)
    while True:
        order = rng.permutation(num_clips)
        for start in range(0, num_clips - config.batch_size + 1, config.batch_size):
            idx = order[start : start + config.batch_size]
            yield {k: v[idx] for k, v in batch.items()}


def check_pmap(smoke: bool) -> dict[str, Any]:
    """A step pmapped over every local device equals a single-device step on the batch."""
    config = _demo_config(smoke, "am_fbp")
    with config.unlocked():
        config.model.dropout_rate = 0.0  # Dropout masks differ by device, by design.
        config.optim.learning_rate = 1e-2
    n = jax.local_device_count()
    batch = next(synthetic_batches(config, config.batch_size))
    model = network.get_model(config)
    state = steps.create_train_state(config, model, jax.random.key(0), lambda _: 1e-2)
    step = functools.partial(steps.train_step, fusion="am_fbp", rng=jax.random.key(1))
    p_step = parallel.pmap(step)
    many, m_many = p_step(parallel.replicate(state), parallel.shard(batch))
    # The reference: the whole batch on one device, without pmap (vmap names the same axis).
    one_device = jax.jit(jax.vmap(step, axis_name=parallel.AXIS))
    one, m_one = one_device(
        jax.tree.map(lambda x: jnp.asarray(x)[None], state),
        jax.tree.map(lambda x: np.asarray(x)[None], batch),
    )
    one = jax.tree.map(lambda x: x[0], one)
    m_one = jax.tree.map(lambda x: x[0], m_one)
    diffs = [
        float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
        for a, b in zip(
            jax.tree.leaves(parallel.unreplicate(many.params)),
            jax.tree.leaves(one.params),
            strict=True,
        )
    ]
    loss_many = float(parallel.unreplicate(m_many).compute()["loss"])
    loss_one = float(m_one.compute()["loss"])
    ok = max(diffs) < 1e-4 and abs(loss_many - loss_one) < 1e-4 * max(1.0, abs(loss_one))
    return {"ok": ok, "devices": n, "max_param_diff": max(diffs), "loss": [loss_many, loss_one]}


def check_training(smoke: bool) -> tuple[dict[str, Any], Any, Any]:
    """AM-FBP on in-memory synthetic clips: the loss falls. Returns (result, config, params)."""
    sizes = _sizes(smoke)
    config = _demo_config(smoke, "am_fbp")
    model = network.get_model(config)
    state = parallel.replicate(
        steps.create_train_state(config, model, jax.random.key(0), lambda _: 1e-3)
    )
    p_step = parallel.pmap(functools.partial(steps.train_step, fusion="am_fbp"), donate_state=True)
    rng = parallel.replicate(jax.random.key(2))
    losses = []
    start = time.perf_counter()
    batches = synthetic_batches(config, sizes["train_clips"])
    for _ in range(sizes["train_steps"]):
        state, m = p_step(state, parallel.shard(next(batches)), rng=rng)
        losses.append(float(parallel.unreplicate(m).compute()["loss"]))
    k = max(3, len(losses) // 10)
    first, last = float(np.mean(losses[:k])), float(np.mean(losses[-k:]))
    result = {
        "ok": last < 0.9 * first,
        "steps": len(losses),
        "first_loss": first,
        "last_loss": last,
        "steps_per_s": len(losses) / (time.perf_counter() - start),
    }
    return result, config, parallel.unreplicate(state).params


def check_export(config, params, out: str) -> dict[str, Any]:
    """The trained model through jax.export and back equals the model."""
    from fbp_jax.serving import bundle, export

    model = network.get_model(config)
    path = os.path.join(out, "export")
    names = [f"class{i}" for i in range(config.model.num_classes)]
    info = export.write_export(path, model, params, config, names, None, step=0)
    served = bundle.load_exported(path)
    batch = next(synthetic_batches(config, config.batch_size))
    from fbp_jax.model import frontend

    want = jax.nn.softmax(
        model.apply({"params": params}, frontend.model_inputs(batch, "am_fbp"))["logits"]
    )
    got = served.apply(batch)["probabilities"]
    diff = float(np.max(np.abs(np.asarray(got) - np.asarray(want))))
    return {"ok": diff < 1e-4, "platforms": info["platforms"], "max_prob_diff": diff}


def main(argv) -> None:
    del argv
    out = FLAGS.out
    os.makedirs(out, exist_ok=True)
    start = time.time()
    budget = FLAGS.budget_minutes * 60
    device = jax.local_devices()[0]
    report: dict[str, Any] = {
        "device": f"{jax.local_device_count()} x {device.platform}:{device.device_kind}",
        "jax": jax.__version__,
        "smoke": FLAGS.smoke,
        "checks": {},
    }

    def skip(name, why):
        report["checks"][name] = {"ok": None, "skipped": why}

    def run(name, fn):
        if time.time() - start > budget:
            return skip(name, "time budget spent")
        t0 = time.time()
        try:
            value = fn()
        except Exception as e:  # one failing check never hides the others
            report["checks"][name] = {"ok": False, "error": f"{type(e).__name__}: {e}"}
            return None
        result = value[0] if isinstance(value, tuple) else value
        result["seconds"] = round(time.time() - t0, 1)
        report["checks"][name] = result
        return value

    unknown = [c for c in FLAGS.checks if c not in CHECKS]
    if unknown:
        raise app.UsageError(f"unknown checks {unknown}; the checks: {list(CHECKS)}")
    wanted = set(FLAGS.checks)
    if "benchmark" in wanted:
        run("benchmark", lambda: check_benchmark(out, FLAGS.smoke, FLAGS.variants))
    if "peer" in wanted:
        run("peer", lambda: check_peer(out, FLAGS.smoke, FLAGS.peer, FLAGS.peer_python))
    if "parallel" in wanted:
        run("pmap", lambda: check_pmap(FLAGS.smoke))
        run("jit", lambda: check_jit(FLAGS.smoke))
    if wanted & {"training", "export"}:
        trained = run("training", lambda: check_training(FLAGS.smoke))
        if "export" in wanted and trained is None:  # reported, not left out of the report
            skip("export", "no trained model to export")
        elif "export" in wanted:
            run("export", lambda: check_export(trained[1], trained[2], out))
    report["seconds"] = round(time.time() - start, 1)
    io.write_json(report, os.path.join(out, "gpu_check.json"), indent=2)
    lines = [f"{report['device']}, jax {report['jax']}, {report['seconds']} s"]
    for name, r in report["checks"].items():
        status = {True: "PASS", False: "FAIL", None: "SKIP"}[r.get("ok")]
        detail = {k: v for k, v in r.items() if k not in ("ok", "table", "error")}
        lines.append(
            f"{status} {name}: {json.dumps(detail)}" + (f" {r['error']}" if "error" in r else "")
        )
    for name in ("peer", "benchmark"):
        if "table" in report["checks"].get(name, {}):
            lines += ["", report["checks"][name]["table"]]
    text = "\n".join(lines)
    io.atomic_write(os.path.join(out, "gpu_check.txt"), lambda f: f.write(text + "\n"))
    print(text)
    if any(r.get("ok") is False for r in report["checks"].values()):
        sys.exit(1)


if __name__ == "__main__":
    define_flags()
    app.run(main)
