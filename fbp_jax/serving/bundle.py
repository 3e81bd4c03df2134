"""A trained model for serving: what `predict` runs and `export` writes, from either source.

`load_serving_model(path)` takes a training workdir (through `fbp_jax.workdir`, no training
code) or an export directory written by `fbp_jax.serving.export` (only JAX needed), and gives a
`ServingModel`: the fusion variant, class names, the preprocessing settings of the training
config, the normalisation statistics and a batch -> outputs function. `ensemble(models)` (or a
path `A+B+...`) serves several models of one recipe, e.g. seeds, as the mean of their outputs.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fbp_jax.model import frontend
from fbp_jax.model import fusion as fusion_lib

SERVING_FILE = "serving.json"
MODEL_FILE = "model.jax_exported"
STATS_FILE = "norm_stats.npz"
# The `data` settings of a training config that preprocessing needs (defaults for older runs).
DATA_FIELDS = {
    "clip_seconds": None,
    "audio_fps": None,
    "video_fps": None,
    "num_bins": None,
    "video_shape": None,
    "use_video_valid": False,
    **frontend.AUDIO_VIEW_DEFAULTS,
    "video_features": "",
}


class PredictError(ValueError):
    """A file or model that cannot be used; the message names it and the problem."""


@dataclasses.dataclass
class ServingModel:
    """Everything prediction needs, from a workdir or an export directory.

    Attributes:
      source: the workdir or export directory.
      fusion: the fusion variant (decides the streams read).
      class_names: names of the classes, in output order.
      data: preprocessing settings (`DATA_FIELDS` of the training config's `data`).
      stats: normalisation statistics of the training split (per training speaker with
        `speaker_norm`: prediction then uses statistics of the clips it is given), or None.
      apply: batch {audio, audio_mask, video, video_mask} -> outputs (numpy), with
        `probabilities`, `{stream}_attention`, `{stream}_mask` and `mu` / `eta` for two streams.
      step: the checkpoint step.
      voice_floor: the export's `voice_floor.VoiceFloor` (averaged with the network's answer
        to a file read as one clip), or None.
    """

    source: str
    fusion: str
    class_names: tuple[str, ...]
    data: dict[str, Any]
    stats: dict[str, np.ndarray] | None
    apply: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]
    step: int | None = None
    voice_floor: Any = None

    @property
    def streams(self) -> tuple[str, ...]:
        return fusion_lib.streams_for(self.fusion)

    @property
    def data_config(self):
        """The preprocessing settings as a ConfigDict (what `frontend` functions take)."""
        import ml_collections

        return ml_collections.ConfigDict(self.data)


def serving_info(config, class_names: Sequence[str], step: int | None) -> dict[str, Any]:
    """The JSON-serialisable description of a model for serving (written by export)."""
    data = {k: config.data.get(k, default) for k, default in DATA_FIELDS.items()}
    data["video_shape"] = list(data["video_shape"])
    return {
        "fusion": config.model.fusion,
        "class_names": list(class_names),
        "data": data,
        "step": step,
        "corpus": config.data.name,
    }


def input_specs(data: dict, streams: Sequence[str]) -> dict[str, jax.ShapeDtypeStruct]:
    """Model input shapes with a symbolic batch dimension `b` (for `jax.export`)."""
    import ml_collections

    (b,) = jax.export.symbolic_shape("b")
    spec = frontend.input_spec(ml_collections.ConfigDict({"data": data}), 1)
    return {
        k: jax.ShapeDtypeStruct((b, *v.shape[1:]), v.dtype)
        for s in streams
        for k in frontend.STREAM_KEYS[s]
        for v in [spec[k]]
    }


def ensemble(models: Sequence[ServingModel]) -> ServingModel:
    """Models of one recipe (seeds, or the same recipe on other data) served as one: outputs
    (probabilities, logits, attention, mu) are the mean of the members' outputs.

    Raises:
      PredictError: the members differ in fusion, classes, preprocessing or statistics.
    """
    first, *rest = models
    if not rest:
        return first
    for m in rest:
        problem = mismatch(vars(first), vars(m))
        if problem:
            raise PredictError(f"{m.source}: cannot be averaged with {first.source}: {problem}")

    def apply(batch):
        outputs = [m.apply(batch) for m in models]
        return {k: np.mean([np.asarray(o[k]) for o in outputs], axis=0) for k in outputs[0]}

    # The members' voice floor, when they share one (the same export's file).
    floors = {id(m.voice_floor) for m in models}
    return dataclasses.replace(
        first,
        source="+".join(m.source for m in models),
        apply=apply,
        step=None,
        voice_floor=first.voice_floor if len(floors) == 1 else None,
    )


# Preprocessing settings that only a model reading the video stream depends on.
VIDEO_FIELDS = ("video_shape", "use_video_valid", "video_features")


def mismatch(a: dict[str, Any], b: dict[str, Any]) -> str:
    """Why two models, each {fusion, class_names, data, stats}, cannot be averaged ('' if they
    can): the same classes, preprocessing of the streams read and statistics are needed."""
    if a["fusion"] != b["fusion"]:
        return f"different fusion ({a['fusion']} vs {b['fusion']})"
    if list(a["class_names"]) != list(b["class_names"]):
        return f"different classes ({list(a['class_names'])} vs {list(b['class_names'])})"
    ignored = () if "video" in fusion_lib.streams_for(a["fusion"]) else VIDEO_FIELDS
    differ = {
        k: (a["data"].get(k), b["data"].get(k))
        for k in set(a["data"]) | set(b["data"])
        if k not in ignored and a["data"].get(k) != b["data"].get(k)
    }
    if differ:
        return "different preprocessing " + ", ".join(
            f"{k} {x!r} vs {y!r}" for k, (x, y) in sorted(differ.items())
        )

    def used(stats):
        return {k: v for k, v in (stats or {}).items() if not (ignored and k.startswith("video"))}

    sa, sb = used(a["stats"]), used(b["stats"])
    if set(sa) != set(sb) or any(not _close(sa[k], sb[k]) for k in sa):
        return "different normalisation statistics (trained on other clips)"
    return ""


def _close(x: np.ndarray, y: np.ndarray) -> bool:
    if x.shape != y.shape:
        return False
    if np.issubdtype(x.dtype, np.number) and np.issubdtype(y.dtype, np.number):
        return bool(np.allclose(x, y, rtol=1e-4, atol=1e-5))
    return bool(np.array_equal(x, y))  # speaker names


def load_serving_model(path: str, step: str | int = "best") -> ServingModel:
    """A training workdir (checkpoint `step`) or an export directory, ready to predict; `A+B`
    (paths that do not exist as one) is the ensemble of A and B.

    Raises:
      PredictError: neither, or it cannot be read.
    """
    if "+" in path and not os.path.exists(path):
        return ensemble([load_serving_model(p, step) for p in path.split("+")])
    if os.path.isfile(os.path.join(path, SERVING_FILE)):
        return load_exported(path)
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise PredictError(
            f"{path}: neither a training workdir (config.json) nor an export ({SERVING_FILE})"
        )
    from fbp_jax import extras

    workdir_lib = extras.require("fbp_jax.workdir", "train", f"reading the training workdir {path}")
    try:
        loaded = workdir_lib.load_trained(path, step)
    except workdir_lib.WorkdirError as e:
        raise PredictError(str(e)) from e
    info = serving_info(loaded.config, loaded.class_names, loaded.step)
    return ServingModel(
        path,
        loaded.fusion,
        tuple(info["class_names"]),
        info["data"],
        loaded.stats,
        loaded.apply_fn,
        loaded.step,
    )


def voice_floor_problem(
    floor_classes, face_features: int, fusion: str, class_names, data: dict[str, Any]
) -> str:
    """Why a voice floor (`voice_floor.VoiceFloor`) of `floor_classes`, reading a face row of
    `face_features` (0: none), cannot serve beside a model of `fusion`, `class_names` and
    preprocessing `data` ('' if it can): other classes, or a face row the model does not read
    (or of another width)."""
    from fbp_jax.serving import voice_floor

    if tuple(floor_classes) != tuple(class_names):
        return f"classes {list(floor_classes)}, not the model's {list(class_names)}"
    if face_features:
        face = data.get("video_features") == voice_floor.FACE_KIND
        if not (face and "video" in fusion_lib.streams_for(fusion)):
            return f"reads a face row; the model ({fusion}) reads no action-unit statistics"
        if face_features != int(np.prod(data["video_shape"])):
            return (
                f"reads a face row of {face_features} features; the model's has "
                f"{int(np.prod(data['video_shape']))}"
            )
    return ""


def load_exported(export_dir: str) -> ServingModel:
    """An export directory as a `ServingModel` (only JAX needed)."""
    info_path = os.path.join(export_dir, SERVING_FILE)
    model_path = os.path.join(export_dir, MODEL_FILE)
    for path in (info_path, model_path):
        if not os.path.isfile(path):
            raise PredictError(f"{path}: missing; not a complete export directory")
    with open(info_path) as f:
        info = json.load(f)
    with open(model_path, "rb") as f:
        exported = jax.export.deserialize(bytearray(f.read()))
    stats = None
    data = {**DATA_FIELDS, **info["data"]}
    if data["normalize"]:
        path = os.path.join(export_dir, STATS_FILE)
        if not os.path.isfile(path):
            raise PredictError(f"{path}: missing; the model standardises its inputs with it")
        with np.load(path) as f:
            stats = dict(f)
    (inputs_tree,), _ = exported.in_tree.unflatten(range(len(exported.in_avals)))
    keys = set(inputs_tree)  # The input names the model was exported with.

    def apply(batch):
        inputs = {k: jnp.asarray(batch[k]) for k in sorted(keys)}
        return jax.device_get(exported.call(inputs))

    from fbp_jax.serving import voice_floor

    floor = voice_floor.load(export_dir)
    problem = floor and voice_floor_problem(
        floor.class_names, floor.face_features, info["fusion"], info["class_names"], data
    )
    if problem:
        raise PredictError(f"{os.path.join(export_dir, voice_floor.FILE)}: {problem}")
    return ServingModel(
        export_dir,
        info["fusion"],
        tuple(info["class_names"]),
        data,
        stats,
        apply,
        info.get("step"),
        floor,
    )
