"""The battery every model kind passes (`tubelet.models.kinds`): one tiny model of each kind, the same checks.

Per kind: the interface's shapes (``forward_features -> (N, D)``, ``pool -> (B, D)``, ``forward_head``) with no NaN,
a gradient on every trainable parameter, a save -> load round trip with identical outputs and what came with the
model (preprocessing, labels, audio, tokenizer), the kind `load` finds in the directory, the config.json format
that old checkpoints keep, and the runtime fields a load may change. Tiny sizes: dim 32, 1-2 blocks, 16 px clips.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch

from tubelet import models
from tubelet.data.av_dataset import AudioPreprocessing
from tubelet.data.text import train_tokenizer
from tubelet.data.transforms import Preprocessing
from tubelet.errors import ConfigError
from tubelet.models import (
    DecoderConfig,
    Encoder,
    FusionConfig,
    FusionModel,
    Loaded,
    MaskedDecoder,
    RetrievalConfig,
    RetrievalModel,
    model_config,
)
from tubelet.particles import mask_batch, pack, tokenize
from tubelet.particles.modalities import pack_modalities
from tubelet.particles.structure import AUDIO, Particles
from tubelet.particles.text import tokenize_text
from tubelet.tasks.retrieval import info_nce

TUBELET = (2, 8, 8)
PRE = Preprocessing(tubelet=TUBELET, size=16, max_long_side=32)
LABELS = ["a", "b", "c"]
CAPTIONS = ["a red disc moves left", "a blue square stays still", "something beeps twice"]
KINDS = ("encoder", "fusion", "retrieval", "captioner", "lm-captioner", "decoder", "videomae")


def clip(seed: int, frames: int = 4, height: int = 16, width: int = 16) -> Particles:
    """Video particles of random (T, H, W, 3) uint8 frames at 8 fps, cut by `TUBELET`."""
    pixels = np.random.default_rng(seed).integers(0, 256, (frames, height, width, 3), dtype=np.uint8)
    particles = tokenize(pixels, timestamps=np.arange(frames) / 8.0, tubelet=TUBELET)
    return particles.with_values(particles.values / 255.0)


def sound(n: int, seed: int) -> Particles:
    """`n` audio particles of (4 x 4) normalized log-mel patches over 2 mel bands."""
    ti = torch.arange(n) // 2
    return Particles(
        values=torch.randn(n, 16, generator=torch.Generator().manual_seed(seed)),
        t=0.04 * ti.float() + 0.02,
        ti=ti,
        y=torch.arange(n) % 2,
        x=torch.zeros(n, dtype=torch.long),
        span=torch.ones(n, dtype=torch.long),
        seq=torch.zeros(n, dtype=torch.long),
        grid=(n // 2, 2, 1),
        tubelet=(4, 4, 1),
        frame_shape=(n * 2, 8, 1),
        channels=1,
        modality=torch.full((n,), AUDIO),
    )


def video_batch():
    """Two clips of different size (16x16 and 16x24): 8 and 12 particles."""
    return pack([clip(0), clip(1, width=24)])


@dataclass
class Case:
    """One kind's tiny model, saved, with the inputs of its interface.

    Attributes:
        loaded: the model and what is saved with it.
        features_in: the arguments of ``forward_features``.
        pool_in: the second argument of ``pool``.
        rows, clips: rows of ``forward_features`` and of ``pool``.
        dim, head: widths of the features and of ``forward_head``'s output.
        outputs: the model's full outputs on the inputs (what the round trip compares).
        loss: a scalar of `outputs` that reaches every parameter.
        save: writes the checkpoint directory (default ``models.save(directory, loaded)``).
        kind_back: the kind a load of the saved directory gives.
        config_keys: the top-level keys of the saved config.json, in order (the format old checkpoints have).
        load_options: what `load` is given to read it back.
    """

    loaded: Loaded
    features_in: tuple
    pool_in: object
    rows: int
    clips: int
    dim: int
    head: int
    outputs: Callable[[torch.nn.Module], tuple[torch.Tensor, ...]]
    loss: Callable[[torch.nn.Module], torch.Tensor]
    save: Callable | None = None
    kind_back: str = ""
    config_keys: tuple[str, ...] = ()
    load_options: dict = field(default_factory=dict)


def weighted_sum(*outputs: torch.Tensor) -> torch.Tensor:
    """A fixed random weighting of outputs: its gradient is nonzero wherever the outputs depend on a parameter."""
    g = torch.Generator().manual_seed(7)
    return sum((out * torch.randn(out.shape, generator=g)).sum() for out in outputs)


def classifier_case(loaded: Loaded) -> Case:
    """An `Encoder` with a 3-class head on `video_batch`, saved as a tubelet encoder checkpoint."""
    batch = video_batch()
    return Case(
        loaded=loaded,
        features_in=(batch,),
        pool_in=batch,
        rows=20,
        clips=2,
        dim=32,
        head=3,
        outputs=lambda m: (m(batch),),
        loss=lambda m: weighted_sum(m(batch)),
        kind_back="encoder",
        config_keys=("model_type", "tubelet_version", "encoder", "preprocessing"),
    )


def encoder_case(tmp_path_factory) -> Case:
    torch.manual_seed(0)
    return classifier_case(
        Loaded(Encoder(model_config("test", num_classes=3, tubelet=TUBELET, pooling="attention")), PRE, LABELS)
    )


def fusion_case(tmp_path_factory) -> Case:
    torch.manual_seed(0)
    tokenizer = train_tokenizer(CAPTIONS)
    config = FusionConfig(
        modalities=("video", "audio", "text"),
        dim=32,
        depth=2,
        heads=2,
        tubelet=TUBELET,
        audio_patch=(4, 4),
        audio_bands=2,
        vocab_size=tokenizer.get_vocab_size(),
        num_classes=3,
        pooling="modality",
    )
    ids = [tokenizer.encode(c).ids for c in CAPTIONS[:2]]
    batch = pack_modalities(
        [
            {"video": clip(0), "audio": sound(6, 0), "text": tokenize_text(ids[0], time=0.25)},
            {"video": clip(1, width=24), "audio": sound(10, 1), "text": tokenize_text(ids[1], time=0.25)},
        ]
    )
    audio = AudioPreprocessing(patch=(4, 4), n_mels=8)
    rows = 20 + 16 + len(ids[0]) + len(ids[1])
    return Case(
        loaded=Loaded(FusionModel(config), PRE, LABELS, audio=audio, tokenizer=tokenizer),
        features_in=(batch,),
        pool_in=batch,
        rows=rows,
        clips=2,
        dim=32,
        head=3,
        outputs=lambda m: (m(batch),),
        loss=lambda m: weighted_sum(m(batch)),
        kind_back="fusion",
        config_keys=("model_type", "tubelet_version", "fusion", "preprocessing", "audio"),
    )


def retrieval_case(tmp_path_factory) -> Case:
    torch.manual_seed(0)
    tokenizer = train_tokenizer(CAPTIONS)
    text_config = RetrievalConfig(
        vocab_size=tokenizer.get_vocab_size(), text_dim=32, text_depth=1, text_heads=2, embed_dim=16
    )
    model = RetrievalModel(model_config("test", tubelet=TUBELET), text_config)
    video = video_batch()
    text = pack([tokenize_text(tokenizer.encode(c).ids, time=0.0) for c in CAPTIONS[:2]])
    return Case(
        loaded=Loaded(model, PRE, tokenizer=tokenizer),
        features_in=(video,),
        pool_in=video,
        rows=20,
        clips=2,
        dim=32,
        head=16,
        outputs=lambda m: m(video, text),
        loss=lambda m: info_nce(*m(video, text), m.scale()),
        kind_back="retrieval",
        config_keys=("model_type", "tubelet_version", "encoder", "retrieval", "preprocessing"),
    )


def captioner_case(tmp_path_factory) -> Case:
    """A fusion encoder (video and audio) and a causal text decoder reading its particles."""
    from tubelet.models.text_decoder import CaptionModel, TextDecoderConfig
    from tubelet.tasks.generate import special_ids, text_ids, with_decoder_tokens

    torch.manual_seed(0)
    tokenizer = with_decoder_tokens(train_tokenizer(CAPTIONS))
    fusion = FusionConfig(
        modalities=("video", "audio"), dim=32, depth=1, heads=2, tubelet=TUBELET, audio_patch=(4, 4), audio_bands=2
    )
    decoder = TextDecoderConfig(
        vocab_size=tokenizer.get_vocab_size(), dim=32, depth=1, heads=2, memory_dim=32, **special_ids(tokenizer)
    )
    batch = pack_modalities(
        [{"video": clip(0), "audio": sound(6, 0)}, {"video": clip(1, width=24), "audio": sound(10, 1)}]
    )
    ids = [text_ids(tokenizer, c) for c in CAPTIONS[:2]]
    text = pack([tokenize_text(i, time=0.0) for i in ids])
    turns = torch.tensor([0] * len(ids[0]) + [1] * len(ids[1]))
    return Case(
        loaded=Loaded(
            CaptionModel(FusionModel(fusion), decoder),
            PRE,
            audio=AudioPreprocessing(patch=(4, 4), n_mels=8),
            tokenizer=tokenizer,
        ),  # fmt: skip
        features_in=(batch,),
        pool_in=batch,
        rows=20 + 16,
        clips=2,
        dim=32,
        head=32,
        outputs=lambda m: (m.pool(m.forward_features(batch), batch), m(batch, text, turns)),
        loss=lambda m: weighted_sum(m(batch, text, turns)),
        kind_back="captioner",
        config_keys=("model_type", "tubelet_version", "fusion", "text_decoder", "preprocessing", "audio"),
    )


def lm_captioner_case(tmp_path_factory) -> Case:
    """An encoder bridged to a tiny random Llama saved here (no LoRA: a fresh adapter's A has no gradient)."""
    from tokenizers import Tokenizer, pre_tokenizers
    from tokenizers.models import WordLevel
    from transformers import LlamaConfig, LlamaForCausalLM

    from tubelet.models.lm_bridge import LMCaptionModel, bridge_config, load_lm
    from tubelet.tasks.generate import text_ids

    words = sorted({w for c in CAPTIONS for w in c.split()})
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{w: i + 3 for i, w in enumerate(words)}}
    tokenizer = Tokenizer(WordLevel(vocab, "<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    lm_dir = tmp_path_factory.mktemp("lm")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(words) + 3, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, bos_token_id=1, eos_token_id=2)  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(lm_dir)
    lm = load_lm(str(lm_dir))
    model = LMCaptionModel(
        Encoder(model_config("test", tubelet=TUBELET, num_classes=0)), bridge_config(str(lm_dir), lm), lm
    )
    video = video_batch()
    text = pack([tokenize_text(text_ids(tokenizer, c), time=0.0) for c in CAPTIONS[:2]])
    return Case(
        loaded=Loaded(model, PRE, tokenizer=tokenizer),
        features_in=(video,),
        pool_in=video,
        rows=20,
        clips=2,
        dim=32,
        head=32,
        outputs=lambda m: (m.pool(m.forward_features(video), video), m.decoder(text, m.memory(video))),
        loss=lambda m: weighted_sum(m.decoder(text, m.memory(video))),
        kind_back="lm-captioner",
        config_keys=("model_type", "tubelet_version", "encoder", "lm_bridge", "preprocessing"),
    )


def decoder_case(tmp_path_factory) -> Case:
    torch.manual_seed(0)
    encoder = Encoder(model_config("test", tubelet=TUBELET))
    decoder = MaskedDecoder(DecoderConfig(encoder_dim=32, patch_dim=2 * 8 * 8 * 3, dim=32, depth=1, heads=2))
    plan = mask_batch(video_batch(), 0.5, mode="random", generator=torch.Generator().manual_seed(0))
    features = torch.randn(len(plan.visible), 32, generator=torch.Generator().manual_seed(1))  # encoder features
    inputs = (features, plan.visible, plan.queries)
    return Case(
        loaded=Loaded(decoder, PRE),
        features_in=inputs,
        pool_in=plan.queries,
        rows=len(plan.queries),
        clips=2,
        dim=32,
        head=2 * 8 * 8 * 3,
        outputs=lambda m: (m(*inputs),),
        loss=lambda m: weighted_sum(m(*inputs)),
        save=lambda directory, loaded: models.save(directory, encoder, preprocessing=PRE, decoder=loaded.model),
        kind_back="decoder",
        config_keys=("model_type", "tubelet_version", "encoder", "preprocessing", "decoder"),
        load_options={"kind": "decoder"},
    )


def videomae_case(tmp_path_factory) -> Case:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    shape = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    video = dict(image_size=16, patch_size=8, num_frames=4, tubelet_size=2)
    config = transformers.VideoMAEConfig(**shape, **video, id2label=dict(enumerate(LABELS)))
    hf_dir = tmp_path_factory.mktemp("videomae")
    transformers.VideoMAEForVideoClassification(config).save_pretrained(hf_dir)
    loaded = models.load(hf_dir)
    assert loaded.kind == "videomae" and isinstance(loaded.model, Encoder) and loaded.labels == LABELS
    assert loaded.extras["architecture"] == "VideoMAEForVideoClassification"
    return classifier_case(loaded)  # an imported VideoMAE is an Encoder: saved as a tubelet encoder checkpoint


BUILDERS = {
    "encoder": encoder_case,
    "fusion": fusion_case,
    "retrieval": retrieval_case,
    "captioner": captioner_case,
    "lm-captioner": lm_captioner_case,
    "decoder": decoder_case,
    "videomae": videomae_case,
}


@pytest.fixture(scope="module", params=KINDS)
def case(request, tmp_path_factory) -> tuple[Case, object]:
    """(the kind's case, the directory it was saved to)."""
    built = BUILDERS[request.param](tmp_path_factory)
    directory = tmp_path_factory.mktemp(request.param) / "ckpt"
    (built.save or models.save)(directory, built.loaded)
    return built, directory


# Kinds a load reads but nothing trains or saves: an export directory runs onnxruntime, logits only (no
# forward_features, no gradients, no save); tests/recipes/test_export.py checks it against the checkpoint it came from.
READ_ONLY_KINDS = ("onnx",)


def test_every_kind_is_in_the_battery():
    assert set(models.kind_names()) == set(KINDS) | set(READ_ONLY_KINDS)


def test_interface_shapes_and_no_nan(case):
    case, _ = case
    model = case.loaded.model.eval()
    with torch.no_grad():
        features = model.forward_features(*case.features_in)
        pooled = model.pool(features, case.pool_in)
        head = model.forward_head(pooled if case.loaded.kind != "decoder" else features)
    assert features.shape == (case.rows, case.dim)
    assert pooled.shape == (case.clips, case.dim)
    assert head.shape == ((case.rows if case.loaded.kind == "decoder" else case.clips), case.head)
    for tensor in (features, pooled, head):
        assert torch.isfinite(tensor).all()
    with torch.no_grad():  # forward is the interface's three steps (a retrieval model's first output: the video's)
        assert torch.equal(case.outputs(model)[0], head)


def test_every_trainable_parameter_gets_a_gradient(case):
    case, _ = case
    model = case.loaded.model.train()
    model.zero_grad()
    case.loss(model).backward()
    starved = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    assert starved == []
    model.zero_grad()


def test_save_then_load_gives_identical_outputs_and_what_came_with_the_model(case):
    case, directory = case
    loaded = models.load(directory, **case.load_options)
    assert loaded.kind == case.kind_back and type(loaded.model) is type(case.loaded.model)
    assert loaded.source == str(directory)
    assert loaded.preprocessing == case.loaded.preprocessing and loaded.labels == case.loaded.labels
    assert loaded.audio == case.loaded.audio
    if case.loaded.tokenizer is not None:
        assert loaded.tokenizer.encode(CAPTIONS[0]).ids == case.loaded.tokenizer.encode(CAPTIONS[0]).ids
    else:
        assert loaded.tokenizer is None
    with torch.no_grad():
        before, after = case.outputs(case.loaded.model.eval()), case.outputs(loaded.model.eval())
    assert all(torch.equal(a, b) for a, b in zip(before, after))


def test_the_directory_holds_its_kind_in_the_config_format_of_old_checkpoints(case):
    case, directory = case
    config = json.loads((directory / "config.json").read_text())
    assert tuple(config) == case.config_keys
    expected = "encoder" if case.kind_back == "decoder" else case.kind_back  # a decoder lives in its encoder's
    assert models.checkpoint_kind(directory) == expected
    assert models.load(directory).kind == expected


def test_a_load_changes_runtime_fields_only(case):
    case, directory = case
    again = models.load(directory, attention="dense", **case.load_options)
    assert again.model.config.attention == "dense"
    with pytest.raises(ConfigError, match=f"^{directory}: cannot change depth of a trained model$"):
        models.load(directory, depth=1, **case.load_options)


# --- what `load` refuses, and the decoder outside a resume ---------------------------------------------------------


def test_a_checkpoint_of_another_kind_is_refused_naming_its_config(tmp_path):
    torch.manual_seed(0)
    models.save(tmp_path / "enc", Encoder(model_config("test", tubelet=TUBELET)), preprocessing=PRE)
    with pytest.raises(ConfigError, match=r"enc/config.json: model_type 'tubelet-encoder' is not a retrieval model"):
        models.load(tmp_path / "enc", kind="retrieval")
    with pytest.raises(ConfigError, match=r"enc/config.json: no 'decoder' block"):
        models.load(tmp_path / "enc", kind="decoder")
    (tmp_path / "enc" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ConfigError, match=r"model_type 'bert' is not a tubelet checkpoint"):
        models.load(tmp_path / "enc")
    assert models.checkpoint_kind(tmp_path / "enc") is None and models.checkpoint_kind(tmp_path) is None


def test_a_missing_config_field_names_the_file_and_the_field(tmp_path):
    torch.manual_seed(0)
    models.save(tmp_path / "enc", Encoder(model_config("test", tubelet=TUBELET)), preprocessing=PRE)
    config = json.loads((tmp_path / "enc" / "config.json").read_text())
    del config["preprocessing"]
    (tmp_path / "enc" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match=r"enc/config.json: missing 'preprocessing'"):
        models.load(tmp_path / "enc")


def test_a_registered_size_is_a_fresh_encoder_and_any_field_may_change():
    loaded = models.load("test", num_classes=4, tubelet=TUBELET)
    assert loaded.kind == "encoder" and loaded.preprocessing is None and loaded.model.num_classes == 4
    with pytest.raises(ConfigError, match="a registered size is a fresh encoder, not a fusion model"):
        models.load("test", kind="fusion")


def test_the_pretraining_decoder_loads_outside_a_resume(tmp_path):
    torch.manual_seed(0)
    encoder = Encoder(model_config("test", tubelet=TUBELET))
    decoder = MaskedDecoder(DecoderConfig(encoder_dim=32, patch_dim=2 * 8 * 8 * 3, dim=32, depth=1, heads=2))
    models.save(tmp_path / "pre", encoder, preprocessing=PRE, decoder=decoder)
    again = models.load_decoder(tmp_path / "pre")
    assert again.config == decoder.config
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), decoder.state_dict().values()))
