r"""The paper's analysis figures for a trained workdir, with a short Markdown report.

    python -m fbp_jax.evaluation.report --workdir=W [--split=S] [--step=best] [--output_dir=W/report] \
        [--compare=W2,W3] [--attention_from=W2] [--clips=id1,id2 | --num_clips=3]

Evaluates the checkpoint (as `fbp-jax evaluate`) on the split (default: the config's
test split, else its validation split) and writes into `--output_dir` (default `W/report`):

  fig6_attention.png        per chosen clip: its spectrogram (log power, the model's crop) and
                            the attention weights over time of the audio and video streams,
                            scaled so that 1 is uniform attention (paper Fig. 6); dashed: the
                            same clips in the `--attention_from` systems (e.g. video only)
  fig7_mu_per_class.png     mean audio adaptive factor mu = |e_a| / (|e_a| + |e_v|) per true
                            class, with standard errors (Fig. 7; two-stream models only)
  fig8_learning_curves.png  validation loss and accuracy against the step for this run and the
                            `--compare` runs, read from their TensorBoard logs (Fig. 8)
  fig9_tsne.png             t-SNE of the fused embeddings, coloured by true class (Fig. 9)
  fig10_confusion.png       confusion matrix, rows normalised, with counts (Fig. 10)
  report.md                 metrics, per-class accuracy, mu per class and the figures
  metrics.json, predictions.csv   the evaluation itself

Files are written under a temporary name and renamed; report.md comes last.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Sequence
from typing import Any

import matplotlib
import numpy as np
from absl import app, flags, logging
from matplotlib.figure import Figure

from fbp_jax import io
from fbp_jax import workdir as workdir_lib
from fbp_jax.evaluation import evaluate as evaluate_lib
from fbp_jax.evaluation import predictions as predictions_lib
from fbp_jax.metrics import percent

FIGURES = {
    "attention": "fig6_attention.png",
    "mu": "fig7_mu_per_class.png",
    "curves": "fig8_learning_curves.png",
    "tsne": "fig9_tsne.png",
    "confusion": "fig10_confusion.png",
}
REPORT_FILE = "report.md"
MAX_FREQ_HZ = 4000.0  # The spectrogram band of every corpus (data_prep.features.audio).


def _save(fig, path: str) -> None:
    with io.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")  # A pyplot-free Figure: no global state.


# ---------------------------------------------------------------------------------------------
# Learning curves (Fig. 8)


def read_scalars(workdir: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Scalars of a run's TensorBoard event files: {tag: (steps, values)}, sorted by step.

    A resumed run has several event files; the last value written for a step wins.
    """
    from tensorboard.backend.event_processing import event_accumulator as ea
    from tensorboard.util import tensor_util

    if not os.path.isdir(workdir) or not any(
        f.startswith("events.out.tfevents") for f in os.listdir(workdir)
    ):
        raise predictions_lib.EvaluationError(f"{workdir}: no TensorBoard event files")
    acc = ea.EventAccumulator(workdir, size_guidance={ea.TENSORS: 0, ea.SCALARS: 0})
    acc.Reload()
    out = {}
    for tag in acc.Tags()["tensors"]:
        if tag.startswith("_"):
            continue
        by_step = {}
        for e in acc.Tensors(tag):
            by_step[e.step] = float(tensor_util.make_ndarray(e.tensor_proto))
        steps = np.array(sorted(by_step))
        out[tag] = (steps, np.array([by_step[s] for s in steps]))
    for tag in acc.Tags()["scalars"]:
        by_step = {e.step: e.value for e in acc.Scalars(tag)}
        steps = np.array(sorted(by_step))
        out.setdefault(tag, (steps, np.array([by_step[s] for s in steps])))
    return out


