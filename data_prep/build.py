r"""Builds a corpus of the project into TFDS records.

Usage::

    python -m data_prep.build synthetic_av/afew --data_dir=/tmp/synth_data
    python -m data_prep.build synthetic_av/tiny --data_dir=/tmp/synth_data --overwrite

The argument is ``NAME/CONFIG`` (``NAME`` alone builds the builder's default config). ``NAME`` is
a key of ``data_prep.builders.BUILDERS``; corpora that need files the user owns (IEMOCAP, AFEW) read them from
``--manual_dir``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

import tensorflow_datasets as tfds
from absl import app, flags, logging

from data_prep.builders import BUILDERS, base, builder_class
from fbp_jax import io

FLAGS = flags.FLAGS


def make_builder(name: str, data_dir: str | None = None):
    """Returns the TFDS builder of ``NAME[/CONFIG]``.

    Args:
      name: a key of ``BUILDERS``, optionally followed by ``/CONFIG``.
      data_dir: where the records live (``None``: TFDS default).

    Returns:
      A ``tfds.core.DatasetBuilder``.

    Raises:
      ValueError: unknown corpus or config; the message lists the valid ones.
    """
    corpus, _, config = name.partition("/")
    cls = builder_class(corpus)
    configs = [c.name for c in cls.BUILDER_CONFIGS]
    if config and config not in configs:
        raise ValueError(f"Unknown config {config!r} of {corpus!r}; valid configs: {configs}.")
    return cls(config=config or None, data_dir=data_dir)


def build(
    name: str,
    data_dir: str | None = None,
    manual_dir: str | None = None,
    overwrite: bool = False,
    num_workers: int | None = None,
    face_features_dir: str | None = None,
    duration_mismatch: str = "keep",
    beam_runner: str | None = None,
    beam_options: Sequence[str] = (),
):
    """Generates the records of ``NAME[/CONFIG]`` (a no-op if they already exist).

    Args:
      name: a key of ``BUILDERS``, optionally followed by ``/CONFIG``.
      data_dir: where the records are written (``None``: TFDS default).
      manual_dir: source files of corpora that cannot be downloaded.
      overwrite: regenerate even if this version exists.
      num_workers: extraction processes of the real corpora (None: all cores).
      face_features_dir: per-clip .npy face features of the AFEW / CREMA-D 'features'
        config (None: MANUAL_DIR/face_features).
      duration_mismatch: 'keep' (with a note) or 'skip' clips whose streams' durations
        disagree (data_prep.features.sync).
      beam_runner: extract inside TFDS's Apache Beam pipeline with this runner
        ('DirectRunner', 'DataflowRunner', 'FlinkRunner', 'SparkRunner'; needs apache-beam);
        None: the local process pool.
      beam_options: Beam pipeline options, e.g. ['--direct_num_workers=2',
        '--direct_running_mode=multi_processing'].

    Returns:
      The prepared ``tfds.core.DatasetBuilder``.
    """
    builder = make_builder(name, data_dir)
    builder.num_workers = num_workers
    builder.duration_mismatch = duration_mismatch
    if face_features_dir is not None:
        builder.face_features_dir = face_features_dir
    beam = {}
    if beam_runner:
        from apache_beam.options.pipeline_options import PipelineOptions

        builder.use_beam = True
        beam = {
            "beam_runner": beam_runner,
            "beam_options": PipelineOptions([f"--runner={beam_runner}", *beam_options]),
        }
    mode = (
        tfds.download.GenerateMode.FORCE_REDOWNLOAD
        if overwrite
        else tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS
    )
    config = tfds.download.DownloadConfig(manual_dir=manual_dir, download_mode=mode, **beam)
    start = time.time()
    folder = data_dir or tfds.core.constants.DATA_DIR
    with io.full_disk_as_one_line(
        folder,
        f"the build of {name}",
        base.RERUN,
        needed=lambda: getattr(builder, "estimated_bytes", None),
    ):
        builder.download_and_prepare(download_config=config)
    elapsed = time.time() - start
    info = builder.info
    logging.info("%s %s in %s (%.1f s)", info.full_name, "ready", builder.data_dir, elapsed)
    for split, split_info in sorted(info.splits.items()):
        logging.info(
            "  %-12s %6d examples  %s",
            split,
            split_info.num_examples,
            _human_size(split_info.num_bytes),
        )
    logging.info("  size on disk: %s", _human_size(_dir_size(builder.data_dir)))
    return builder


def _dir_size(path: str) -> int:
    total = 0
    for root, _, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total


def _human_size(num_bytes: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if num_bytes < 1024 or unit == "GiB":
            return f"{num_bytes:.1f} {unit}" if unit != "B" else f"{num_bytes} B"
        num_bytes /= 1024
    return f"{num_bytes:.1f} GiB"


def main(argv: Sequence[str]) -> None:
    if len(argv) != 2:
        raise app.UsageError(f"Expected one NAME[/CONFIG] argument; corpora: {sorted(BUILDERS)}.")
    with io.exit_on_full_disk():
        _build_from_flags(argv)


def _build_from_flags(argv: Sequence[str]) -> None:
    build(
        argv[1],
        data_dir=FLAGS.data_dir,
        manual_dir=FLAGS.manual_dir,
        overwrite=FLAGS.overwrite,
        num_workers=FLAGS.num_workers,
        face_features_dir=FLAGS.face_features_dir,
        duration_mismatch=FLAGS.duration_mismatch,
        beam_runner=FLAGS.beam_runner,
        beam_options=FLAGS.beam_options,
    )


def define_flags() -> None:
    """The command's flags (defined on demand, so that importers can have flags of the same
    names)."""
    flags.DEFINE_string(
        "data_dir",
        None,
        "Where TFDS writes the records (default: TFDS default, ~/tensorflow_datasets).",
    )
    flags.DEFINE_string(
        "manual_dir", None, "Folder with the source files of corpora that cannot be downloaded."
    )
    flags.DEFINE_bool(
        "overwrite", False, "Regenerate the records even if this version already exists."
    )
    flags.DEFINE_integer(
        "num_workers", None, "Feature-extraction processes (default: all cores; 0: in-process)."
    )
    flags.DEFINE_string(
        "face_features_dir",
        None,
        "AFEW / CREMA-D 'features' config: folder of <clip_id>.npy [frames, D1] face features "
        "(default: MANUAL_DIR/face_features).",
    )
    flags.DEFINE_enum(
        "duration_mismatch",
        "keep",
        ["keep", "skip"],
        "Clips whose audio and video (or markers) durations disagree beyond the tolerance "
        "of data_prep.features.sync: kept with a note, or skipped.",
    )
    flags.DEFINE_string(
        "beam_runner",
        None,
        "Extract inside TFDS's Apache Beam pipeline with this runner (DirectRunner, "
        "DataflowRunner, FlinkRunner, SparkRunner); default: the local process pool.",
    )
    flags.DEFINE_list(
        "beam_options",
        [],
        "Beam pipeline options, e.g. --beam_options=--direct_num_workers=2,"
        "--direct_running_mode=multi_processing",
    )


if __name__ == "__main__":
    define_flags()
    app.run(main)
