"""Export: the serialized model (jax.export), reloaded without the model code, gives the outputs
of the original model, at any batch size."""

import os

import numpy as np
import pytest

from fbp_jax import io
from fbp_jax import workdir as workdir_lib
from fbp_jax.serving import bundle, export, shipped
from tests.conftest import tiny_train_config

# One worker trains the shared runs of conftest (amfbp_workdir, audio_workdir) for all.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("trained_runs")]


def _real_batch(workdir, n):
    """The first n clips of the validation split, as the evaluation pipeline feeds them."""
    from fbp_jax import input_pipeline

    loaded = workdir_lib.load_trained(workdir)
    builder = input_pipeline.prepared_builder(loaded.config.data)
    ds = input_pipeline.create_eval_dataset(
        builder, loaded.config.data, "validation", n, loaded.stats
    )
    batch = next(iter(ds.as_numpy_iterator()))
    return loaded, {k: batch[k] for k in ("audio", "audio_mask", "video", "video_mask")}


def test_exported_model_equals_the_original(amfbp_workdir, tmp_path):
    out = str(tmp_path / "export")
    export.export_model(amfbp_workdir, out)
    assert sorted(os.listdir(out)) == sorted(
        [bundle.MODEL_FILE, bundle.STATS_FILE, bundle.SERVING_FILE]
    )
    served = bundle.load_exported(out)
    assert served.fusion == "am_fbp" and len(served.class_names) == 7
    loaded, batch = _real_batch(amfbp_workdir, 16)  # the evaluation tests' batch shape
    want = loaded.apply_fn(batch)
    for n in (16, 3):  # the batch dimension is symbolic
        got = served.apply({k: v[:n] for k, v in batch.items()})
        assert set(got) == set(want)
        for key in want:
            np.testing.assert_allclose(got[key], want[key][:n], rtol=1e-5, atol=1e-6, err_msg=key)
    np.testing.assert_array_equal(served.stats["audio_mean"], loaded.stats["audio_mean"])
    with open(os.path.join(out, bundle.MODEL_FILE), "rb") as f:  # no paths of this machine
        assert os.path.dirname(os.path.dirname(export.__file__)).encode() not in f.read()
    with pytest.raises(FileExistsError, match="exists"):
        export.export_model(amfbp_workdir, out)
    # --overwrite replaces the export and keeps the folder's other files (a card, a licence).
    with open(os.path.join(out, "MODEL_CARD.md"), "w") as f:
        f.write("# card")
    os.makedirs(os.path.join(out, "notes"))
    with open(os.path.join(out, bundle.SERVING_FILE), "w") as f:
        f.write("{}")
    export.export_model(amfbp_workdir, out, overwrite=True)
    assert sorted(os.listdir(out)) == sorted(
        [bundle.MODEL_FILE, bundle.STATS_FILE, bundle.SERVING_FILE, "MODEL_CARD.md", "notes"]
    )
    with open(os.path.join(out, "MODEL_CARD.md")) as f:
        assert f.read() == "# card"
    assert bundle.load_exported(out).fusion == "am_fbp"  # serving.json written anew


@pytest.mark.parametrize("name", shipped.available())
def test_shipped_exports_carry_no_source_paths(name):
    """Source locations would name the files of the machine that exported a model."""
    with open(os.path.join(shipped.path(name), bundle.MODEL_FILE), "rb") as f:
        assert b".py" not in f.read()


def test_seed_ensemble_is_served_as_the_mean_of_its_members(
    amfbp_workdir, audio_workdir, tiny_data_dir, tmp_path
):
    from fbp_jax.training import loop

    seed1 = str(tmp_path / "seed1")
    config = tiny_train_config(tiny_data_dir, "am_fbp", num_train_steps=8, eval_every_steps=4)
    config.seed = 1
    loop.train_and_evaluate(config, seed1)
    out = str(tmp_path / "export")
    export.export_model([amfbp_workdir, seed1], out)
    info = bundle.load_exported(out)
    members = io.read_json(os.path.join(out, bundle.SERVING_FILE))["members"]
    assert [m["workdir"] for m in members] == [os.path.abspath(amfbp_workdir), seed1]
    assert info.step is None
    _, batch = _real_batch(amfbp_workdir, 16)
    outs = [workdir_lib.load_trained(w).apply_fn(batch) for w in (amfbp_workdir, seed1)]
    want = (outs[0]["probabilities"] + outs[1]["probabilities"]) / 2
    assert not np.allclose(outs[0]["probabilities"], outs[1]["probabilities"], atol=1e-3)
    np.testing.assert_allclose(info.apply(batch)["probabilities"], want, rtol=1e-5, atol=1e-6)
    # The same ensemble from the workdirs, without exporting: `predict --model=A+B`.
    joined = bundle.load_serving_model(f"{amfbp_workdir}+{seed1}")
    np.testing.assert_allclose(joined.apply(batch)["probabilities"], want, rtol=1e-5, atol=1e-6)
    # Members must share classes, preprocessing and statistics.
    with pytest.raises(workdir_lib.WorkdirError, match="cannot be exported with"):
        export.export_model([amfbp_workdir, audio_workdir], str(tmp_path / "mixed"))
    with pytest.raises(bundle.PredictError, match="cannot be averaged"):
        bundle.load_serving_model(f"{amfbp_workdir}+{audio_workdir}")
    # A model to ship records how each member was trained instead of where it lies: one
    # command for all ({seed} filled in per member) or one per member; no workdir is written.
    command = "fbp-jax train --config=configs/x.py:all --config.seed={seed}"
    export.export_model([amfbp_workdir, seed1], out, overwrite=True, trained_by=[command])
    members = io.read_json(os.path.join(out, bundle.SERVING_FILE))["members"]
    assert members == [
        {"trained_by": command.replace("{seed}", str(s)), "step": m["step"]}
        for s, m in zip((0, 1), members, strict=True)
    ]
    export.export_model([amfbp_workdir], out, overwrite=True, trained_by="one command")
    served = io.read_json(os.path.join(out, bundle.SERVING_FILE))
    assert served["trained_by"] == "one command" and "workdir" not in served
    with pytest.raises(export.ExportError, match="one command for all 2 workdirs or one for each"):
        export.export_model([amfbp_workdir, seed1], out, overwrite=True, trained_by=["a", "b", "c"])