def plot_learning_curves(runs: dict[str, str], path: str) -> dict[str, dict[str, float]]:
    """Validation loss and accuracy of several runs ({label: workdir}) against the step.

    Returns:
      {label: {'best_eval_accuracy', 'best_step', 'last_eval_loss'}} of the runs plotted.
    """
    fig = Figure(figsize=(11, 4))
    axes = fig.subplots(1, 2)
    finals = {}
    for label, workdir in runs.items():
        try:
            scalars = read_scalars(workdir)
        except predictions_lib.EvaluationError as e:
            logging.warning("Learning curves: %s", e)
            continue
        if "eval_loss" not in scalars or "eval_accuracy" not in scalars:
            logging.warning("Learning curves: %s has no eval_loss / eval_accuracy.", workdir)
            continue
        steps, loss = scalars["eval_loss"]
        (line,) = axes[0].plot(steps, loss, marker="o", ms=3, label=label)
        steps_acc, acc = scalars["eval_accuracy"]
        axes[1].plot(steps_acc, 100 * acc, marker="o", ms=3, color=line.get_color(), label=label)
        if "train_loss" in scalars:
            ts, tl = scalars["train_loss"]
            axes[0].plot(ts, tl, ls=":", lw=1, color=line.get_color())
        best = int(np.argmax(acc))
        finals[label] = {
            "best_eval_accuracy": float(acc[best]),
            "best_step": int(steps_acc[best]),
            "last_eval_loss": float(loss[-1]),
        }
    axes[0].set(xlabel="step", ylabel="cross-entropy", title="validation loss (dotted: train)")
    axes[1].set(xlabel="step", ylabel="accuracy (%)", title="validation accuracy (WA)")
    for ax in axes:
        ax.grid(alpha=0.3)
        if finals:
            ax.legend(fontsize=8)
    _save(fig, path)
    return finals


# ---------------------------------------------------------------------------------------------
# Per-clip figures


def _time_axis(num_steps: int, clip_frames: int, fps: float) -> np.ndarray:
    """Centre time (s) of each of `num_steps` encoder steps covering `clip_frames` frames."""
    return (np.arange(num_steps) + 0.5) * clip_frames / num_steps / fps


