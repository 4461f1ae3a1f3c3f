"""Video captioning: the ``caption`` task (``tubelet finetune --task caption``) and what reads its checkpoints.

An example is (a window of an event's [start, end], its caption). Data: ``DATA/captions_{split}.jsonl`` (events with
seconds, ``tubelet sample-data --stories``) or ``DATA/{split}.csv`` with a ``caption`` column (whole clips, ``tubelet
sample-data --multimodal``); see `tubelet.data.events`. Training samples a random ``clip_seconds`` window inside each
event; evaluation reads the centred one.

Model: `tubelet.models.text_decoder.CaptionModel`, a clip encoder (a registered size, an encoder checkpoint such as
``tubelet pretrain``'s ``RUN/best``, or a captioner checkpoint to continue; ``--modalities video,audio`` makes it an
early-fusion encoder of video and audio) and a causal text decoder of the encoder's width attending to its particle
features. The tokenizer is a WordPiece trained on the train captions unless ``--tokenizer`` names one, with
``[BOS] [EOS] [SEP]`` added; it is saved as ``tokenizer.json`` beside every checkpoint.

Metrics (validation picks ``best/`` by ``loss``): teacher-forced ``loss`` and ``perplexity``, ``bleu4`` (sacrebleu's
corpus BLEU-4 of the decoded captions, 0-100) and ``attribute_match``: the share of (event, attribute) pairs whose
generated caption names the attribute's values (object, colour, direction, sound, where the data gives them) as the
reference does, the true one among them (`attribute_scores`).

    RUN/best, RUN/last              captioner checkpoints (config.json, model.safetensors, tokenizer.json)
    RUN/report/report.json, .md     test loss, perplexity, BLEU-4, attribute match, example captions
"""

from __future__ import annotations

import logging
import math
import re
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tubelet.data.av_dataset import AudioPreprocessing, AVClipDataset, check_audio
from tubelet.data.dataset import budget_batches
from tubelet.data.events import ATTRIBUTES, Captions, caption_manifest, load_captions
from tubelet.data.loader import iterate_batches
from tubelet.data.manifest import Sample, VideoDataset, try_probe
from tubelet.data.text import load_tokenizer, run_tokenizer
from tubelet.errors import ConfigError, DataError
from tubelet.models.text_decoder import DECODER_KEEP, CaptionModel, TextDecoderConfig
from tubelet.nn.device import autocast, resolve_device
from tubelet.particles.modalities import ModalBatch
from tubelet.tasks.base import Arm, Built, Prepared, Reads, StepLoss, Task, register
from tubelet.tasks.classification import parse_modalities
from tubelet.tasks.files import write_report_files
from tubelet.tasks.generate import (
    GREEDY,
    Decoding,
    Sequence,
    caption_prompt,
    detokenize,
    generate,
    sequence_loss,
    special_ids,
    text_ids,
    with_decoder_tokens,
)
from tubelet.tasks.inference import view_windows
from tubelet.tasks.report import data_text, heading_markdown
from tubelet.typed import opt

log = logging.getLogger("tubelet.caption")

DECODED_KEPT = 64  # decoded windows a `DecoderClipDataset` keeps (each a few hundred particles)


@dataclass(frozen=True)
class DecoderFields:
    """The fields of a task with a text decoder (``caption``, ``dialogue``)."""

    modalities: str = opt("video", "what the decoder reads from the clip: video, or video,audio (early fusion)")
    allow_missing_audio: bool = opt(False, "a file without an audio stream gets silence instead of an error")
    tokenizer: str | None = opt(None, "tokenizer dir, tokenizer.json or hub id; none trains one on the train text")
    decoder_depth: int = opt(2, "blocks of the text decoder (its width is the encoder's)")
    label_smoothing: float = opt(0.0, "label smoothing of the token-level cross-entropy")
    decode: str = opt("greedy", "decoding of validation and test text: greedy | beam | sample")
    beam: int = opt(4, "beam width (decode beam)")
    max_tokens: int = opt(32, "most tokens generated per caption or answer")

    def validate(self) -> None:
        parse_modalities(self.modalities)
        if "text" in parse_modalities(self.modalities):
            raise ConfigError("modalities: the decoder reads the text itself; choose video or video,audio")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"label_smoothing: must be in [0, 1), got {self.label_smoothing}")
        if self.decoder_depth < 1 or self.beam < 1 or self.max_tokens < 1:
            raise ConfigError("decoder_depth, beam and max_tokens: must be 1 or more")
        try:
            Decoding(self.decode, beam=self.beam, max_tokens=self.max_tokens)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None


