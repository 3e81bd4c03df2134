r"""Export a trained model for serving without the training code (`jax.export`).

    fbp-jax export --workdir=W --output_dir=E [--step=best] [--platforms=cpu,cuda]
    fbp-jax export --workdir=W1,W2,W3 --output_dir=E   # a seed ensemble, served as one model
    fbp-jax predict --model=E clip.wav

The export directory holds
  model.jax_exported   the serialized StableHLO of batch -> outputs with the parameters inside
                       and a symbolic batch size (`jax.export`); inputs {audio [b, Ta, bins],
                       audio_mask [b, Ta]} and/or {video [b, Tv, ...], video_mask [b, Tv]} as
                       the model's streams need; outputs probabilities, logits, embedding,
                       {stream}_attention, {stream}_mask and, for two streams, mu and eta
  serving.json         fusion, class names, preprocessing settings, checkpoint step (for an
                       ensemble: `members`, each workdir and step; outputs are their mean);
                       with `--trained_by`, how each run was trained instead of its workdir
  norm_stats.npz       the training split's normalisation statistics (if the model uses them)

Reloading needs only JAX (`bundle.load_exported`, no Flax, no model code, no TensorFlow):

    exported = jax.export.deserialize(open('E/model.jax_exported', 'rb').read())
    outputs = exported.call(inputs)

The directory is written under a temporary name and renamed when complete. `--overwrite`
replaces these three files and keeps any other file of the folder (a model card, a licence).

A model exported to be shipped records how each run was trained, not where it lies on the
machine that trained it: `--trained_by=COMMAND` once for every run (`{seed}` is replaced by
the run's seed), or once per workdir, in their order:

    fbp-jax export --workdir=W0,W1,W2 --output_dir=E --step=latest \
        --trained_by="fbp-jax train --config=configs/ravdess_audio.py:all --config.seed={seed}"
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

from fbp_jax import io
from fbp_jax import workdir as workdir_lib
from fbp_jax.serving import bundle


class ExportError(ValueError):
    """An export asked for in a way that cannot be done (`fbp-jax export` prints it and exits
    with 2)."""


def export_model(
    workdir: str | Sequence[str],
    output_dir: str,
    *,
    step: str = "best",
    platforms: Sequence[str] | None = None,
    overwrite: bool = False,
    trained_by: str | Sequence[str] = (),
) -> str:
    """Exports a workdir's checkpoint; returns the export directory.

    Args:
      workdir: a training workdir, or several of one recipe (seeds): their mean is exported.
      output_dir: the directory to create.
      step: 'best' (chosen on validation), 'latest' or a step number.
      platforms: e.g. ('cpu', 'cuda'); default: the platform JAX runs on here.
      overwrite: replace the export in an existing `output_dir` (its other files are kept).
      trained_by: how the runs were trained, recorded instead of their workdirs: one command
        for all (`{seed}` replaced by each run's seed) or one per workdir.
    """
    if os.path.exists(output_dir) and not overwrite:
        raise FileExistsError(f"{output_dir} exists; pass --overwrite to replace it")
    workdirs = [workdir] if isinstance(workdir, str) else list(workdir)
    trained_by = [trained_by] if isinstance(trained_by, str) else list(trained_by)
    if trained_by and len(trained_by) not in (1, len(workdirs)):
        raise ExportError(
            f"--trained_by: give one command for all {len(workdirs)} workdirs or one for each, "
            f"got {len(trained_by)}"
        )
    members = [workdir_lib.load_trained(w, step) for w in workdirs]
    first = members[0]
    for m in members[1:]:
        problem = bundle.mismatch(_described(first), _described(m))
        if not problem and m.config.model != first.config.model:
            problem = "different model configs"
        if problem:
            raise workdir_lib.WorkdirError(
                f"{m.workdir}: cannot be exported with {first.workdir}: {problem}"
            )
    origins = _origins(members, trained_by)
    if len(members) == 1:
        extra = origins[0]
    else:
        extra = {"members": [{**o, "step": m.step} for o, m in zip(origins, members, strict=True)]}
    write_export(
        output_dir,
        first.model,
        [m.params for m in members],
        first.config,
        first.class_names,
        first.stats,
        step=first.step if len(members) == 1 else None,
        platforms=platforms,
        extra=extra,
    )
    logging.info(
        "Exported %s to %s.", ", ".join(f"{m.workdir} (step {m.step})" for m in members), output_dir
    )
    return output_dir


def _origins(members, trained_by: list[str]) -> list[dict[str, str]]:
    """Per member {"workdir": its absolute path} or, with `trained_by`, {"trained_by": ...}."""
    if not trained_by:
        return [{"workdir": os.path.abspath(m.workdir)} for m in members]
    commands = trained_by * len(members) if len(trained_by) == 1 else trained_by
    return [
        {"trained_by": c.replace("{seed}", str(m.config.seed))}
        for c, m in zip(commands, members, strict=True)
    ]


def _described(loaded) -> dict:
    return {**bundle.serving_info(loaded.config, loaded.class_names, None), "stats": loaded.stats}


def write_export(
    output_dir: str,
    model,
    params,
    config,
    class_names: Sequence[str],
    stats: dict[str, np.ndarray] | None,
    *,
    step: int | None = None,
    platforms: Sequence[str] | None = None,
    extra: dict | None = None,
) -> dict:
    """Serialises `model` with `params` (jax.export, symbolic batch) into `output_dir`, with
    the preprocessing settings of `config` and the statistics; returns serving.json's dict.
    `params` may be a list (members of an ensemble): the outputs are then their mean."""
    info = bundle.serving_info(config, class_names, step)
    members = params if isinstance(params, list) else [params]

    def serve_one(p, inputs):
        out = model.apply({"params": p}, inputs, train=False)
        out["probabilities"] = jax.nn.softmax(out["logits"].astype(jnp.float32), axis=-1)
        return out

    def serve(inputs):
        outs = [serve_one(p, inputs) for p in members]
        return jax.tree.map(lambda *x: sum(x) / len(x), *outs)

    streams = bundle.fusion_lib.streams_for(config.model.fusion)
    specs = bundle.input_specs(info["data"], streams)
    # Lowered without source locations: they would carry the exporting machine's file paths.
    locations = jax.config.jax_traceback_in_locations_limit
    jax.config.update("jax_traceback_in_locations_limit", 0)
    try:
        exported = jax.export.export(jax.jit(serve), platforms=platforms)(specs)
    finally:
        jax.config.update("jax_traceback_in_locations_limit", locations)
    info["platforms"] = list(exported.platforms)
    info["inputs"] = {k: [str(d) for d in v.shape] for k, v in specs.items()}
    info.update(extra or {})
    with io.atomic_directory(output_dir) as tmp:
        with open(os.path.join(tmp, bundle.MODEL_FILE), "wb") as f:
            f.write(exported.serialize())
        if stats is not None:
            np.savez(os.path.join(tmp, bundle.STATS_FILE), **stats)
        with open(os.path.join(tmp, bundle.SERVING_FILE), "w") as f:
            json.dump(info, f, indent=1)
        _keep_other_files(output_dir, tmp)
    return info


EXPORT_FILES = (bundle.MODEL_FILE, bundle.STATS_FILE, bundle.SERVING_FILE)


def _keep_other_files(old_dir: str, new_dir: str) -> None:
    """Copies what an older export folder holds besides the export (a model card, a licence)
    into the new one, so that re-exporting a model does not lose its documentation."""
    if not os.path.isdir(old_dir):
        return
    for name in sorted(set(os.listdir(old_dir)) - set(EXPORT_FILES)):
        src, dst = os.path.join(old_dir, name), os.path.join(new_dir, name)
        if os.path.isdir(src):
            shutil.copytree(src, dst)
        else:
            shutil.copy2(src, dst)


# ---------------------------------------------------------------------------------------------
# Command line

FLAGS = flags.FLAGS


def define_flags() -> None:
    flags.DEFINE_list("workdir", [], "The training workdir (several: their mean, one model).")
    flags.DEFINE_string("output_dir", None, "The export directory to write.")
    flags.DEFINE_string("step", "best", "Checkpoint: 'best', 'latest' or a step number.")
    flags.DEFINE_list("platforms", [], "Platforms to lower for (default: this machine's).")
    flags.DEFINE_bool(
        "overwrite", False, "Replace the export in an existing directory (other files kept)."
    )
    flags.DEFINE_multi_string(
        "trained_by",
        [],
        "How the runs were trained, recorded instead of their workdirs (a shipped model): "
        "once for all ({seed} becomes each run's seed) or once per workdir.",
    )


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1 or not FLAGS.workdir or not FLAGS.output_dir:
        raise app.UsageError("usage: fbp-jax export --workdir=W --output_dir=E")
    try:
        path = export_model(
            FLAGS.workdir,
            FLAGS.output_dir,
            step=FLAGS.step,
            platforms=FLAGS.platforms or None,
            overwrite=FLAGS.overwrite,
            trained_by=FLAGS.trained_by,
        )
    except (workdir_lib.WorkdirError, FileExistsError, ExportError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    info = io.read_json(os.path.join(path, bundle.SERVING_FILE))
    size = os.path.getsize(os.path.join(path, bundle.MODEL_FILE))
    steps = [m["step"] for m in info.get("members", [])] or [info["step"]]
    print(
        f"exported {','.join(FLAGS.workdir)} (step {','.join(map(str, steps))}, {info['fusion']}) for "
        f"{', '.join(info['platforms'])}: {path} ({size / 2**20:.1f} MiB)"
    )


if __name__ == "__main__":
    define_flags()
    app.run(main)
