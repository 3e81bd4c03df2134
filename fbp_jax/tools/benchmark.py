"""Speed of the model family on the devices present: a table and a JSON file.

    python -m fbp_jax.tools.benchmark                                   # demo sizes, all variants
    python -m fbp_jax.tools.benchmark --config=afew --fcn=alexnet --variants=am_fbp --batch_sizes=64
    python -m fbp_jax.tools.benchmark --dtypes=float32,bfloat16 --json=bench.json
    python -m fbp_jax.tools.benchmark --scaling=1,2,4 --variants=am_fbp   # emulated CPU devices

For each fusion variant, dtype and global batch size it measures, after warm-up and blocking on
the results: train-step and inference examples/s (median over repeats, with min-max spread),
compile time of the train step, FLOPs per example from XLA's cost analysis, the achieved FLOP/s
and its ratio to the dense-matmul FLOP/s measured on the same device in the same run, and the
peak device memory where JAX reports it (GPUs; on CPUs the compiled buffer sizes instead).
Batches are in-memory arrays fed exactly as in training (sharded over the devices, by pmap or
by jit over a mesh: `--parallel=pmap,jit` times both), so the command needs no TensorFlow and
runs unchanged on a CPU or a GPU.

`--scaling=1,2,4` measures data-parallel scaling instead: it reruns itself in one subprocess per
device count N with N emulated CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count=N)
and a global batch of N x `--scaling_batch`, and reports the train examples/s of each N and the
efficiency rate_N / (N x rate_1). Emulated devices share the machine's cores, so on a small CPU
this measures the overhead of the data-parallel step (sharding, pmean of the gradients), not
the speed-up that N real devices would give.
"""

import functools
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging

from fbp_jax import base_config, parallel
from fbp_jax.model import encoders, frontend, fusion, network
from fbp_jax.training import steps

FLAGS = flags.FLAGS


def define_flags() -> None:
    flags.DEFINE_enum("config", "demo", ["demo", "afew", "iemocap"], "Base config of the shapes.")
    flags.DEFINE_enum(
        "fcn", None, list(base_config.FCN_PRESETS), "Audio FCN preset (default: config's)."
    )
    flags.DEFINE_enum(
        "conv_impl",
        None,
        ["auto", *encoders.CONV_IMPLS],
        "Convolution implementation of the audio FCN (default: the config's, 'auto').",
    )
    flags.DEFINE_list("variants", sorted(fusion.FUSION_STREAMS), "Fusion variants.")
    flags.DEFINE_list("batch_sizes", ["32", "64"], "Global batch sizes.")
    flags.DEFINE_list("dtypes", ["float32"], "Computation dtypes (float32, bfloat16).")
    flags.DEFINE_list(
        "parallel", ["pmap"], f"Data-parallel paths timed, of {list(parallel.MODES)}."
    )
    flags.DEFINE_float("clip_seconds", None, "Clip duration (default: the config's).")
    flags.DEFINE_integer("steps", 3, "Timed steps per repeat.")
    flags.DEFINE_integer("repeats", 3, "Repeats (the median is reported).")
    flags.DEFINE_string("json", None, "Write the rows as JSON here.")
    flags.DEFINE_integer("matmul_size", 2048, "Side of the square matmul measuring the peak.")
    flags.DEFINE_string(
        "pipeline_data_dir",
        None,
        "Also measure the tf.data training pipeline alone on the prepared corpus of the config "
        "under this TFDS data dir (needs TensorFlow).",
    )
    flags.DEFINE_integer("pipeline_batches", 60, "Batches timed for the pipeline measurement.")
    flags.DEFINE_string(
        "pipeline_dataset",
        None,
        "The TFDS dataset the pipeline measurement reads (default: the config's), e.g. "
        "synthetic_av/afew with --config=afew for the paper's AFEW sizes.",
    )
    flags.DEFINE_list(
        "scaling",
        [],
        "Emulated CPU device counts (e.g. 1,2,4): measure scaling at a fixed per-device batch.",
    )
    flags.DEFINE_integer("scaling_batch", 16, "Per-device batch of the scaling measurement.")


def get_config(name: str, fusion_name: str, dtype: str):
    """The config whose shapes are benchmarked."""
    config = (
        base_config.demo_config(fusion_name)
        if name == "demo"
        else base_config.get_config(name, fusion_name)
    )
    with config.unlocked():
        config.model.dtype = dtype
        if FLAGS.fcn:
            config.model.audio = base_config.fcn_config(FLAGS.fcn)
        if FLAGS.conv_impl:
            config.model.audio.conv_impl = FLAGS.conv_impl
        if FLAGS.clip_seconds:
            config.data.clip_seconds = FLAGS.clip_seconds
    return config