class DecoderClipDataset(AVClipDataset):
    """Windows of the clips a text decoder reads (`modalities` may be empty: a text-only model decodes nothing).

    Batches are `ModalBatch`es; an item's particle estimate adds its sequence's tokens (`lengths`), so a text-only
    model's batches are budgeted by text.
    """

    def __init__(self, data: VideoDataset, pre, audio, *, modalities, lengths: list[int], **kwargs):
        super().__init__(data, pre, audio or AudioPreprocessing(), modalities=modalities, **kwargs)
        self.lengths = lengths
        # Un-augmented windows decoded once per process: the many dialogue turns about one story read one video.
        self._decoded: OrderedDict[tuple, object] = OrderedDict()

    def load(self, path: str, window: tuple[float, float], height: int, width: int, rng, *, question=None):
        if rng is not None or question is not None:  # an augmented window differs each time
            return super().load(path, window, height, width, rng, question=question)
        key = (path, float(window[0]), float(window[1]))
        if key not in self._decoded:
            self._decoded[key] = super().load(path, window, height, width, rng)
            if len(self._decoded) > DECODED_KEPT:
                self._decoded.popitem(last=False)
        self._decoded.move_to_end(key)
        return self._decoded[key]

    def estimates(self) -> list[int]:
        base = super().estimates()
        videos = range(len(self)) if self.windows is None else [w[0] for w in self.windows]
        return [n + self.lengths[v] for n, v in zip(base, videos)]


def clip_batch(model: CaptionModel, packed):
    """What `CaptionModel.memory` reads from a batch of `DecoderClipDataset`: the video part for an `Encoder`."""
    if model.encoder is None or packed is None:
        return None
    if isinstance(packed, ModalBatch) and model.modalities == ("video",):
        return packed.parts["video"]
    return packed


def unwrapped(module) -> CaptionModel:
    """The `CaptionModel` a run trains, inside its LoRA wrapper or not."""
    return module.base_model.model if hasattr(module, "merge_and_unload") else module


