r"""Export a trained model for serving without the training code (`jax.export`).

    python -m fbp_jax.serving.export --workdir=W --output_dir=E [--step=best] [--platforms=cpu,cuda]
    python -m fbp_jax.serving.predict --model=E clip.wav

The export directory holds
  model.jax_exported   the serialized StableHLO of batch -> outputs with the parameters inside
                       and a symbolic batch size (`jax.export`); inputs {audio [b, Ta, bins],
                       audio_mask [b, Ta]} and/or {video [b, Tv, ...], video_mask [b, Tv]} as
                       the model's streams need; outputs probabilities, logits, embedding,
                       {stream}_attention, {stream}_mask and, for two streams, mu and eta
  serving.json         fusion, class names, preprocessing settings, checkpoint step
  norm_stats.npz       the training split's normalisation statistics (if the model uses them)

Reloading needs only JAX (`load_exported`, no Flax, no model code, no TensorFlow):

    exported = jax.export.deserialize(open('E/model.jax_exported', 'rb').read())
    outputs = exported.call(inputs)

The directory is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging

from fbp_jax.serving import predict

MODEL_FILE = "model.jax_exported"
STATS_FILE = "norm_stats.npz"


def input_specs(data: dict, streams: Sequence[str]) -> dict[str, jax.ShapeDtypeStruct]:
    """Input shapes with a symbolic batch dimension `b`."""
    (b,) = jax.export.symbolic_shape("b")
    ta = round(data["clip_seconds"] * data["audio_fps"])
    tv = round(data["clip_seconds"] * data["video_fps"])
    specs = {}
    if "audio" in streams:
        specs["audio"] = jax.ShapeDtypeStruct((b, ta, data["num_bins"]), jnp.float32)
        specs["audio_mask"] = jax.ShapeDtypeStruct((b, ta), jnp.bool_)
    if "video" in streams:
        specs["video"] = jax.ShapeDtypeStruct((b, tv, *data["video_shape"]), jnp.float32)
        specs["video_mask"] = jax.ShapeDtypeStruct((b, tv), jnp.bool_)
    return specs


def export_model(
    workdir: str,
    output_dir: str,
    *,
    step: str = "best",
    platforms: Sequence[str] | None = None,
    overwrite: bool = False,
) -> str:
    """Exports a workdir's checkpoint; returns the export directory.

    Args:
      workdir: a training workdir.
      output_dir: the directory to create.
      step: 'best' (chosen on validation), 'latest' or a step number.
      platforms: e.g. ('cpu', 'cuda'); default: the platform JAX runs on here.
      overwrite: replace an existing `output_dir`.
    """
    from fbp_jax.evaluation import evaluation

    if os.path.exists(output_dir) and not overwrite:
        raise FileExistsError(f"{output_dir} exists; pass --overwrite to replace it")
    loaded = evaluation.load_model(workdir, step)
    info = predict.serving_info(
        loaded.config, evaluation.get_class_names(loaded.config), loaded.step
    )
    model, params = loaded.model, loaded.params

    def serve(inputs):
        out = model.apply({"params": params}, inputs, train=False)
        out["probabilities"] = jax.nn.softmax(out["logits"].astype(jnp.float32), axis=-1)
        return out

    specs = input_specs(info["data"], loaded.streams)
    exported = jax.export.export(jax.jit(serve), platforms=platforms)(specs)
    info["platforms"] = list(exported.platforms)
    info["inputs"] = {k: [str(d) for d in v.shape] for k, v in specs.items()}
    info["workdir"] = os.path.abspath(workdir)

    tmp = f"{output_dir.rstrip(os.sep)}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        with open(os.path.join(tmp, MODEL_FILE), "wb") as f:
            f.write(exported.serialize())
        if loaded.stats is not None:
            np.savez(os.path.join(tmp, STATS_FILE), **loaded.stats)
        with open(os.path.join(tmp, predict.SERVING_FILE), "w") as f:
            json.dump(info, f, indent=1)
        if os.path.exists(output_dir):
            shutil.rmtree(output_dir)
        os.replace(tmp, output_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logging.info("Exported %s (step %d) to %s.", workdir, loaded.step, output_dir)
    return output_dir


def load_exported(export_dir: str) -> predict.ServingModel:
    """An export directory as a `predict.ServingModel` (only JAX needed)."""
    info_path = os.path.join(export_dir, predict.SERVING_FILE)
    model_path = os.path.join(export_dir, MODEL_FILE)
    for path in (info_path, model_path):
        if not os.path.isfile(path):
            raise predict.PredictError(f"{path}: missing; not a complete export directory")
    with open(info_path) as f:
        info = json.load(f)
    with open(model_path, "rb") as f:
        exported = jax.export.deserialize(bytearray(f.read()))
    stats = None
    if info["data"]["normalize"]:
        with np.load(os.path.join(export_dir, STATS_FILE)) as f:
            stats = dict(f)
    (inputs_tree,), _ = exported.in_tree.unflatten(range(len(exported.in_avals)))
    keys = set(inputs_tree)  # The input names the model was exported with.

    def apply(batch):
        inputs = {k: jnp.asarray(batch[k]) for k in sorted(keys)}
        return jax.device_get(exported.call(inputs))

    return predict.ServingModel(
        export_dir,
        info["fusion"],
        tuple(info["class_names"]),
        info["data"],
        stats,
        apply,
        info.get("step"),
    )


# ---------------------------------------------------------------------------------------------
# Command line

FLAGS = flags.FLAGS


def define_flags() -> None:
    flags.DEFINE_string("workdir", None, "The training workdir.")
    flags.DEFINE_string("output_dir", None, "The export directory to write.")
    flags.DEFINE_string("step", "best", "Checkpoint: 'best', 'latest' or a step number.")
    flags.DEFINE_list("platforms", [], "Platforms to lower for (default: this machine's).")
    flags.DEFINE_bool("overwrite", False, "Replace an existing export directory.")


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1 or not FLAGS.workdir or not FLAGS.output_dir:
        raise app.UsageError("usage: python -m fbp_jax.serving.export --workdir=W --output_dir=E")
    from fbp_jax.evaluation import evaluation

    try:
        path = export_model(
            FLAGS.workdir,
            FLAGS.output_dir,
            step=FLAGS.step,
            platforms=FLAGS.platforms or None,
            overwrite=FLAGS.overwrite,
        )
    except (evaluation.EvaluationError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    with open(os.path.join(path, predict.SERVING_FILE)) as f:
        info = json.load(f)
    size = os.path.getsize(os.path.join(path, MODEL_FILE))
    print(
        f"exported {FLAGS.workdir} (step {info['step']}, {info['fusion']}) for "
        f"{', '.join(info['platforms'])}: {path} ({size / 2**20:.1f} MiB)"
    )


if __name__ == "__main__":
    define_flags()
    app.run(main)