def random_batch(config, batch_size: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A full batch of random inputs with valid masks and labels."""
    rng = np.random.default_rng(seed)
    batch = {}
    for key, spec in frontend.input_spec(config, batch_size).items():
        batch[key] = (
            np.ones(spec.shape, bool)
            if spec.dtype == bool
            else rng.standard_normal(spec.shape, dtype=np.float32)
        )
    batch["label"] = rng.integers(0, config.data.num_classes, batch_size).astype(np.int32)
    batch["mask"] = np.ones(batch_size, np.int32)
    return batch


def _timed(fn, steps: int, repeats: int) -> list[float]:
    """Seconds per call of `fn` (which returns something to block on), per repeat."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            out = fn()
        jax.block_until_ready(out)
        times.append((time.perf_counter() - start) / steps)
    return times


def matmul_peak(dtype: str, n: int = 2048, repeats: int = 5) -> float:
    """Dense matmul FLOP/s of one local device (best of `repeats`)."""
    a = jnp.ones((n, n), dtype)
    f = jax.jit(lambda x: x @ x)
    jax.block_until_ready(f(a))
    best = min(_timed(lambda: f(a), 3, repeats))
    return 2 * n**3 / best


def _flops(compiled) -> float | None:
    analysis = compiled.cost_analysis()
    if isinstance(analysis, list):
        analysis = analysis[0] if analysis else None
    return float(analysis["flops"]) if analysis and "flops" in analysis else None


def _memory_bytes(compiled) -> tuple[int | None, str]:
    stats = jax.local_devices()[0].memory_stats()
    if stats and "peak_bytes_in_use" in stats:
        return int(stats["peak_bytes_in_use"]), "peak"
    m = compiled.memory_analysis()
    if m is None:
        return None, ""
    total = m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
    return int(total - m.alias_size_in_bytes), "buffers"


def benchmark_variant(
    variant: str, dtype: str, batch_size: int, peak: float, mode: str = "pmap"
) -> dict:
    """Measures one (variant, dtype, batch size, data-parallel path)."""
    config = get_config(FLAGS.config, variant, dtype)
    model = network.get_model(config)
    state = steps.create_train_state(config, model, jax.random.key(0), lambda _: 1e-4)
    n_params = sum(x.size for x in jax.tree.leaves(state.params))
    dp = parallel.DataParallel(mode)
    state = dp.replicate(state)
    rng = dp.replicate(jax.random.key(1))
    batch = dp.put_batch(random_batch(config, batch_size))
    train_step = lambda state, batch, rng: steps.train_step(state, batch, fusion=variant, rng=rng)
    p_train = dp.compile(train_step, donate_state=True, num_replicated=1)
    p_infer = dp.compile(functools.partial(steps.predict_step, fusion=variant))

    start = time.perf_counter()
    compiled = p_train.lower(state, batch, rng).compile()
    compile_s = time.perf_counter() - start
    flops = _flops(compiled)  # Of one device's share of the batch.
    memory, memory_kind = _memory_bytes(compiled)

    box = {"state": state}

    def train():
        box["state"], metrics = p_train(box["state"], batch, rng)
        return metrics

    jax.block_until_ready(train())  # Warm-up (and the jit cache of p_train).
    train_times = _timed(train, FLAGS.steps, FLAGS.repeats)
    infer = lambda: p_infer(box["state"], batch)["logits"]
    jax.block_until_ready(infer())
    infer_times = _timed(infer, FLAGS.steps, FLAGS.repeats)

    step_s = statistics.median(train_times)
    per_device = batch_size // jax.device_count()
    row = {
        "variant": variant,
        "parallel": mode,
        "dtype": dtype,
        "batch": batch_size,
        "devices": jax.device_count(),
        "params": n_params,
        "compile_s": compile_s,
        "train_ex_s": batch_size / step_s,
        "train_ex_s_min": batch_size / max(train_times),
        "train_ex_s_max": batch_size / min(train_times),
        "infer_ex_s": batch_size / statistics.median(infer_times),
        "train_gflop_per_ex": (flops / (per_device if mode == "pmap" else batch_size) / 1e9)
        if flops
        else None,
        "memory_mb": memory / 2**20 if memory is not None else None,
        "memory_kind": memory_kind,
    }
    if flops:
        # pmap's cost analysis is of one device's share; jit's of the whole global program.
        achieved = (flops * jax.local_device_count() if mode == "pmap" else flops) / step_s
        row["achieved_gflop_s"] = achieved / 1e9
        row["matmul_peak_fraction"] = achieved / (peak * jax.local_device_count())
    return row


def pipeline_config(batch_size: int):
    """The benchmarked config, reading `--pipeline_dataset` (shapes from its records)."""
    from fbp_jax import input_pipeline

    config = get_config(FLAGS.config, FLAGS.variants[0], FLAGS.dtypes[0])
    with config.unlocked():
        config.data.data_dir = FLAGS.pipeline_data_dir
        config.batch_size = batch_size
        if FLAGS.pipeline_dataset:
            config.data.name = FLAGS.pipeline_dataset
            features = input_pipeline.prepared_builder(config.data).info.features
            config.data.video_shape = tuple(features["video"].shape[1:])
            config.data.num_bins = features["audio"].shape[1]
    return config


def pipeline_rates(batch_size: int) -> dict[str, float]:
    """Examples/s of the training input pipeline alone, stage by stage.

    `read`: the records parsed into tensors (cached in memory after the first epoch, as in
    training); `pipeline`: the whole training pipeline (crop, pad, standardise, augment, batch);
    `to_device`: the same batches also sharded and copied to the devices (what the loop does).
    """
    import tensorflow as tf

    from fbp_jax import input_pipeline

    tf.config.experimental.set_visible_devices([], "GPU")
    config = pipeline_config(batch_size)
    data = input_pipeline.create_datasets(config, None)
    n = FLAGS.pipeline_batches

    def rate(iterator, transform=lambda b: b):
        for _ in range(data.steps_per_epoch + 2):  # One epoch fills the cache.
            transform(next(iterator))
        start = time.perf_counter()
        out = None
        for _ in range(n):
            out = transform(next(iterator))
        jax.block_until_ready(out)
        return n * batch_size / (time.perf_counter() - start)

    builder = input_pipeline.prepared_builder(config.data)
    # Ragged clips cannot be batched as they are: `read` times the parse alone, clip by clip.
    unbatched = iter(
        builder.as_dataset(split=config.data.train_split).cache().repeat().prefetch(64)
    )
    read_rate = rate(
        iter(range(10**9)), lambda _: [next(unbatched) for _ in range(batch_size)][-1]["audio"]
    )
    return {
        "read": read_rate,
        "pipeline": rate(data.train_iter(0)),
        "to_device": rate(
            data.train_iter(0), lambda b: parallel.device_put_sharded(parallel.shard(b))
        ),
    }


def format_table(rows: list[dict], peaks: dict[str, float]) -> str:
    """The rows as a plain-text table."""
    head = (
        f"{'variant':<9} {'parallel':<8} {'dtype':<8} {'batch':>5} {'params':>10} "
        f"{'compile s':>9} "
        f"{'train ex/s (min-max)':>22} {'infer ex/s':>10} {'GFLOP/ex':>8} {'GFLOP/s':>8} "
        f"{'% matmul':>8} {'mem MB':>8}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        spread = f"{r['train_ex_s']:.1f} ({r['train_ex_s_min']:.1f}-{r['train_ex_s_max']:.1f})"
        fmt = lambda v, f: format(v, f) if v is not None else "n/a"
        lines.append(
            f"{r['variant']:<9} {r.get('parallel', 'pmap'):<8} {r['dtype']:<8} {r['batch']:>5} "
            f"{r['params']:>10,} "
            f"{r['compile_s']:>9.1f} {spread:>22} {r['infer_ex_s']:>10.1f} "
            f"{fmt(r.get('train_gflop_per_ex'), '.3g'):>8} "
            f"{fmt(r.get('achieved_gflop_s'), '.1f'):>8} "
            f"{fmt(100 * r['matmul_peak_fraction'] if 'matmul_peak_fraction' in r else None, '.1f'):>8} "
            f"{fmt(r['memory_mb'], '.0f'):>8}"
        )
    device = jax.local_devices()[0]
    peak_txt = ", ".join(f"{k} {v / 1e9:.1f} GFLOP/s" for k, v in peaks.items())
    lines.append(
        f"{jax.device_count()} x {device.platform}:{device.device_kind}; dense matmul peak per "
        f"device: {peak_txt}; memory: "
        + ("peak in use" if rows and rows[0]["memory_kind"] == "peak" else "compiled buffers")
    )
    return "\n".join(lines)


def _run_with_devices(devices: int, batch_size: int) -> list[dict]:
    """The benchmark rows of a subprocess with `devices` emulated CPU devices."""
    xla_flags = re.sub(
        r"--xla_force_host_platform_device_count=\S+", "", os.environ.get("XLA_FLAGS", "")
    )
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": f"{xla_flags} --xla_force_host_platform_device_count={devices}".strip(),
        "PYTHONPATH": os.pathsep.join(
            [os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]
            + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        ),
    }
    forwarded = (
        "config",
        "fcn",
        "variants",
        "dtypes",
        "parallel",
        "clip_seconds",
        "steps",
        "repeats",
    )
    args = [
        f"--{name}={','.join(value) if isinstance(value, list) else value}"
        for name in forwarded
        if (value := FLAGS[name].value) is not None
    ]
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "rows.json")
        cmd = [
            sys.executable,
            "-m",
            "fbp_jax.tools.benchmark",
            *args,
            f"--batch_sizes={batch_size}",
        ]
        cmd += [f"--matmul_size={min(FLAGS.matmul_size, 256)}", f"--json={out}"]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if proc.returncode:
            raise RuntimeError(f"benchmark with {devices} devices failed:\n{proc.stderr[-3000:]}")
        with open(out) as f:
            return json.load(f)["rows"]


