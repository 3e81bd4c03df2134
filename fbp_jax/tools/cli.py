"""`fbp-jax COMMAND [flags]`: the project's one command-line entry.

    fbp-jax demo                         synthetic corpus -> four systems -> table
    fbp-jax build ravdess --manual_dir=... --data_dir=data
    fbp-jax train --config=configs/ravdess_amfbp.py:dev --config.data.data_dir=data
    fbp-jax evaluate --workdir=W --split=actor13+actor14
    fbp-jax predict --model=W clip.wav
    fbp-jax COMMAND --help               what COMMAND does, and its flags

Each command is the `main` of one module, run with only that module's flags.
"""

from __future__ import annotations

import importlib
import os
import sys

from fbp_jax import extras

# command -> (module, what it does). The module has define_flags() and main(argv).
COMMANDS = {
    "demo": (
        "fbp_jax.tools.demo",
        "Build the synthetic corpus, train four systems, print a table.",
    ),
    "build": ("data_prep.build", "Turn a corpus as distributed into TFDS records (with a report)."),
    "train": ("fbp_jax.training.cli", "Train one model of a config; resumes a killed run."),
    "evaluate": ("fbp_jax.evaluation.cli", "Metrics and per-clip predictions of a run on a split."),
    "ensemble": ("fbp_jax.evaluation.cli", "Average the posteriors of several systems."),
    "mcnemar": ("fbp_jax.evaluation.cli", "Exact McNemar test of two systems on the same clips."),
    "cv": ("fbp_jax.evaluation.cross_validation", "Every fold of a protocol, resumable; table."),
    "floors": ("fbp_jax.evaluation.floors", "Linear floors on the folds of a protocol."),
    "conditions": (
        "fbp_jax.evaluation.conditions",
        "Cross-validated systems on test speakers under other recording conditions.",
    ),
    "report": ("fbp_jax.evaluation.report", "The paper's Fig. 6-10 and a Markdown report."),
    "predict": ("fbp_jax.serving.predict", "Class posteriors of media files (a file or folder)."),
    "export": ("fbp_jax.serving.export", "A jax.export bundle of a run, for serving."),
    "voice-floor": (
        "fbp_jax.evaluation.voice_floor_fit",
        "Fit the voice functionals' floor on a corpus and add it to an export.",
    ),
    "benchmark": ("fbp_jax.tools.benchmark", "Speed table of the model family on this machine."),
    "predict-benchmark": (
        "fbp_jax.tools.predict_benchmark",
        "Time and peak memory of predict on 1, 10 and 60 minute recordings.",
    ),
    "faces-benchmark": ("data_prep.features.faces", "Frames/s of the face pipeline's stages."),
}
# Commands whose module takes the command name as its first argument.
SUBCOMMANDS = ("evaluate", "ensemble", "mcnemar")
# The install extra a command needs beyond the base install (fbp_jax.extras); none: base.
COMMAND_EXTRA = {
    "demo": "train",
    "build": "data",
    "faces-benchmark": "faces",
    "predict": None,
    "predict-benchmark": None,
    "export": None,
    "voice-floor": "train",
    "mcnemar": None,
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: fbp-jax COMMAND [flags]   (fbp-jax COMMAND --help for its flags)", ""]
    lines += [f"  {name:<{width}}  {what}" for name, (_, what) in COMMANDS.items()]
    return "\n".join(lines)


def _config_imports(args: list[str]) -> None:
    """Makes config files' own imports work as under `python -m`: the working directory and
    the folder above each `--config` file's folder are importable (`from configs import ...`)."""
    roots = [os.getcwd()]
    for a in args:
        if a.startswith("--config="):
            config_file = a.split("=", 1)[1].split(":", 1)[0]
            roots.append(os.path.dirname(os.path.dirname(os.path.abspath(config_file))))
    for root in reversed(roots):
        if root not in sys.path:
            sys.path.insert(0, root)


def run(argv: list[str] | None = None) -> None:
    """Entry point of the `fbp-jax` script."""
    argv = list(sys.argv if argv is None else argv)
    if len(argv) < 2 or argv[1] in ("-h", "--help", "help"):
        print(usage())
        sys.exit(0 if len(argv) >= 2 else 2)
    command = argv[1]
    if command not in COMMANDS:
        print(f"fbp-jax: unknown command {command!r}\n\n{usage()}", file=sys.stderr)
        sys.exit(2)
    module_name, what = COMMANDS[command]
    rest = argv[2:]
    _config_imports(rest)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        _missing_extra(command, e)
    if module_name == "data_prep.features.faces":  # argparse, not absl
        module.main(rest, prog=f"fbp-jax {command}")
        return
    from absl import app, flags

    module.define_flags()
    text = f"fbp-jax {command}: {what}\n\n{(module.__doc__ or '').strip()}"
    if any(a in ("-h", "--help", "--helpshort") for a in rest):
        print(f"{text}\n\nflags:\n{flags.FLAGS.module_help(module)}")
        sys.exit(0)
    sys.modules["__main__"].__doc__ = text  # What absl prints on a usage error.
    prog = f"fbp-jax {command}"
    args = [prog, command, *rest] if command in SUBCOMMANDS else [prog, *rest]
    try:
        app.run(module.main, argv=args)
    except ModuleNotFoundError as e:
        _missing_extra(command, e)
    except extras.MissingExtraError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def _missing_extra(command: str, error: ModuleNotFoundError):
    """A command whose extra is not installed: one line naming it (exit 2)."""
    root = (error.name or "").split(".")[0]
    if root in ("fbp_jax", "data_prep") or not root:
        raise error
    extra = COMMAND_EXTRA.get(command, "train") or extras.MODULE_EXTRA.get(root, "train")
    print(f"error: {extras.message(f'fbp-jax {command}', error.name, extra)}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
    run()
