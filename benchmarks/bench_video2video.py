"""Video to video: the learned interpolation and denoising models beside the classical baselines they must beat.

Run from the repository root: ``python -m benchmarks.bench_video2video [--quick] [--train-steps N]`` (trains both
models on the train split first) or ``[--interpolation C --denoise C]`` (checkpoints of ``tubelet finetune --task
interpolation|denoise``). Data: the test split of ``tubelet sample-data --video2video`` (camera pans and zooms over
photographs never used for training, a moving object, 24/30/60 fps, 320x240 and 256x256, H.264 at crf 18); the
decoded frames are the clean reference. Every method is measured on the same frames: the middle ``--seconds`` of
each clip.

- Interpolation: drop every other frame (and 3 of every 4), rebuild the dropped frames from the kept ones with
  repeat / blend / flow, PSNR and SSIM on the dropped frames; the t = 0.25 frames of the 3-of-4 drop on their own; the
  dropped frames whose pair straddles a hard cut: blind blend and flow against the cut-aware rule (nearest frame).
- Denoising: Gaussian noise of sigma 10 / 25 / 50 added to the clean decoded frames; PSNR, SSIM and temporal flicker
  (`tubelet.video2video.metrics.flicker`) of the noisy input, the temporal median (5 frames) and multi-frame NLM
  (5 frames) on a run of consecutive frames per clip.
- Speed: frames per second of each method at 320x240 on this CPU (one process).
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np

from benchmarks.common import machine_markdown, table, work_dir, write_section
from tubelet.data.sample_v2v import generate_v2v
from tubelet.io import decode
from tubelet.video2video.baselines import cuts, denoise, interpolate, same_shot
from tubelet.video2video.metrics import flicker, psnr, ssim

METHODS = ("repeat", "blend", "flow")
SIGMAS = (10.0, 25.0, 50.0)
MODEL = "model"


def data(split: str = "test") -> tuple[Path, list[dict]]:
    """The sample's `split` (generated once into the scratch directory): its folder and manifest rows."""
    root = work_dir() / ("video2video" if split == "test" else f"video2video_{split}")
    params = {"seed": 0, "duration": 3.0, split: 1 if split == "test" else 2}
    stamp = root / "bench_params.json"
    if not (stamp.exists() and json.loads(stamp.read_text()) == params):
        generate_v2v(root, seed=0, duration=3.0, per_setting={split: params[split]})
        stamp.write_text(json.dumps(params))
    return root, list(csv.DictReader(open(root / f"{split}.csv")))


def train(task: str, steps: int) -> tuple[str, dict]:
    """A `micro` restorer of `task` trained for `steps` optimizer steps on the train split: (best/, facts)."""
    from tubelet.recipes.finetune import FinetuneConfig, finetune

    root, _ = data("train")
    out = work_dir() / f"v2v_{task}"
    began = time.perf_counter()
    finetune(FinetuneConfig(task=task, data=str(root), out=str(out), model="micro", epochs=10_000, max_steps=steps,
                            workers=0, overwrite=True))  # fmt: skip
    return str(out / "best"), {"steps": steps, "train_s": round(time.perf_counter() - began)}


def rebuild(
    frames: np.ndarray, step: int, method: str, cut_aware: bool = True, model=None, fps: float = 30.0
) -> list[tuple[int, float, np.ndarray]]:
    """Keep every `step`-th frame of (T, H, W, 3) `frames`; (index, t, rebuilt frame) for each dropped one.

    `method` "model" rebuilds every frame between a kept pair in one pass of `model` (a `Restorer`)."""
    kept = np.arange(0, len(frames), step)
    kept_cuts = cuts(frames[kept])  # detected on what the interpolator sees: the kept frames
    out = []
    for k in range(len(kept) - 1):
        a, b = kept[k], kept[k + 1]
        fractions = [(i - a) / (b - a) for i in range(a + 1, b)]
        if cut_aware and not same_shot(kept_cuts, k, k + 1):
            made = [(frames[a] if t < 0.5 else frames[b]).copy() for t in fractions]
        elif method == MODEL:
            made = list(model.interpolate(frames[a], frames[b], (b - a) / fps, fractions))
        else:
            made = [interpolate(frames[a], frames[b], t, method) for t in fractions]
        out += [(a + 1 + j, t, frame) for j, (t, frame) in enumerate(zip(fractions, made))]
    return out


