"""End to end on the tiny synthetic corpus: training beats chance, checkpoints keep the last and
the best (a killed job: tests/test_faults.py), fusion encoders start from single-modality runs, and a missing
corpus gives a clear error."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from fbp_jax import workdir as workdir_lib
from fbp_jax.training import loop
from tests.conftest import tiny_train_config

pytestmark = pytest.mark.slow


def test_tiny_run_beats_chance_and_keeps_last_and_best(tiny_data_dir, tmp_path):
    config = tiny_train_config(tiny_data_dir, "am_fbp", eval_every_steps=7, num_epochs=20)
    result = loop.train_and_evaluate(config, str(tmp_path))
    steps_per_epoch = 112 // 16
    assert result["step"] == config.num_epochs * steps_per_epoch
    # 56 validation clips: chance is 8 +- 2.6 right; 0.3 is 17 right.
    assert result["best_eval_accuracy"] > 0.3, result
    assert 0 < result["best_eval_unweighted_accuracy"] <= 1
    manager = workdir_lib.create_checkpoint_manager(str(tmp_path))
    saved = set(manager.all_steps())
    assert result["step"] in saved and result["best_step"] in saved
    assert len(saved) <= workdir_lib.KEEP_LATEST + 1, saved
    assert os.path.exists(tmp_path / "norm_stats.npz")
    assert json.loads((tmp_path / "result.json").read_text())["step"] == result["step"]


def test_fusion_initialised_from_single_modality_runs(tiny_data_dir, tmp_path):
    runs = {}
    for stream in ("audio", "video"):
        config = tiny_train_config(tiny_data_dir, stream, num_train_steps=6)
        loop.train_and_evaluate(config, str(tmp_path / stream))
        runs[stream] = str(tmp_path / stream)
    config = tiny_train_config(tiny_data_dir, "g_fbp", num_train_steps=1)
    with config.unlocked():
        config.init.audio_workdir = runs["audio"]
        config.init.video_workdir = runs["video"]
        config.optim.learning_rate = 0.0
    loop.train_and_evaluate(config, str(tmp_path / "g_fbp"))
    fused = workdir_lib.load_params(str(tmp_path / "g_fbp"), "latest")[0]
    for stream in ("audio", "video"):
        src = workdir_lib.load_params(runs[stream])[0]
        for name in (f"{stream}_encoder", f"{stream}_attention"):
            for a, b in zip(_leaves(src[name]), _leaves(fused[name])):
                np.testing.assert_array_equal(a, b)
    # An audio encoder shown another view of the audio than it was trained on is refused.
    with config.unlocked():
        config.data.voiced_db = 35.0
    with pytest.raises(workdir_lib.WorkdirError, match="voiced_db 0.0 there, 35.0 here"):
        loop.train_and_evaluate(config, str(tmp_path / "other_view"))


def _leaves(tree):
    import jax

    return jax.tree.leaves(tree)


def train_cmd(data_dir, workdir, steps, *extra):
    """train.py on the tiny synthetic corpus for `steps` steps (checkpoints every 5)."""
    return [
        sys.executable,
        "train.py",
        "--config=configs/demo.py",
        f"--workdir={workdir}",
        "--config.data.name=synthetic_av/tiny",
        f"--config.data.data_dir={data_dir}",
        "--config.data.num_bins=40",
        "--config.data.video_shape=(32,)",
        "--config.data.clip_seconds=1.2",
        "--config.model.fbp.num_trunks=3",
        "--config.batch_size=16",
        f"--config.num_train_steps={steps}",
        "--config.checkpoint_every_steps=5",
        "--config.eval_every_steps=1000",
        "--config.log_every_steps=5",
        "--config.optim.learning_rate=3e-3",
        *extra,
    ]


def test_missing_corpus_exits_with_a_clear_message(tmp_path, repo_root):
    proc = subprocess.run(
        [
            sys.executable,
            "train.py",
            "--config=configs/afew_amfbp.py",
            f"--config.data.data_dir={tmp_path}",
            f"--workdir={tmp_path / 'w'}",
        ],
        check=False,
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": repo_root},
    )
    assert proc.returncode != 0
    assert str(tmp_path) in proc.stderr
    assert "data_prep.build" in proc.stderr and "tasks.sh demo" in proc.stderr
