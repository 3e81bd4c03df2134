"""Base values of every experiment config: `fbp_jax.base_config` (the paper's settings per
corpus and variant, one comment per field). Experiment files import this module as
`from configs import common` and change a few fields of `common.get_config(corpus, fusion)`."""

from fbp_jax.base_config import (  # noqa: F401
    CLASSES,
    FCN_PRESETS,
    SINGLE_MODALITY,
    demo_config,
    fcn_config,
    get_config,
)