def interpolation(
    clips: list[tuple[np.ndarray, float]], cut_clips: list[tuple[np.ndarray, int]], model=None
) -> tuple[str, dict]:
    rows, speed = [], {}
    methods = METHODS + ((MODEL,) if model is not None else ())
    for step, name in ((2, "drop 1 of 2 (t = 0.5)"), (4, "drop 3 of 4 (t = 0.25, 0.5, 0.75)"), (4, "t = 0.25 only")):
        for method in methods:
            ps, ss, count, seconds = [], [], 0, 0.0
            for frames, fps in clips:
                began = time.perf_counter()
                rebuilt = rebuild(frames, step, method, model=model, fps=fps)
                elapsed = time.perf_counter() - began
                if name.startswith("t = 0.25"):
                    rebuilt = [r for r in rebuilt if abs(r[1] - 0.25) < 1e-9]
                for i, _, frame in rebuilt:
                    ps.append(psnr(frame, frames[i]))
                    ss.append(ssim(frame, frames[i]))
                if frames.shape[1:3] == (240, 320) and step == 2:
                    count += len(rebuilt)
                    seconds += elapsed
            if count:
                speed[method] = count / seconds
            rows.append([name, method, f"{np.mean(ps):.2f}", f"{np.mean(ss):.4f}", len(ps)])
    cut_rows = []
    for label, method, aware in (("blend, blind", "blend", False), ("flow, blind", "flow", False),
                                 ("cut-aware (nearest frame)", "blend", True)):  # fmt: skip
        ps, ss = [], []
        for frames, cut in cut_clips:
            for step in (2, 4):
                for i, _, frame in rebuild(frames, step, method, cut_aware=aware):
                    if (i - i % step) < cut <= (i - i % step) + step:  # the pair around i straddles the cut
                        ps.append(psnr(frame, frames[i]))
                        ss.append(ssim(frame, frames[i]))
        cut_rows.append([label, f"{np.mean(ps):.2f}", f"{np.mean(ss):.4f}", len(ps)])
    body = (
        "Dropped frames rebuilt from the kept ones (PSNR in dB, SSIM; mean over the dropped frames of every clip "
        "without a cut):\n\n" + table(["drop", "method", "PSNR", "SSIM", "frames"], rows)
        + "\n\nDropped frames whose two kept neighbours lie on both sides of a hard cut (drop 1 of 2 and 3 of 4 on "
        "the clips with a cut): blending mixes two shots into a ghost; the cut-aware rule (what `tubelet interpolate` "
        "does) repeats the nearer frame: no ghost, and right when the dropped frame belongs to that frame's shot (at "
        "t = 0.5 both are equally near and the later one is taken, wrong for a frame of the earlier shot):\n\n"
        + table(["rule", "PSNR", "SSIM", "frames"], cut_rows)
    )  # fmt: skip
    return body, speed