def build_captioner(cfg, tokenizer, arm: Arm, *, max_history: int = 0) -> Built:
    """A `CaptionModel` for `arm`: its encoder fresh of a registered size, from an encoder checkpoint, or a captioner
    checkpoint continued; none for a text-only arm (``arm.modalities`` empty). `max_history`: the previous turns
    a dialogue model's prompts hold (0 for captions and a history-blind model).

    Raises:
        ConfigError: a captioner checkpoint that reads other modalities or another vocabulary.
    """
    from tubelet.models import checkpoint_kind, load
    from tubelet.models.fusion_from_encoder import build_fusion

    ids = special_ids(tokenizer)
    vocab = tokenizer.get_vocab_size()
    runtime = {"dropout": cfg.dropout, "drop_path": cfg.drop_path, "attention": cfg.attention}
    if checkpoint_kind(cfg.model) == "captioner":
        loaded = load(cfg.model, kind="captioner", **runtime)
        if loaded.model.modalities != arm.modalities:
            raise ConfigError(f"--model {cfg.model}: reads {loaded.model.modalities}, this arm {arm.modalities}")
        if loaded.model.config.vocab_size != vocab or special_ids(loaded.tokenizer) != ids:
            raise ConfigError(f"--tokenizer: its vocabulary differs from that of --model {cfg.model}")
        model = loaded.model
        model.config = model.decoder.config = model.config.replace(max_history=max_history)
        if model.encoder is None:
            return TextOnlyBuilt(model, loaded.preprocessing, keep=("",), tower="decoder", tubelet_of=_tubelet(cfg))
        return Built(model, loaded.preprocessing, keep=DECODER_KEEP, tower="encoder")
    encoder, base, report = None, None, None
    if arm.modalities == ("video",):
        encoder, base = headless_encoder(cfg, runtime)
    elif arm.modalities:
        encoder, base, report = build_fusion(cfg, arm.modalities, [], vocab_size=0)
    width = encoder.config.dim if encoder is not None else _width(cfg)
    heads = encoder.config.heads if encoder is not None else max(1, width // 32)
    decoder = TextDecoderConfig(
        vocab_size=vocab, dim=width, depth=cfg.decoder_depth, heads=heads, memory_dim=0 if encoder is None else width,
        max_history=max_history, dropout=cfg.dropout, attention=cfg.attention, **ids,
    )  # fmt: skip
    model = CaptionModel(encoder, decoder)
    built = Built(model, base, keep=DECODER_KEEP, tower="encoder" if encoder is not None else "", load_report=report)
    if encoder is None:  # a text-only arm: the decoder is all there is; its preprocessing records the run's tubelet
        built = TextOnlyBuilt(model, base, keep=("",), tower="decoder", tubelet_of=_tubelet(cfg))
    return built


def headless_encoder(cfg, runtime: dict):
    """(an `Encoder` without a head, its checkpoint's preprocessing or None): fresh of a registered size
    (``cfg.tubelet``, ``time_mode``, ``embed_init``), or an encoder checkpoint's with its head removed."""
    from tubelet.models import load, model_names

    if cfg.model in model_names() and not Path(cfg.model).is_dir():
        fresh = dict(runtime, num_classes=0, pooling="mean", time_mode=cfg.time_mode, embed_init=cfg.embed_init)
        if cfg.tubelet is not None:
            fresh["tubelet"] = tuple(cfg.tubelet)
        return load(cfg.model, **fresh).model, None
    loaded = load(cfg.model, kind="encoder", **runtime)
    loaded.model.reset_head(0)
    return loaded.model, loaded.preprocessing


def build_lm_captioner(cfg) -> Built:
    """An encoder (a registered size, or an encoder checkpoint) bridged to the LM of ``--lm`` (`LMCaptionModel`)."""
    from tubelet.models.lm_bridge import BRIDGE_KEEP, LMCaptionModel, bridge_config, load_lm

    runtime = {"dropout": cfg.dropout, "drop_path": cfg.drop_path, "attention": cfg.attention}
    encoder, base = headless_encoder(cfg, runtime)
    lm = load_lm(cfg.lm)
    config = bridge_config(cfg.lm, lm, prefix_tokens=cfg.prefix_tokens, lora=cfg.lora, lora_rank=cfg.lora_rank,
                           lora_alpha=cfg.lora_alpha, attention=cfg.attention)  # fmt: skip
    return Built(LMCaptionModel(encoder, config, lm), base, keep=BRIDGE_KEEP, tower="encoder")


@dataclass
class TextOnlyBuilt(Built):
    """`Built` of a model with no clip encoder: the tubelet its preprocessing records comes from the run."""

    tubelet_of: tuple[int, int, int] = (2, 16, 16)

    @property
    def tubelet(self) -> tuple[int, int, int]:
        return self.tubelet_of


def _width(cfg) -> int:
    from tubelet.models import checkpoint_kind, load, model_config, model_names

    if cfg.model in model_names() and not Path(cfg.model).is_dir():
        return model_config(cfg.model).dim
    if checkpoint_kind(cfg.model) == "encoder":
        return load(cfg.model, kind="encoder").model.config.dim
    return 128


def _tubelet(cfg) -> tuple[int, int, int]:
    from tubelet.models import model_config, model_names

    if cfg.tubelet is not None:
        return tuple(cfg.tubelet)
    if cfg.model in model_names():
        return tuple(model_config(cfg.model).tubelet)
    return (2, 16, 16)


def decoder_tokenizer(cfg, texts: list[str], out: Path, kind: str = "captioner"):
    """The run's tokenizer (`run_tokenizer`: given, a continued run's, or trained on `texts`) with the decoder's
    ``[BOS] [EOS] [SEP]``."""
    from tubelet.models import checkpoint_kind

    saved = [out / "last"] if cfg.resume else []
    saved += [cfg.model] if checkpoint_kind(cfg.model) == kind else []
    return with_decoder_tokens(run_tokenizer(texts, given=cfg.tokenizer, saved=saved))


def decoding_of(cfg) -> Decoding:
    return Decoding(cfg.decode, beam=cfg.beam, max_tokens=cfg.max_tokens)


# --- attribute match and BLEU ---------------------------------------------------------------------------------


def mentions(text: str, values: list[str]) -> list[str]:
    """The `values` that `text` names, in the order it names them (whole words, a plural or verb ``-s`` allowed)."""
    found = []
    for value in values:
        for match in re.finditer(rf"(?<![a-z0-9]){re.escape(value)}(?:e?s)?(?![a-z0-9])", text.lower()):
            found.append((match.start(), value))
    return [value for _, value in sorted(found)]


def attribute_scores(hypotheses: list[str], references: list[str], attributes: list[dict[str, str]]) -> dict:
    """Per attribute (object, colour, direction, sound), the share of examples whose hypothesis names that
    attribute's values exactly as the reference does: the same values in the same order, the true one among them.

    Order matters because one caption may name several values of an attribute ("a blue cube and a red triangle
    collide", "enters from the right and slides left"): naming them in another order says something else. The
    values are those of the attribute seen in `attributes`. A reference scores 1 against itself.

    Returns:
        ``attribute_match`` (over every (example, attribute) pair the data gives), ``per_attribute`` ({name:
        {match, count}}).
    """
    values = {name: sorted({a[name] for a in attributes if name in a}) for name in ATTRIBUTES}
    per, hits, total = {}, 0, 0
    for name in ATTRIBUTES:
        right = []
        for hyp, ref, truth in zip(hypotheses, references, attributes):
            if name not in truth:
                continue
            said = mentions(hyp, values[name])
            right.append(truth[name] in said and said == mentions(ref, values[name]))
        if right:
            per[name] = {"match": float(np.mean(right)), "count": len(right)}
            hits, total = hits + sum(right), total + len(right)
    return {"attribute_match": hits / total if total else float("nan"), "per_attribute": per}


def bleu4(hypotheses: list[str], references: list[str]) -> float:
    """Corpus BLEU-4 (sacrebleu, its default 13a tokenization, lower-cased), 0-100."""
    import sacrebleu

    return float(sacrebleu.corpus_bleu(hypotheses, [references], lowercase=True).score)


# --- evaluation -------------------------------------------------------------------------------------------------


@torch.no_grad()
def caption_windows(
    model: CaptionModel, data: VideoDataset, windows: list[tuple[int, float, float]], pre, tokenizer, *,
    audio=None, decoding: Decoding = GREEDY, targets: list[list[int]] | None = None, budget: int = 8192,
    device, precision: str = "auto", workers: int = 0, pooled: bool = False,
) -> dict:  # fmt: skip
    """Captions of explicit windows ``(video index, start s, end s)``, and the teacher-forced loss of `targets`.

    Args:
        targets: the reference caption ids of each window (None: no loss).
        pooled: also return each window's pooled encoder features.

    Returns:
        ``captions`` (str, None for a window that did not decode), ``scores`` (mean token log-prob), ``loss_sum`` and
        ``tokens`` (when `targets`), ``pooled`` ((n, D) float32, NaN rows: not decoded), ``failed`` ((path, reason)).
    """
    model.eval()
    bos = model.config.bos_id
    lengths = [len(t) + 1 if targets else 1 for t in (targets or [[]] * len(windows))]
    none = [0] * len(data.samples)  # the text is budgeted per window below
    dataset = DecoderClipDataset(data, pre, audio, modalities=model.modalities, lengths=none, windows=windows)
    estimates = [e + lengths[i] for i, e in enumerate(dataset.estimates())]
    batches = budget_batches(estimates, budget, shuffle=False)
    captions: list[str | None] = [None] * len(windows)
    scores = [float("nan")] * len(windows)
    features = None
    loss_sum, tokens, failed = 0.0, 0, []
    for batch in iterate_batches(dataset, batches, workers=workers, on_crash=lambda p, r: failed.append((p, r))):
        failed.extend((it.path, it.error) for it in batch.failed)
        if not batch.indices:
            continue
        packed = clip_batch(model, batch.packed.to(device) if batch.packed is not None else None)
        with autocast(device, precision):
            memory = model.memory(packed)
            if memory is not None:
                memory.features = memory.features.float()
        if pooled and memory is not None:
            vectors = model.pool(memory.features, packed).float().cpu().numpy()  # (B, D)
            if features is None:
                features = np.full((len(windows), vectors.shape[1]), np.nan, dtype=np.float32)
            features[batch.indices] = vectors
        if targets is not None:
            sequences = [Sequence(*caption_prompt(bos), targets[i] + [model.config.eos_id]) for i in batch.indices]
            loss, count = sequence_loss(model, memory, sequences)
            loss_sum, tokens = loss_sum + float(loss) * count, tokens + count
        prompts = [caption_prompt(bos) for _ in batch.indices]
        for i, out in zip(batch.indices, generate(model, memory, prompts, decoding)):
            captions[i] = detokenize(tokenizer, out.ids)
            scores[i] = out.score
    return {"captions": captions, "scores": scores, "loss_sum": loss_sum, "tokens": tokens, "pooled": features,
            "failed": failed}  # fmt: skip


def evaluate_captions(
    model: CaptionModel, captions: Captions, pre, tokenizer, *, audio=None, decoding: Decoding = GREEDY,
    budget: int = 8192, device, precision: str = "auto", workers: int = 0,
) -> dict:  # fmt: skip
    """Loss, perplexity, BLEU-4 and attribute match of `model` on the centred window of each event of `captions`.

    Raises:
        DataError: no event's window could be decoded.
    """
    model = model.to(device)
    windows = view_windows(captions.data, pre.clip_seconds, 1)
    targets = [text_ids(tokenizer, c) for c in captions.captions]
    out = caption_windows(
        model, captions.data, windows, pre, tokenizer, audio=audio, decoding=decoding, targets=targets,
        budget=budget, device=device, precision=precision, workers=workers,
    )  # fmt: skip
    for path, reason in dict(out["failed"]).items():
        log.warning("skipping %s: %s", path, reason)
    done = [i for i, c in enumerate(out["captions"]) if c is not None]
    if not done:
        raise DataError(f"{captions.manifest}: no event's clip could be decoded")
    hyps, refs = [out["captions"][i] for i in done], [captions.captions[i] for i in done]
    loss = out["loss_sum"] / max(1, out["tokens"])
    metrics = {
        "loss": loss,
        "perplexity": math.exp(min(loss, 50.0)),
        "bleu4": bleu4(hyps, refs),
        **attribute_scores(hyps, refs, [captions.attributes[i] for i in done]),
        "exact_match": float(np.mean([h.lower() == r.lower() for h, r in zip(hyps, refs)])),
        "num_captions": len(done),
        "examples": [{"reference": r, "generated": h} for h, r in zip(hyps[:8], refs[:8])],
        "skipped": sorted({p for p, _ in out["failed"]}),
    }
    if math.isnan(metrics["attribute_match"]):
        metrics["attribute_match"] = 0.0  # the data names no attribute: nothing to match
    return metrics


# --- the task ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CaptionFields(DecoderFields):
    """The fields of ``finetune --task caption``."""

    lm: str | None = opt(
        None, "a Hugging Face causal LM (local dir, or hub id) that writes the captions from a projected clip prefix"
    )
    lora: bool = opt(False, "with --lm: train LoRA adapters on the LM (peft); otherwise the LM is frozen whole")
    prefix_tokens: int = opt(4, "with --lm: pooled clip vectors the LM reads before the text")


class TextDecoderTask(Task):
    """What the tasks of a text decoder over a clip's particles share (caption, dialogue): the token NLL of each
    item's target text after its prompt, validation by `evaluator`, and the tokenizer (and audio) beside the model."""

    evaluator = staticmethod(lambda *args, **kwargs: None)  # the task's evaluate_* function (model, data, pre, tok)
    counted: tuple[str, str] = ("items", "num_items")  # what a report counts: its name in details, its metric key

    @staticmethod
    def held_out_and_audio(cfg, train, manifest_of, read):
        """(the validation split read with ``read(manifest_of(data, split))``, None without one; the audio
        preprocessing, checked against both splits' clips when the model hears)."""
        val = None
        if cfg.val_split not in (None, "none") and not Path(cfg.data).is_file():
            manifest = manifest_of(cfg.data, cfg.val_split)
            val = read(manifest) if manifest is not None else None
        audio = AudioPreprocessing(allow_missing_audio=cfg.allow_missing_audio)
        if "audio" in parse_modalities(cfg.modalities):
            for part in (train, val):
                if part is not None:
                    check_audio(part.data, audio)
        return val, audio

    def sequences(self, model: CaptionModel, prepared: Prepared, batch) -> list[Sequence]:
        """The (prompt, target) token sequences of a batch's items."""
        raise NotImplementedError

    def loss(self, module, batch, *, cfg, prepared: Prepared, arm: Arm, pre, epoch: int, index: int, device):
        model = unwrapped(module)
        sequences = self.sequences(model, prepared, batch)
        with autocast(device, cfg.precision):
            packed = batch.packed.to(device) if batch.packed is not None else None
            memory = model.memory(clip_batch(model, packed))
            loss, tokens = sequence_loss(model, memory, sequences, label_smoothing=cfg.label_smoothing)
        return StepLoss(loss, tokens, len(sequences))

    def validate(self, model, prepared: Prepared, arm: Arm, pre, *, cfg, device):
        if prepared.val is None:
            return None
        return self.evaluator(
            unwrapped(model), prepared.val, pre, prepared.tokenizer, audio=prepared.extra["audio"],
            decoding=decoding_of(cfg), budget=cfg.batch_particles, device=device, precision=cfg.precision,
            workers=cfg.workers,
        )  # fmt: skip

    def checkpoint_extras(self, prepared: Prepared, arm: Arm) -> dict:
        audio = prepared.extra["audio"] if "audio" in arm.modalities else None
        return {"tokenizer": prepared.tokenizer, "audio": audio}

    # --- tubelet evaluate -------------------------------------------------------------------------------------
    def evaluate(self, model, data, pre, *, labels=None, reads=None, views=1, budget=8192, device, precision="auto",
                 workers=0) -> dict:  # fmt: skip
        return self.evaluator(
            model, data, pre, reads.tokenizer, audio=reads.audio, budget=budget, device=device, precision=precision,
            workers=workers,
        )  # fmt: skip

    def evaluation_report(self, scores: dict, models: dict, data, *, details: dict, out: Path) -> dict:
        metrics = scores["model"]
        unit, key = self.counted
        details.update({unit: metrics[key], "skipped": len(metrics["skipped"]) + len(data.data.skipped)})
        report = {**metrics, **{k: details[k] for k in ("checkpoint", "data", "split")}, "details": details}
        files = write_report_files(report, out, self.report_markdown(report))
        return {**report, "files": {k: str(v) for k, v in files.items()}}


@register
class CaptionTask(TextDecoderTask):
    """(clip window, caption) -> a causal text decoder over the clip's particles; NLL, BLEU-4, attribute match."""

    name = "caption"
    summary = "captions of clips or timed events (captions_SPLIT.jsonl or a caption column): text decoder, BLEU-4"
    Config = CaptionFields
    metrics = {"loss": False, "perplexity": False, "bleu4": True, "attribute_match": True}
    evaluator = staticmethod(evaluate_captions)
    counted = ("captions", "num_captions")

    def prepare(self, cfg, out: Path) -> Prepared:
        train = load_captions(caption_manifest(cfg.data, cfg.train_split, required=True))
        if cfg.lm:  # the LM's own tokenizer: its vocabulary is the LM's
            if cfg.modalities != "video":
                raise ConfigError("--lm: the LM bridge reads video only; drop --modalities")
            tokenizer = load_tokenizer(cfg.tokenizer or cfg.lm)
        else:
            tokenizer = decoder_tokenizer(cfg, train.captions, out)
        val, audio = self.held_out_and_audio(cfg, train, caption_manifest, load_captions)
        targets = [text_ids(tokenizer, c) for c in train.captions]
        return Prepared(train, val, tokenizer=tokenizer, extra={"audio": audio, "targets": targets})

    def arms(self, cfg, prepared: Prepared) -> list[Arm]:
        modalities = parse_modalities(cfg.modalities)
        return [Arm("+".join(modalities), Path(cfg.out), modalities)]

    def build(self, cfg, prepared: Prepared, arm: Arm) -> Built:
        if cfg.lm:
            return build_lm_captioner(cfg)
        return build_captioner(cfg, prepared.tokenizer, arm)

    def dataset(self, data: Captions, pre, reads: Reads, *, augment=None, seed=0, windows=None):
        lengths = [len(text_ids(reads.tokenizer, c)) + 2 for c in data.captions]
        return DecoderClipDataset(
            data.data, pre, reads.audio, modalities=reads.modalities, lengths=lengths, augment=augment, seed=seed,
            windows=windows,
        )  # fmt: skip

    def sequences(self, model: CaptionModel, prepared: Prepared, batch) -> list[Sequence]:
        bos, eos, targets = model.config.bos_id, model.config.eos_id, prepared.extra["targets"]
        return [Sequence(*caption_prompt(bos), targets[s] + [eos]) for s in batch.samples]

    def finish(self, cfg, prepared: Prepared, arms: list[Arm], summaries: dict[str, dict]) -> dict:
        from tubelet.models import load

        out = Path(cfg.out)
        result = {"out": str(out), "best": str(out / "best"), "last": str(out / "last"), **summaries[arms[0].name]}
        manifest = None if Path(cfg.data).is_file() else caption_manifest(cfg.data, "test")
        if manifest is None:
            log.warning("%s: no test captions; no test report", cfg.data)
            return result
        loaded = load(out / "best")
        metrics = evaluate_captions(
            loaded.model, load_captions(manifest), loaded.preprocessing, loaded.tokenizer, audio=loaded.audio,
            decoding=decoding_of(cfg), budget=cfg.batch_particles, device=resolve_device(cfg.device),
            precision=cfg.precision, workers=cfg.workers,
        )  # fmt: skip
        report = {**metrics, "checkpoint": str(out / "best"), "data": cfg.data, "split": "test"}
        result["report"] = str(write_report_files(report, out / "report", self.report_markdown(report))["json"])
        result["test"] = {k: metrics[k] for k in ("loss", "perplexity", "bleu4", "attribute_match", "num_captions")}
        return result

    def check_predict(self, loaded) -> None:
        raise ConfigError(f"{loaded.source}: a captioner writes text: tubelet caption --checkpoint C FILE")

    def caption_windows(self, loaded, path: str, windows: list[tuple[float, float]], *, device: str = "auto"):
        """One caption per ``(start s, end s)`` window of `path` (what ``tubelet summarize`` asks a caption
        checkpoint for): `caption_segments`."""
        return caption_segments(loaded, path, windows, device=device)

    # --- tubelet evaluate -------------------------------------------------------------------------------------
    def evaluation_data(self, source: str, split: str | None, loaded) -> Captions:
        manifest = Path(source) if split is None else caption_manifest(source, split, required=True)
        return load_captions(manifest)

    def report_markdown(self, report: dict, *, title: str = "") -> str:
        per = report.get("per_attribute", {})
        lines = [
            *heading_markdown("Captioning", report),
            f"{data_text(report)}: {report['num_captions']} captions, decoded from the centred window of each event.",
            "",
            "| metric | value |",
            "|---|---:|",
            f"| loss (token NLL) | {report['loss']:.4f} |",
            f"| perplexity | {report['perplexity']:.2f} |",
            f"| BLEU-4 | {report['bleu4']:.2f} |",
            f"| attribute match | {report['attribute_match']:.3f} |",
            *(f"| {name} named right | {row['match']:.3f} |" for name, row in per.items()),
            f"| exact caption | {report['exact_match']:.3f} |",
            "",
            "| reference | generated |",
            "|---|---|",
            *(f"| {e['reference']} | {e['generated']} |" for e in report.get("examples", [])),
        ]
        return "\n".join(lines) + "\n"

    def summary_line(self, report: dict) -> str:
        return (
            f"loss {report['loss']:.4f}   perplexity {report['perplexity']:.2f}   BLEU-4 {report['bleu4']:.2f}   "
            f"attribute match {report['attribute_match']:.3f}   captions {report['num_captions']}"
        )


# --- a library entry point: captions of a file's segments ------------------------------------------------------


def load_captioner(checkpoint: str | Path, **runtime):
    """A captioner or dialogue checkpoint (`tubelet.models.Loaded`).

    Raises:
        ConfigError: one line when the checkpoint is of another kind (not a caption/dialogue model).
    """
    from tubelet.models import checkpoint_kind, load

    kind = checkpoint_kind(checkpoint) if Path(checkpoint).is_dir() else None
    if kind not in ("captioner", "lm-captioner"):
        what = f"a {kind} checkpoint" if kind else "not a checkpoint directory"
        raise ConfigError(
            f"--checkpoint {checkpoint}: {what}, not a caption/dialogue model (tubelet finetune --task caption)"
        )
    return load(checkpoint, kind=kind, **runtime)


def file_data(path: str | Path) -> VideoDataset:
    """A `VideoDataset` of one file (probed).

    Raises:
        DataError: the file cannot be read (one line naming it).
    """
    info, reason = try_probe(Path(path))
    if info is None:
        raise DataError(reason or f"{path}: cannot be read")
    return VideoDataset(samples=[Sample(path=Path(path))], infos=[info], labels=[], source=str(path))


def caption_segments(
    checkpoint: str | Path | object, file: str | Path, segments: list[tuple[float, float]], *,
    decoding: Decoding = GREEDY, device: str = "auto", budget: int = 8192,
) -> list[str]:  # fmt: skip
    """One caption per segment ``(start s, end s)`` of `file`, by a captioner checkpoint (a path or a loaded one).

    A segment longer than the checkpoint's window is read at its centred window (the model was trained on windows
    of that length); a shorter one as it is.

    Raises:
        ConfigError: not a captioner checkpoint. DataError: the file cannot be read.
    """
    loaded = checkpoint if hasattr(checkpoint, "model") else load_captioner(checkpoint)
    data = file_data(file)
    duration = data.infos[0].duration_s
    pre = loaded.preprocessing
    windows = []
    for start, end in segments:
        start, end = max(0.0, float(start)), min(float(end), duration)
        if end <= start:
            raise ConfigError(f"segment ({start}, {end}) is empty or outside {file} ({duration:.2f} s)")
        middle, half = (start + end) / 2, min(end - start, pre.clip_seconds) / 2
        windows.append((0, middle - half, middle + half))
    dev = resolve_device(device)
    out = caption_windows(
        loaded.model.to(dev), data, windows, pre, loaded.tokenizer, audio=loaded.audio, decoding=decoding,
        budget=budget, device=dev,
    )  # fmt: skip
    if out["failed"]:
        raise DataError(out["failed"][0][1])
    return [c or "" for c in out["captions"]]