def scaling(device_counts: list[int], per_device_batch: int) -> tuple[list[dict], str]:
    """Train examples/s over emulated device counts and the efficiency against one device."""
    if not device_counts or min(device_counts) < 1:
        raise ValueError(f"--scaling needs positive device counts, got {device_counts}")
    counts = sorted(set(device_counts) | {1})
    runs = {n: _run_with_devices(n, n * per_device_batch) for n in counts}
    rows = []
    for base in runs[1]:
        key = (base["variant"], base["dtype"], base["parallel"])
        for n in counts:
            (r,) = [r for r in runs[n] if (r["variant"], r["dtype"], r["parallel"]) == key]
            if r["devices"] != n:
                raise RuntimeError(f"asked for {n} emulated devices, the run had {r['devices']}")
            rows.append(
                {
                    "variant": key[0],
                    "dtype": key[1],
                    "parallel": key[2],
                    "devices": n,
                    "batch": r["batch"],
                    "train_ex_s": r["train_ex_s"],
                    "speedup": r["train_ex_s"] / base["train_ex_s"],
                    "efficiency": r["train_ex_s"] / (n * base["train_ex_s"]),
                }
            )
    head = (
        f"{'variant':<9} {'parallel':<8} {'dtype':<8} {'devices':>7} {'batch':>5} {'train ex/s':>10} "
        f"{'speed-up':>8} {'eff.':>6}"
    )
    lines = [head, "-" * len(head)]
    lines += [
        f"{r['variant']:<9} {r['parallel']:<8} {r['dtype']:<8} {r['devices']:>7} {r['batch']:>5} "
        f"{r['train_ex_s']:>10.1f} {r['speedup']:>8.2f} {r['efficiency']:>6.2f}"
        for r in rows
    ]
    lines.append(
        f"emulated CPU devices on {os.cpu_count()} cores, {per_device_batch} examples per "
        "device; speed-up = rate_N / rate_1, efficiency = rate_N / (N x rate_1). The devices "
        "share the cores, so a speed-up of 1 (efficiency 1/N) means no data-parallel overhead; "
        "this is not what N real devices would give."
    )
    return rows, "\n".join(lines)