def denoising(clips: list[tuple[np.ndarray, float]], run: int, model=None) -> tuple[str, dict]:
    rng = np.random.default_rng(0)
    rows, speed = [], {}
    names = ("noisy input", "median (5 frames)", "nlm (5 frames)") + ((MODEL,) if model is not None else ())
    for sigma in SIGMAS:
        results = {name: ([], [], []) for name in names}
        for frames, fps in clips:
            start = len(frames) // 2 - run // 2
            lo, hi = start - 2, start + run + 2  # 2 frames of context each side
            clean = frames[lo:hi]
            noisy = np.clip(clean + rng.normal(0, sigma, clean.shape), 0, 255).astype(np.uint8)
            truth = clean[2:-2]
            outputs = {"noisy input": noisy[2:-2]}
            for method, name in (("median", "median (5 frames)"), ("nlm", "nlm (5 frames)")):
                began = time.perf_counter()
                outputs[name] = np.stack([denoise(noisy, i, method, window=5, sigma=sigma) for i in range(2, 2 + run)])
                if frames.shape[1:3] == (240, 320):
                    done, took = speed.get(method, (0, 0.0))
                    speed[method] = (done + run, took + time.perf_counter() - began)
            if model is not None:  # the shot's frames in overlapping runs, as `tubelet denoise` does
                began = time.perf_counter()
                outputs[MODEL] = model.denoise_sequence(noisy, np.arange(len(noisy)) / fps)[2:-2]
                if frames.shape[1:3] == (240, 320):
                    done, took = speed.get(MODEL, (0, 0.0))
                    speed[MODEL] = (done + len(noisy), took + time.perf_counter() - began)
            for name, output in outputs.items():
                results[name][0].append(psnr(output, truth))
                results[name][1].append(ssim(output, truth))
                results[name][2].append(flicker(output, truth))
        for name, (ps, ss, fl) in results.items():
            rows.append([f"{sigma:g}", name, f"{np.mean(ps):.2f}", f"{np.mean(ss):.4f}", f"{np.mean(fl):.2f}"])
    body = (
        f"Gaussian noise added to the clean decoded frames; {run} consecutive frames from the middle of each clip "
        "without a cut (flicker: mean |change of output - change of clean| between consecutive frames, 0-255 "
        "levels; lower is steadier):\n\n" + table(["sigma", "method", "PSNR", "SSIM", "flicker"], rows)
    )
    return body, {method: done / took for method, (done, took) in speed.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer denoised frames per clip")
    parser.add_argument("--seconds", type=float, default=1.0, help="seconds from the middle of each clip (default 1)")
    parser.add_argument("--interpolation", default=None, help="an interpolation checkpoint (default: train one)")
    parser.add_argument("--denoise", default=None, help="a denoise checkpoint (default: train one)")
    parser.add_argument("--train-steps", type=int, default=300, help="steps of each model trained here (300)")
    parser.add_argument("--baselines-only", action="store_true", help="no learned model")
    args = parser.parse_args(argv)
    from tubelet.tasks.restoration import Restorer

    began = time.perf_counter()
    trained = {}
    models = {}
    if not args.baselines_only:
        for task in ("interpolation", "denoise"):
            checkpoint = getattr(args, task)
            if checkpoint is None:
                checkpoint, trained[task] = train(task, args.train_steps)
            models[task] = Restorer(checkpoint, task=task)
    root, rows = data()
    clips, cut_clips = [], []
    for row in rows:
        frames, fps = decode(root / row["path"]).frames, float(row["fps"])
        if row["cut_seconds"]:
            cut_clips.append((frames, round(float(row["cut_seconds"]) * fps)))
        else:
            keep = round(args.seconds * fps) + 1
            start = max(0, (len(frames) - keep) // 2)
            clips.append((frames[start : start + keep], fps))
    interp_body, interp_speed = interpolation(clips, cut_clips, models.get("interpolation"))
    noise_body, noise_speed = denoising(clips, run=6 if args.quick else 12, model=models.get("denoise"))
    speed_rows = [[m, f"{interp_speed[m]:.1f}"] for m in METHODS + ((MODEL,) if models else ())] + [
        [f"{m} (5 frames)" if m != MODEL else "denoise model", f"{noise_speed[m]:.2f}"]
        for m in ("median", "nlm") + ((MODEL,) if models else ())
    ]
    sizes = sorted({f"{c.shape[2]}x{c.shape[1]}" for c, _ in clips})
    how = []
    for task, model in models.items():
        from tubelet.checkpoint import load_training_args

        facts = trained.get(task)
        args_of = load_training_args(getattr(args, task)) if getattr(args, task) else {}
        origin = (f"trained here: `micro` encoder, {facts['steps']} steps on the train split's 15 clips "
                  f"(photographs never in the test split), {facts['train_s']} s" if facts else
                  f"checkpoint trained with `tubelet finetune --task {task} --model {args_of.get('model')} "
                  f"--max-steps {args_of.get('max_steps')}` on the `sample-data --video2video` train split (15 "
                  "clips; photographs never in the test split)")  # fmt: skip
        how.append(
            f"- {task} model ({origin}): tiles of {model.tile} px, tubelets {model.pre.tubelet}"
            + (f", estimate = {model.estimate}" if task == "interpolation" else f", runs of {model.frames}")
        )
    lead = (
        "**The learned particle restorers (`tubelet finetune --task interpolation|denoise`) beside the classical "
        "baselines** (interpolation: must beat blending, aims for flow; denoising: aims to beat NLM at sigma 25 "
        "and 50). The model's rows are its own frames; each row compares the same frames.\n\n" + "\n".join(how)
        if models
        else "**Classical baselines only (run with --baselines-only).**"
    )
    body = (
        lead + "\n\n"
        f"{len(clips)} test clips without a cut ({', '.join(sizes)}; 24/30/60 fps; the middle {args.seconds:g} s of "
        f"each 3 s clip) and {len(cut_clips)} with a hard cut, rendered from photographs never used for training.\n\n"
        "### Interpolation\n\n" + interp_body + "\n\n### Denoising\n\n" + noise_body
        + "\n\n### Speed at 320x240 (frames per second, this CPU, one process)\n\n"
        + table(["method", "frames/s"], speed_rows)
        + "\n\nFor scale (different data): RIFE/FILM/EMA-VFI reach 35.6-36.6 dB on Vimeo90K triplets; FastDVDnet "
        "33.4 dB on Set8 at sigma 20.\n\n"
        + machine_markdown() + f"\n- wall time: {time.perf_counter() - began:.0f} s"
    )  # fmt: skip
    path = write_section("bench_video2video", body, title="Video to video: models and baselines")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