def relative_attention(weights: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Attention weights times the number of valid steps (1 = uniform); NaN on padding."""
    mask = np.asarray(mask, bool)
    out = np.asarray(weights, np.float64) * max(int(mask.sum()), 1)
    return np.where(mask, out, np.nan)


def plot_attention(
    predictions: predictions_lib.Predictions,
    clip_ids: Sequence[str],
    data_config: Any,
    stats: dict[str, np.ndarray] | None,
    path: str,
    others: dict[str, predictions_lib.Predictions] | None = None,
) -> None:
    """Paper Fig. 6: spectrogram and attention over time of each clip in `clip_ids`."""
    names = predictions.class_names
    index = {c: i for i, c in enumerate(predictions.clip_ids)}
    fig = Figure(figsize=(5.2 * len(clip_ids), 6.2))
    axes = fig.subplots(2, len(clip_ids), squeeze=False, sharex="col")
    fig.subplots_adjust(wspace=0.45, hspace=0.25)
    audio_fps, video_fps = data_config.audio_fps, data_config.video_fps
    for col, clip_id in enumerate(clip_ids):
        i = index[clip_id]
        inputs = predictions.outputs["inputs"][clip_id]
        ax_spec, ax_att = axes[0, col], axes[1, col]
        if "audio" in inputs:
            spec = np.asarray(inputs["audio"], np.float64)
            if stats is not None and "speakers" not in stats:
                spec = spec * stats["audio_std"] + stats["audio_mean"]
            spec[~np.asarray(inputs["audio_mask"], bool)] = np.nan
            frames = spec.shape[0]
            im = ax_spec.imshow(
                spec.T,
                origin="lower",
                aspect="auto",
                cmap="magma",
                extent=[0, frames / audio_fps, 0, MAX_FREQ_HZ / 1000],
            )
            # An inset colour bar keeps the spectrogram as wide as the attention panel below.
            fig.colorbar(im, cax=ax_spec.inset_axes([1.02, 0.0, 0.04, 1.0]), label="log power")
            if col == 0:
                ax_spec.set_ylabel("frequency (kHz)")
        else:
            ax_spec.text(0.5, 0.5, "video-only model:\nno spectrogram", ha="center", va="center")
            ax_spec.set_axis_off()
        label, pred = names[predictions.labels[i]], names[predictions.predictions[i]]
        title = (
            f"{clip_id}\ntrue {label}, predicted {pred} ({predictions.probabilities[i].max():.2f})"
        )
        if "mu" in predictions.outputs:
            title += f", mu={predictions.outputs['mu'][i]:.2f}"
        ax_spec.set_title(title, fontsize=9)
        systems = [("this model", predictions, "-")]
        systems += [(name, p, "--") for name, p in (others or {}).items() if clip_id in p.clip_ids]
        for sys_name, p, style in systems:
            j = list(p.clip_ids).index(clip_id)
            for stream, fps, colour in (
                ("audio", audio_fps, "tab:blue"),
                ("video", video_fps, "tab:orange"),
            ):
                key = f"{stream}_attention"
                if key not in p.outputs:
                    continue
                weights = p.outputs[key][j]
                mask = p.outputs[f"{stream}_mask"][j]
                frames = round(data_config.clip_seconds * fps)
                t = _time_axis(len(weights), frames, fps)
                ax_att.plot(
                    t,
                    relative_attention(weights, mask),
                    style,
                    color=colour,
                    lw=1.4 if style == "-" else 1.0,
                    marker="o" if stream == "audio" else None,
                    ms=3,
                    label=f"{stream}, {sys_name}",
                )
        ax_att.axhline(1.0, color="grey", lw=0.6, ls=":")
        ax_att.set_xlabel("time in the crop (s)")
        if col == 0:
            ax_att.set_ylabel("attention x valid steps (1 = uniform)")
        ax_att.legend(fontsize=7)
        ax_att.grid(alpha=0.3)
    fig.suptitle("Attention over time (paper Fig. 6)")
    _save(fig, path)


def mu_per_class(predictions: predictions_lib.Predictions) -> list[dict[str, Any]]:
    """Mean, standard error and count of mu per true class."""
    mu = np.asarray(predictions.outputs["mu"], np.float64)
    rows = []
    for c, name in enumerate(predictions.class_names):
        x = mu[predictions.labels == c]
        sem = float(x.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else float("nan")
        rows.append(
            {
                "class": name,
                "count": len(x),
                "mean": float(x.mean()) if len(x) else None,
                "sem": sem,
            }
        )
    return rows


def plot_mu(rows: list[dict[str, Any]], overall: float, path: str) -> None:
    """Paper Fig. 7: mean audio adaptive factor mu per class."""
    fig = Figure(figsize=(7, 3.8))
    ax = fig.subplots()
    present = [r for r in rows if r["count"]]
    x = np.arange(len(present))
    means = [r["mean"] for r in present]
    sems = [0 if np.isnan(r["sem"]) else r["sem"] for r in present]
    ax.bar(x, means, yerr=sems, capsize=3, color="tab:blue", alpha=0.8)
    ax.axhline(overall, color="k", ls="--", lw=0.8, label=f"all clips: {overall:.3f}")
    ax.set_xticks(x, [f"{r['class']}\n(n={r['count']})" for r in present], fontsize=8)
    lo = min(m - s for m, s in zip(means, sems, strict=True))
    hi = max(m + s for m, s in zip(means, sems, strict=True))
    pad = max(0.02, 0.3 * (hi - lo))
    ax.set_ylim(max(0.0, lo - pad), min(1.0, hi + pad))
    ax.set_ylabel("mean mu (audio share)")
    ax.set_title("Audio adaptive factor per class (paper Fig. 7), +- standard error")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    _save(fig, path)


def plot_tsne(predictions: predictions_lib.Predictions, path: str, seed: int = 0) -> None:
    """Paper Fig. 9: t-SNE of the fused embeddings coloured by true class."""
    from sklearn.manifold import TSNE

    emb = np.asarray(predictions.outputs["embedding"], np.float64)
    n = len(emb)
    perplexity = float(min(30.0, max(2.0, (n - 1) / 3)))
    xy = TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(emb)
    fig = Figure(figsize=(6.5, 5.5))
    ax = fig.subplots()
    cmap = matplotlib.colormaps["tab10"]
    wrong = ~predictions.correct
    for c, name in enumerate(predictions.class_names):
        sel = predictions.labels == c
        if not sel.any():
            continue
        ax.scatter(*xy[sel & ~wrong].T, s=14, color=cmap(c % 10), label=name)
        ax.scatter(*xy[sel & wrong].T, s=18, color=cmap(c % 10), marker="x", lw=0.8)
    ax.set_title(
        f"t-SNE of the fused embeddings ({n} clips, perplexity {perplexity:.0f}; x: misclassified)",
        fontsize=9,
    )
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(fontsize=8, markerscale=1.5)
    _save(fig, path)


def plot_confusion(metrics: dict[str, Any], path: str) -> None:
    """Paper Fig. 10: row-normalised confusion matrix with counts."""
    names = metrics["class_names"]
    m = np.asarray(metrics["confusion_matrix"], np.float64)
    rows = m / np.maximum(m.sum(1, keepdims=True), 1)
    fig = Figure(figsize=(1.0 * len(names) + 2, 0.9 * len(names) + 1.5))
    ax = fig.subplots()
    im = ax.imshow(100 * rows, cmap="Blues", vmin=0, vmax=100)
    for i in range(len(names)):
        for j in range(len(names)):
            colour = "white" if rows[i, j] > 0.6 else "black"
            ax.text(
                j, i, f"{100 * rows[i, j]:.0f}%\n({int(m[i, j])})", ha="center", va="center",
                fontsize=7, color=colour,
            )  # fmt: skip
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    wa, ua = metrics["weighted_accuracy"], metrics["unweighted_accuracy"]
    ax.set_title(f"Confusion matrix (paper Fig. 10): WA {100 * wa:.2f}%, UA {100 * ua:.2f}%")
    fig.colorbar(im, ax=ax, label="% of the true class")
    _save(fig, path)


# ---------------------------------------------------------------------------------------------
# The report


@dataclasses.dataclass
class ReportResult:
    output_dir: str
    figures: dict[str, str]
    metrics: dict[str, Any]
    skipped: dict[str, str]


def choose_clips(num_examples: int, num_clips: int) -> set[int]:
    """Positions of `num_clips` clips spread evenly over a split."""
    if num_examples <= 0:
        return set()
    return set(np.linspace(0, num_examples - 1, min(num_clips, num_examples)).round().astype(int))


def make_report(
    workdir: str,
    *,
    split: str | None = None,
    step: str = "best",
    output_dir: str | None = None,
    compare: Sequence[str] = (),
    attention_from: Sequence[str] = (),
    clips: Sequence[str] = (),
    num_clips: int = 3,
    batch_size: int | None = None,
) -> ReportResult:
    """Evaluates a workdir and writes the figures and report.md (see the module docstring)."""
    from fbp_jax import input_pipeline

    loaded = workdir_lib.load_trained(workdir, step)
    config = loaded.config
    split = split or evaluate_lib.default_split(config)
    output_dir = output_dir or os.path.join(workdir, "report")
    os.makedirs(output_dir, exist_ok=True)
    builder = input_pipeline.prepared_builder(config.data)
    total = builder.info.splits[split].num_examples  # TFDS resolves split arithmetic.
    wanted = set(clips)
    positions = choose_clips(total, num_clips) if not clips else set()

    def keep(index: int, clip_id: str) -> bool:
        return clip_id in wanted or index in positions

    predictions = evaluate_lib.evaluate(
        loaded, split, batch_size=batch_size, keep_inputs=keep, keep_outputs=True
    )
    missing = sorted(wanted - set(predictions.outputs.get("inputs", {})))
    if missing:
        raise predictions_lib.EvaluationError(f"clips {missing} are not in split {split!r}")
    info = {"workdir": os.path.abspath(workdir), "step": loaded.step, "split": split}
    metrics = evaluate_lib.save_evaluation(predictions, output_dir, info)
    chosen = list(clips) or [c for c in predictions.clip_ids if c in predictions.outputs["inputs"]]

    figures, skipped = {}, {}
    paths = {k: os.path.join(output_dir, v) for k, v in FIGURES.items()}
    others = {}
    for other in attention_from:
        others[_run_label(other)] = evaluate_lib.evaluate(
            other, split, batch_size=batch_size, keep_outputs=True
        )
    plot_attention(predictions, chosen, config.data, loaded.stats, paths["attention"], others)
    figures["attention"] = paths["attention"]
    mu_rows = None
    if "mu" in predictions.outputs:
        mu_rows = mu_per_class(predictions)
        plot_mu(mu_rows, float(np.mean(predictions.outputs["mu"])), paths["mu"])
        figures["mu"] = paths["mu"]
    else:
        skipped["mu"] = f"the {loaded.fusion} model has one stream, so no adaptive factor"
    runs = {_run_label(workdir): workdir}
    runs.update({_run_label(w): w for w in compare})
    curves = plot_learning_curves(runs, paths["curves"])
    figures["curves"] = paths["curves"]
    if len(predictions.clip_ids) >= 5:
        plot_tsne(predictions, paths["tsne"], seed=config.seed)
        figures["tsne"] = paths["tsne"]
    else:
        skipped["tsne"] = "fewer than 5 clips"
    plot_confusion(metrics, paths["confusion"])
    figures["confusion"] = paths["confusion"]

    text = _markdown(loaded, split, step, metrics, mu_rows, curves, figures, skipped, chosen)
    io.atomic_write(os.path.join(output_dir, REPORT_FILE), lambda f: f.write(text))
    return ReportResult(output_dir, figures, metrics, skipped)


def _run_label(workdir: str) -> str:
    name = os.path.basename(os.path.normpath(workdir))
    try:
        fusion = workdir_lib.load_config(workdir).model.fusion
    except (OSError, ValueError, KeyError):
        return name
    return name if fusion in name else f"{name} ({fusion})"


def _markdown(loaded, split, step, metrics, mu_rows, curves, figures, skipped, chosen) -> str:
    c = loaded.config
    how = (
        f"the best on the validation split `{c.data.eval_split}`"
        if str(step) == "best"
        else f"--step={step}"
    )
    lines = [
        f"# Report: {os.path.basename(os.path.normpath(loaded.workdir))}",
        "",
        f"- workdir: `{os.path.abspath(loaded.workdir)}`",
        (
            f"- model: `{c.model.fusion}`, data `{c.data.name}`; checkpoint: step {loaded.step} "
            f"({how})"
        ),
        f"- evaluated on split `{split}`: {metrics['num_examples']} clips",
        (
            f"- command: `python -m fbp_jax.evaluation.report --workdir={loaded.workdir} --split={split} "
            f"--step={step}`"
        ),
        "",
        "## Metrics",
        "",
        (
            f"Weighted accuracy (WA) **{percent(metrics['weighted_accuracy'])}**, unweighted "
            f"accuracy (UA, mean per-class recall) **{percent(metrics['unweighted_accuracy'])}**, "
            f"mean cross-entropy {metrics['loss']:.4f}."
        ),
        "",
        "| class | clips | accuracy (recall) | precision |",
        "|---|---:|---:|---:|",
    ]
    for r in metrics["per_class"]:
        lines.append(
            f"| {r['class']} | {r['support']} | {percent(r['accuracy'])} | {percent(r['precision'])} |"
        )
    if mu_rows:
        lines += [
            "",
            "## Audio adaptive factor mu per class",
            "",
            "| class | clips | mean mu | s.e. |",
        ]
        lines.append("|---|---:|---:|---:|")
        for r in mu_rows:
            mean = "-" if r["mean"] is None else f"{r['mean']:.4f}"
            sem = "-" if np.isnan(r["sem"]) else f"{r['sem']:.4f}"
            lines.append(f"| {r['class']} | {r['count']} | {mean} | {sem} |")
    if curves:
        lines += ["", "## Runs in the learning curves", ""]
        lines += [
            "| run | best validation WA | at step | last validation loss |",
            "|---|---:|---:|---:|",
        ]
        for name, v in curves.items():
            lines.append(
                f"| {name} | {percent(v['best_eval_accuracy'])} | {v['best_step']} | "
                f"{v['last_eval_loss']:.4f} |"
            )
    captions = {
        "attention": f"Attention over time for clips {', '.join(chosen)} (paper Fig. 6).",
        "mu": "Mean audio adaptive factor mu per true class (paper Fig. 7).",
        "curves": "Validation loss and accuracy during training (paper Fig. 8).",
        "tsne": "t-SNE of the fused embeddings, coloured by true class (paper Fig. 9).",
        "confusion": "Confusion matrix, rows normalised (paper Fig. 10).",
    }
    lines += ["", "## Figures", ""]
    for key, path in figures.items():
        lines += [f"![{captions[key]}]({os.path.basename(path)})", "", f"*{captions[key]}*", ""]
    for key, why in skipped.items():
        lines += [f"- {FIGURES[key]} not drawn: {why}."]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Command line

FLAGS = flags.FLAGS


def define_flags() -> None:
    flags.DEFINE_string("workdir", None, "The training workdir.")
    flags.DEFINE_string("split", None, "TFDS split (default: test split, else validation split).")
    flags.DEFINE_string("step", "best", "Checkpoint: 'best', 'latest' or a step number.")
    flags.DEFINE_string("output_dir", None, "Where to write (default: <workdir>/report).")
    flags.DEFINE_list("compare", [], "Other workdirs whose learning curves go into Fig. 8.")
    flags.DEFINE_list(
        "attention_from", [], "Other workdirs whose attention on the same clips goes into Fig. 6."
    )
    flags.DEFINE_list("clips", [], "Clip ids for Fig. 6 (default: --num_clips spread clips).")
    flags.DEFINE_integer("num_clips", 3, "Clips in Fig. 6 when --clips is not given.")
    flags.DEFINE_integer("batch_size", None, "Evaluation batch size (default: the config's).")


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    if not FLAGS.workdir:
        raise app.UsageError("--workdir is needed")
    import tensorflow as tf

    tf.config.experimental.set_visible_devices([], "GPU")
    try:
        result = make_report(
            FLAGS.workdir,
            split=FLAGS.split,
            step=FLAGS.step,
            output_dir=FLAGS.output_dir,
            compare=FLAGS.compare,
            attention_from=FLAGS.attention_from,
            clips=FLAGS.clips,
            num_clips=FLAGS.num_clips,
            batch_size=FLAGS.batch_size,
        )
    except predictions_lib.EvaluationError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(evaluate_lib.format_metrics(result.metrics))
    print(f"\nwritten: {os.path.join(result.output_dir, REPORT_FILE)}")
    for path in result.figures.values():
        print(f"  {path}")
    for key, why in result.skipped.items():
        print(f"  {FIGURES[key]} not drawn: {why}")


if __name__ == "__main__":
    define_flags()
    app.run(main)
