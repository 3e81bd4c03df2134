"""The demo: synthetic corpus -> audio, video, G-FBP and AM-FBP -> one table.

    fbp-jax demo [--data_dir=data] [--workdir=workdirs/demo] [--dtype=bfloat16] [--size=tiny]

Builds the synthetic corpus if it is missing (data_prep/builders/synthetic.py), trains the two
single-modality systems, then G-FBP and AM-FBP with their encoders initialised from those
(paper IV trains the fusion on top of the single-modality streams), and prints the validation
accuracy (WA) and unweighted accuracy (UA) of the checkpoint each run chose on validation.
Reruns resume: finished runs are not trained again.
"""

import os
import time

import jax
import tensorflow as tf
from absl import app, flags, logging

from fbp_jax import base_config
from fbp_jax.training import loop

FLAGS = flags.FLAGS


def define_flags() -> None:
    flags.DEFINE_string("data_dir", "data", "TFDS data dir for the synthetic corpus.")
    flags.DEFINE_enum(
        "size",
        "afew",
        list(base_config.DEMO_SIZES),
        "'afew': the README's demo (AFEW-like sizes, ~8 min on 2 cores); 'tiny': seconds.",
    )
    flags.DEFINE_string("workdir", os.path.join("workdirs", "demo"), "Parent of the run workdirs.")
    flags.DEFINE_list(
        "variants", ["audio", "video", "g_fbp", "am_fbp"], "Fusion variants to train."
    )
    flags.DEFINE_integer("num_epochs", None, "Override the demo config's epochs (all variants).")
    flags.DEFINE_integer("fusion_epochs", 6, "Epochs of the fusion variants (initialised runs).")
    flags.DEFINE_enum(
        "dtype",
        "float32",
        ["float32", "bfloat16"],
        "Computation dtype of every run (model.dtype); parameters and optimiser state stay float32.",
    )


def format_table(rows: list[dict]) -> str:
    """A plain-text table of the demo results."""
    header = (
        f"{'variant':<10} {'params':>9} {'val WA':>7} {'val UA':>7} {'best step':>9} "
        f"{'steps/s':>8} {'minutes':>7}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r['variant']:<10} {r['num_params']:>9,} {100 * r['best_eval_accuracy']:>6.2f}% "
            f"{100 * r['best_eval_unweighted_accuracy']:>6.2f}% {r['best_step']:>9} "
            f"{r.get('train_steps_per_sec', float('nan')):>8.2f} {r['minutes']:>7.1f}"
        )
    return "\n".join(lines)


def main(argv):
    del argv
    tf.config.experimental.set_visible_devices([], "GPU")
    from data_prep import build

    build.build(f"synthetic_av/{FLAGS.size}", data_dir=FLAGS.data_dir)
    rows = []
    for variant in FLAGS.variants:
        config = base_config.demo_config(variant, FLAGS.size)
        with config.unlocked():
            config.data.data_dir = FLAGS.data_dir
            config.model.dtype = FLAGS.dtype
            if FLAGS.num_epochs:
                config.num_epochs = FLAGS.num_epochs
            if variant not in ("audio", "video"):
                config.num_epochs = FLAGS.fusion_epochs
                config.optim.lr_decay_epochs = ()
                for stream in ("audio", "video"):
                    if stream in FLAGS.variants:
                        config.init[f"{stream}_workdir"] = os.path.join(FLAGS.workdir, stream)
        start = time.time()
        logging.info("Training %s.", variant)
        result = loop.train_and_evaluate(config, os.path.join(FLAGS.workdir, variant))
        rows.append({"variant": variant, "minutes": (time.time() - start) / 60, **result})
    table = format_table(rows)
    logging.info("Demo results:\n%s", table)
    print(
        f"\nSynthetic AFEW-like corpus, validation split ({jax.device_count()} device(s), "
        f"{FLAGS.dtype}); "
        f"checkpoint chosen on validation accuracy.\n{table}"
    )


if __name__ == "__main__":
    define_flags()
    app.run(main)