def main(argv):
    del argv
    if FLAGS.scaling:
        rows, table = scaling([int(n) for n in FLAGS.scaling], FLAGS.scaling_batch)
        print(table)
        if FLAGS.json:
            os.makedirs(os.path.dirname(os.path.abspath(FLAGS.json)), exist_ok=True)
            with open(FLAGS.json, "w") as f:
                json.dump({"scaling": rows, "table": table}, f, indent=2)
        return
    logging.info("Devices: %s", jax.local_devices())
    peaks = {dtype: matmul_peak(dtype, FLAGS.matmul_size) for dtype in FLAGS.dtypes}
    rows = []
    for variant in FLAGS.variants:
        fusion.streams_for(variant)
        for dtype in FLAGS.dtypes:
            for batch_size in map(int, FLAGS.batch_sizes):
                for mode in FLAGS.parallel:
                    row = benchmark_variant(variant, dtype, batch_size, peaks[dtype], mode)
                    logging.info("%s", row)
                    rows.append(row)
    table = format_table(rows, peaks)
    result = {"rows": rows, "matmul_peak_flop_s": peaks}
    if FLAGS.pipeline_data_dir:
        rates = {b: pipeline_rates(b) for b in map(int, FLAGS.batch_sizes)}
        result["pipeline_ex_s"] = rates
        clip = pipeline_config(1).data.clip_seconds
        for b, r in rates.items():
            table += (
                f"\ntf.data pipeline ({clip:g} s clips), batch {b}: records read "
                f"{r['read']:.0f}, whole pipeline {r['pipeline']:.0f}, and to the devices "
                f"{r['to_device']:.0f} examples/s"
            )
    result["table"] = table
    print(table)
    if FLAGS.json:
        os.makedirs(os.path.dirname(os.path.abspath(FLAGS.json)), exist_ok=True)
        with open(FLAGS.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    define_flags()
    app.run(main)
