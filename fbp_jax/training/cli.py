"""Trains one model of the AM-FBP family.

    fbp-jax train --config=configs/afew_amfbp.py [--workdir=workdirs/afew_amfbp]
    python train.py --config=configs/demo.py:g_fbp          # the same, from the repository

Any config field can be overridden: --config.optim.learning_rate=3e-4. Rerunning the same
command resumes from the last checkpoint; a second process on a workdir in use refuses to start.

Several hosts: one process per host (or per GPU), each started with the same flags plus
--coordinator_address=host0:port --num_processes=N --process_id=i (or the environment variables
JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID; under srun or mpirun nothing).
"""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS


def define_flags() -> None:
    config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
    flags.DEFINE_string(
        "workdir", None, "Where checkpoints and logs go (default: workdirs/<config>)."
    )
    flags.DEFINE_string(
        "coordinator_address", None, "Multi-process: host:port of process 0's coordinator."
    )
    flags.DEFINE_integer("num_processes", None, "Multi-process: number of processes.")
    flags.DEFINE_integer("process_id", None, "Multi-process: this process's index in [0, N).")
    flags.DEFINE_bool(
        "distributed",
        None,
        "Start jax.distributed: default when a multi-process value is set (flags or JAX_* "
        "environment variables) or srun/mpirun started several processes; --distributed "
        "forces it (JAX detects the cluster), --nodistributed prevents it.",
    )
    flags.mark_flags_as_required(["config"])


def default_workdir(config_path: str, fusion: str) -> str:
    name = os.path.splitext(os.path.basename(config_path.split(":")[0]))[0]
    return os.path.join("workdirs", name if name != "demo" else f"demo_{fusion}")


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError("Too many command-line arguments.")
    import jax
    import tensorflow as tf

    from fbp_jax import input_pipeline, io, parallel
    from fbp_jax import workdir as workdir_lib
    from fbp_jax.training import loop

    # TensorFlow only feeds data: keep it off the accelerators that JAX uses.
    tf.config.experimental.set_visible_devices([], "GPU")
    parallel.initialize_distributed(
        FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id, FLAGS.distributed
    )
    config = FLAGS.config
    workdir = FLAGS.workdir or default_workdir(FLAGS["config"].config_filename, config.model.fusion)
    logging.info(
        "JAX process %d / %d; local devices: %s",
        jax.process_index(),
        jax.process_count(),
        jax.local_devices(),
    )
    logging.info("Workdir: %s", workdir)
    try:
        with io.exit_on_full_disk():
            result = loop.train_and_evaluate(config, workdir)
    except (input_pipeline.DatasetNotPreparedError, workdir_lib.WorkdirError) as e:
        logging.error("%s", e)
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    logging.info("Result: %s", result)
