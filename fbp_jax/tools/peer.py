r"""Times a PyTorch peer of the model at our benchmark's shapes, for a side-by-side table.

    python -m fbp_jax.tools.peer --peer=path/to/amfbp_torch.py --fcn=alexnet --batch=64 \
        --dtypes=float32,bfloat16 --json=peer.json

The peer is a file the user has (the same AM-FBP model written in PyTorch, with an `AMFBP`
module class and the FCN presets `ALEX` and `SMALL`); nothing of it is part of this project.
This module only loads it, builds the model at the shapes of `fbp_jax.tools.benchmark` (clip
length, spectrogram bins, face features, batch), and times its training step (Adam,
cross-entropy, forward and backward) on the GPU when PyTorch sees one, else on the CPU:
float32, and bfloat16 under `torch.autocast` (the usual PyTorch mixed precision, parameters in
float32 as ours). Train examples/s: median over repeats, min-max spread, after two warm-up
steps. It needs PyTorch, not JAX.
"""

from __future__ import annotations

import importlib.util
import json
import statistics
import sys
import time
from typing import Any

from absl import app, flags

# Our FCN presets and the peer's names for the same stacks.
PEER_FCN = {"alexnet": "ALEX", "small": "SMALL"}

FLAGS = flags.FLAGS


def define_flags() -> None:
    flags.DEFINE_string("peer", None, "The peer's Python file (amfbp_torch.py).")
    flags.DEFINE_enum("fcn", "alexnet", list(PEER_FCN), "Audio FCN preset (both sides).")
    flags.DEFINE_string("fusion", "am_fbp", "Fusion variant of the peer's model.")
    flags.DEFINE_integer("batch", 64, "Batch size.")
    flags.DEFINE_float("clip_seconds", 6.4, "Clip length (100 spectrogram frames/s, 25 video).")
    flags.DEFINE_integer("bins", 200, "Spectrogram bins.")
    flags.DEFINE_integer("video_dim", 1024, "Face features per frame.")
    flags.DEFINE_integer("classes", 7, "Classes.")
    flags.DEFINE_list("dtypes", ["float32", "bfloat16"], "float32 and/or bfloat16 (autocast).")
    flags.DEFINE_integer("steps", 5, "Timed steps per repeat.")
    flags.DEFINE_integer("repeats", 3, "Repeats (the median is reported).")
    flags.DEFINE_string("json", None, "Write the rows here as JSON.")


def load_peer(path: str):
    """The peer's module, imported from its file (under the name `fbp_peer`)."""
    spec = importlib.util.spec_from_file_location("fbp_peer", path)
    if spec is None or spec.loader is None:
        raise ValueError(f"{path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name in ("AMFBP", *PEER_FCN.values()):
        if not hasattr(module, name):
            raise ValueError(f"{path}: has no {name}; not the AM-FBP peer")
    return module


def time_peer(
    path: str,
    *,
    fcn: str = "alexnet",
    fusion: str = "am_fbp",
    batch: int = 64,
    clip_seconds: float = 6.4,
    bins: int = 200,
    video_dim: int = 1024,
    classes: int = 7,
    dtype: str = "float32",
    steps: int = 5,
    repeats: int = 3,
) -> dict[str, Any]:
    """Train examples/s of the peer's model at these shapes and dtype (see the module doc)."""
    import torch
    import torch.nn.functional as F

    peer = load_peer(path)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    model = peer.AMFBP(classes, video_dim, fcn=getattr(peer, PEER_FCN[fcn]), fusion=fusion)
    model = model.to(device)
    opt = torch.optim.Adam(model.parameters(), 1e-4)
    t, frames = round(clip_seconds * 100), round(clip_seconds * 25)
    spec = torch.randn(batch, bins, t, device=device)
    video = torch.randn(batch, frames, video_dim, device=device)
    a_mask = torch.ones(batch, t, dtype=torch.bool, device=device)
    v_mask = torch.ones(batch, frames, dtype=torch.bool, device=device)
    labels = torch.randint(0, classes, (batch,), device=device)
    autocast = dtype == "bfloat16"
    if dtype not in ("float32", "bfloat16"):
        raise ValueError(f"dtype must be float32 or bfloat16, got {dtype!r}")

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=autocast):
            loss = F.cross_entropy(model(spec, a_mask, video, v_mask).float(), labels)
        loss.backward()
        opt.step()

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    for _ in range(2):
        step()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        sync()
        times.append((time.perf_counter() - start) / steps)
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    return {
        "framework": f"torch {torch.__version__}",
        "device": f"{device}:{name}",
        "threads": torch.get_num_threads(),
        "fcn": fcn,
        "fusion": fusion,
        "dtype": dtype,
        "batch": batch,
        "train_ex_s": batch / statistics.median(times),
        "train_ex_s_min": batch / max(times),
        "train_ex_s_max": batch / min(times),
    }


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    if not FLAGS.peer:
        raise app.UsageError("--peer=path/to/amfbp_torch.py is needed")
    rows = []
    for dtype in FLAGS.dtypes:
        row = time_peer(
            FLAGS.peer,
            fcn=FLAGS.fcn,
            fusion=FLAGS.fusion,
            batch=FLAGS.batch,
            clip_seconds=FLAGS.clip_seconds,
            bins=FLAGS.bins,
            video_dim=FLAGS.video_dim,
            classes=FLAGS.classes,
            dtype=dtype,
            steps=FLAGS.steps,
            repeats=FLAGS.repeats,
        )
        print(json.dumps(row), flush=True)
        rows.append(row)
    if FLAGS.json:
        with open(FLAGS.json, "w") as f:
            json.dump({"rows": rows}, f, indent=2)
    sys.stdout.flush()


if __name__ == "__main__":
    define_flags()
    app.run(main)
