"""Demo on the embedded synthetic corpus (data_prep/synthetic.py, config 'afew': AFEW-like
sizes, 7 classes, 200-bin spectrograms, 1024-d face features), sized for 2 CPU cores.

    python -m fbp_jax.tools.demo                       # builds the corpus, trains 4 variants, table
    python train.py --config=configs/demo.py --config.model.fusion=am_fbp \
        --config.data.data_dir=data

Differences from the paper's AFEW settings, all for speed on a CPU: the 'tiny' FCN preset,
3.2 s crops, 12 epochs at learning rate 1e-3 (halved after 8) instead of 100-200 at 1e-4;
the demo trains the fusion variants 6 epochs from the single-modality encoders.
"""

from configs import common


def get_config(fusion: str = "am_fbp"):
    config = common.get_config("synthetic_av", fusion)
    with config.unlocked():
        config.data.name = "synthetic_av/afew"
        config.data.data_dir = "data"
        config.data.clip_seconds = 3.2  # Synthetic clips last 1-4 s; longer ones are cropped.
        config.model.audio = common.fcn_config("tiny")
        config.batch_size = 32
        config.num_epochs = 12
        config.optim.learning_rate = 1e-3
        config.optim.lr_decay_epochs = (8,)
        config.log_every_steps = 20
        config.eval_every_steps = 62  # Every 2 epochs of the 1000 training clips.
        config.checkpoint_every_steps = 1000
    return config
