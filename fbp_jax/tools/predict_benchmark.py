r"""Time and peak memory of `predict` on long recordings: a table.

    fbp-jax predict-benchmark --minutes=1,10,60 [--model=ravdess-audio] [--format=flac]

For each length it writes a synthetic recording (speech-like voiced stretches of 2-6 s, with
the harmonics and syllable rhythm of `data_prep.testclips.speech_like`, between pauses of
room noise of 0.5-3 s) block by block into a temporary file, then predicts its timeline in a
fresh process (the command's own code path: chunked reading, windows every quarter window)
and reports the wall time, the speed against real time and the peak resident memory of that
process (what the operating system counts, imports included). Each length runs once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence

import numpy as np
from absl import app, flags

RATE = 16000
FLAGS = flags.FLAGS


def define_flags() -> None:
    flags.DEFINE_list("minutes", ["1", "10", "60"], "Recording lengths in minutes.")
    flags.DEFINE_string("model", "ravdess-audio", "The model (a shipped name, export or workdir).")
    flags.DEFINE_enum("format", "flac", ["flac", "wav", "ogg"], "Container of the recordings.")
    flags.DEFINE_string("json", None, "Write the rows here as JSON.")
    flags.DEFINE_string("child", None, "(internal) predict this file and print JSON.")


def write_recording(path: str, minutes: float, seed: int = 0) -> None:
    """Speech-like stretches between pauses, written in blocks (memory stays small)."""
    import soundfile

    from data_prep import testclips

    rng = np.random.default_rng(seed)
    total = int(minutes * 60 * RATE)
    written = 0
    with soundfile.SoundFile(path, "w", RATE, 1) as f:
        while written < total:
            pause = rng.normal(0, 2e-3, int(rng.uniform(0.5, 3.0) * RATE)).astype(np.float32)
            voice = testclips.speech_like(float(rng.uniform(2.0, 6.0)), RATE, seed=int(written))
            voice = 0.3 * voice[:, 0] / max(float(np.abs(voice).max()), 1e-6)
            block = np.concatenate([pause, voice.astype(np.float32)])[: total - written]
            f.write(block)
            written += len(block)


def _child(path: str, model_name: str) -> None:
    import resource

    from fbp_jax.serving import predict

    model = predict.resolve_model(model_name)
    start = time.perf_counter()
    ((_, t),) = predict.predict_files(model, [path])
    seconds = time.perf_counter() - start
    if isinstance(t, str):
        raise SystemExit(f"error: {t}")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "seconds": seconds,
                "windows": t.num_windows,
                "voiced_windows": int(t.voiced.sum()),
                "duration_s": t.duration_s,
                "peak_mb": peak_mb,
            }
        )
    )


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    if FLAGS.child:
        _child(FLAGS.child, FLAGS.model)
        return
    rows = []
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        for minutes in map(float, FLAGS.minutes):
            path = os.path.join(tmp, f"recording_{minutes:g}min.{FLAGS.format}")
            write_recording(path, minutes)
            cmd = [
                sys.executable,
                "-m",
                "fbp_jax.tools.predict_benchmark",
                f"--child={path}",
                f"--model={FLAGS.model}",
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
            if proc.returncode:
                raise SystemExit(f"predicting {path} failed:\n{proc.stderr[-3000:]}")
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            row.update(minutes=minutes, megabytes_on_disk=os.path.getsize(path) / 2**20)
            rows.append(row)
            os.remove(path)
    head = (
        f"{'audio':>8} {'file MB':>8} {'windows':>8} {'voiced':>7} {'seconds':>8} "
        f"{'x real time':>11} {'peak MB':>8}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['minutes']:>6g} m {r['megabytes_on_disk']:>8.1f} {r['windows']:>8} "
            f"{r['voiced_windows']:>7} {r['seconds']:>8.1f} "
            f"{r['duration_s'] / r['seconds']:>11.1f} {r['peak_mb']:>8.0f}"
        )
    lines.append(
        f"model {FLAGS.model}, {os.cpu_count()} CPU cores; peak MB: resident memory of the "
        "predicting process, imports and the compiled model included"
    )
    table = "\n".join(lines)
    print(table)
    if FLAGS.json:
        with open(FLAGS.json, "w") as f:
            json.dump({"rows": rows, "table": table}, f, indent=2)


if __name__ == "__main__":
    define_flags()
    app.run(main)
