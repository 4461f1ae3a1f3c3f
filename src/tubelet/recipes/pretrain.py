"""Self-supervised pretraining by masked video modeling (VideoMAE over particles) on unlabeled video.

The ``reconstruction`` task (`tubelet.tasks.reconstruction`) run through the one loop (`tubelet.train.run`): each
clip is masked BEFORE the encoder (tube masking of 90% by default), a light decoder predicts the hidden particles'
pixels, and the norm-pix loss is taken over the hidden particles only.

RUN/last (with trainer state for --resume) and RUN/best (the lowest epoch-mean training loss: pretraining has no
held-out set) are tubelet checkpoints whose model.safetensors holds the ENCODER alone, without a head, so
``tubelet finetune --model RUN/best`` starts from it. The decoder lies beside it in decoder.safetensors
(`tubelet.models.load_decoder`). RUN/reconstructions/epoch_NNN.png and .gif show a fixed clip, masked and
reconstructed, after every epoch.
"""

from __future__ import annotations

from tubelet.train.config import run_config
from tubelet.train.run import run_task

PretrainConfig = run_config("reconstruction")


def pretrain(cfg) -> dict:
    """Run masked video pretraining; returns a summary with the best loss and the checkpoint paths."""
    return run_task(cfg)
