"""TFDS builders of every corpus, on the extraction machinery of `corpus` and `base`.

`builder_class(name)` imports only the module of the corpus asked for: importing a builder's
module registers it with TFDS (so `tfds.builder('ravdess/speech', data_dir=D)` finds it), and a
reader of synthetic records need not import the face pipeline of AFEW.
"""

from __future__ import annotations

import importlib

# Corpus name -> (module, TFDS builder class). Add new corpora here.
BUILDERS = {
    "synthetic_av": ("data_prep.builders.synthetic", "SyntheticAV"),
    "ravdess": ("data_prep.builders.ravdess", "Ravdess"),
    "iemocap": ("data_prep.builders.iemocap", "Iemocap"),
    "afew": ("data_prep.builders.afew", "Afew"),
    "cremad": ("data_prep.builders.cremad", "CremaD"),
}


def builder_class(name: str):
    """The TFDS builder class of corpus `name` (or `name/config`); imports (registers) it.

    Raises:
      ValueError: unknown corpus; the message lists the valid ones.
    """
    corpus = name.partition("/")[0]
    if corpus not in BUILDERS:
        raise ValueError(f"Unknown corpus {corpus!r}; valid corpora: {sorted(BUILDERS)}.")
    module, cls = BUILDERS[corpus]
    return getattr(importlib.import_module(module), cls)
