"""Text particles: one particle per token, on the same seconds axis as video and audio.

| field | text meaning |
|---|---|
| `values` | (N, 1) int64 token ids (a model embeds them with its own lookup table, ``nn.Embedding(vocab, D)``) |
| `t` | seconds of the caption on the clip's axis, the same for all its tokens (see `tokenize_text`) |
| `ti` | position of the token in its caption (0 = the first, ``[CLS]`` for a trained tokenizer) |
| `y`, `x` | 0 |
| `span` | 1 |
| `modality` | `TEXT` |

All tokens of a caption share one `t`, so their order lives in `ti` only: a model must give text particles a
position over `ti` (a 1-D rotary or sinusoidal position in the text embedding), or a caption becomes a bag of
words.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from tubelet.particles.structure import TEXT, Particles


def tokenize_text(token_ids: Sequence[int] | torch.Tensor, *, time: float) -> Particles:
    """Particles of one caption's tokens (from `tubelet.data.text.encode`).

    Args:
        token_ids: (L,) ids of the caption, specials included.
        time: seconds of the caption on the clip's axis. Give the caption's own time when the data has one
            (e.g. the centre of a subtitle's span); a caption that describes a whole clip takes the clip's
            centre, ``(first + last timestamp) / 2``. A real time, never NaN: NaN would reach every rotary
            angle of the sequence it joins. A query with no clip (text search) may pass 0.0; its time then
            meets no other modality.

    Returns:
        `Particles` with values (L, 1) int64 token ids, grid (L, 1, 1), tubelet (1, 1, 1), channels 1, modality
        `TEXT`.

    Raises:
        ValueError: no tokens, or a time that is not a finite number.
    """
    ids = torch.as_tensor(token_ids, dtype=torch.int64).reshape(-1)  # (L,)
    if ids.numel() == 0:
        raise ValueError("a caption needs at least one token")
    if not math.isfinite(time):
        raise ValueError(f"a caption's time must be finite seconds, got {time}")
    length = ids.shape[0]
    ti = torch.arange(length)
    zeros = torch.zeros_like(ti)
    return Particles(
        values=ids[:, None],  # (L, 1)
        t=torch.full((length,), float(time), dtype=torch.float32),
        ti=ti,
        y=zeros,
        x=zeros.clone(),
        span=torch.ones_like(ti),
        seq=zeros.clone(),
        grid=(length, 1, 1),
        tubelet=(1, 1, 1),
        frame_shape=(length, 1, 1),
        channels=1,
        modality=torch.full_like(ti, TEXT),
    )
