"""TransformersRunner throughput: batched vs batch size 1, and where the time goes.

Run:
    python benchmarks/transformers_runner.py                      # tiny random model, CPU
    python benchmarks/transformers_runner.py --shape medgemma-4b  # MedGemma 4B shape, GPU
    python benchmarks/transformers_runner.py --shape medgemma-4b --dry-run   # meta device

Default (`--shape tiny`): the tiny random-weight Gemma 3 from `medbatch.testing` (its answers
are random; only speed is measured) on synthetic ECG-sized JPEGs (1,100 x 850 px, so decoding
costs what a real page costs). Prints images/s for each batch size next to the baseline (batch
size 1, same run), for free text and for constrained single-label answers, and the share of
wall time spent decoding + preprocessing images vs in the model. Target: batched >= 3x.
First, at batch 16 (`--peers-only` stops there), medbatch next to what a user writes instead,
on the same images in the same run, contenders measured round robin (medians of `--repeat`):
a plain processor + `model.generate` loop (constrained: with a label trie as
`prefix_allowed_tokens_fn`) and HF `pipeline("image-text-to-text", batch_size=16)` (free text
only: it takes no logits processor). Images/s and process CPU-seconds (all threads), with
`BENCH` lines; target: >= the plain loop's images/s at <= its CPU.

`--shape medgemma-4b` builds a random-weight model with MedGemma 4B's real configuration
(Gemma 3 4B text: hidden 2560, 34 layers, 8 heads / 4 KV heads of 256, MLP 10240, vocabulary
262,208; SigLIP so400m at 896 px, patch 14, 27 layers, hidden 1152; 256 image tokens) directly
on the GPU in bf16 (nothing is downloaded; weights are noise, so answers are meaningless) and
measures images/s and tokens/s for free text (1,024 new tokens) and constrained answers by
batch size, next to an arithmetic roofline: prefill FLOPs ~ 2 x params x tokens against the
card's peak bf16, decode steps bounded by weight bytes / memory bandwidth. It refuses to run
on CPU unless `--device cpu --force` (a 4B model decoding 1,024 tokens on CPU takes hours).
`--dry-run` only builds the configuration and the model on the meta device and prints the
parameter counts and the roofline for the chosen card (no GPU needed).
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from medbatch.images import load_image
from medbatch.records import (
    ChatMessage,
    GenerationParams,
    ImagePart,
    ImageRef,
    InferenceRequest,
    LabelConstraint,
    TextPart,
)
from medbatch.runners._hf import loading
from medbatch.runners.transformers import TransformersRunner
from medbatch.testing.tiny_vlm import ECG_LABELS, tiny_vlm

PROMPT = (
    "Analyze this 12-lead ECG following the standard clinical approach, then classify it as "
    "ONE of: NORMAL, ABNORMAL_HEARTBEAT, MYOCARDIAL_INFARCTION, POST_MI."
)
SYSTEM = "You are a medical AI assistant specialized in ECG analysis."

# Peak dense bf16 FLOP/s and memory bandwidth (bytes/s) from the vendors' data sheets (SXM
# parts); the roofline is only as good as these, so the card is printed with them.
CARDS: dict[str, tuple[float, float]] = {
    "H200": (989e12, 4.8e12),
    "H100": (989e12, 3.35e12),
    "A100": (312e12, 2.0e12),
    "L40S": (362e12, 0.864e12),
    "A10G": (70e12, 0.6e12),
    "L4": (121e12, 0.3e12),
}


def medgemma_4b_config(vocab_ids: dict[str, int] | None = None) -> Any:
    """A `Gemma3Config` with MedGemma 4B's real shapes (google/medgemma-4b-it config.json)."""
    from transformers import Gemma3Config, Gemma3TextConfig, SiglipVisionConfig

    ids = vocab_ids or {}
    text = Gemma3TextConfig(
        vocab_size=262_208,
        hidden_size=2560,
        intermediate_size=10_240,
        num_hidden_layers=34,
        num_attention_heads=8,
        num_key_value_heads=4,
        head_dim=256,
        query_pre_attn_scalar=256,
        sliding_window=1024,
        max_position_embeddings=131_072,
        rope_scaling={"rope_type": "linear", "factor": 8.0},
        pad_token_id=ids.get("<pad>", 0),
        bos_token_id=ids.get("<bos>", 2),
        eos_token_id=ids.get("<eos>", 1),
    )
    vision = SiglipVisionConfig(
        hidden_size=1152,
        intermediate_size=4304,
        num_hidden_layers=27,
        num_attention_heads=16,
        image_size=896,
        patch_size=14,
        layer_norm_eps=1e-6,
        vision_use_head=False,
    )
    config = Gemma3Config(
        text_config=text,
        vision_config=vision,
        mm_tokens_per_image=256,
        boi_token_index=ids.get("<start_of_image>", 255_999),
        eoi_token_index=ids.get("<end_of_image>", 256_000),
        image_token_index=ids.get("<image_soft_token>", 262_144),
    )
    config.eos_token_id = [ids.get("<eos>", 1), ids.get("<end_of_turn>", 106)]
    return config


@dataclass
class Roofline:
    text_params: int
    vision_params: int
    peak_flops: float
    bandwidth: float
    card: str

    def prefill_s(self, prompt_tokens: int, images: int, patches: int) -> float:
        flops = 2 * self.text_params * prompt_tokens + 2 * self.vision_params * patches * images
        return flops / self.peak_flops

    def decode_step_s(self, bytes_per_param: int = 2) -> float:
        # Every step reads all text weights once (KV cache traffic ignored: small at batch 1).
        return self.text_params * bytes_per_param / self.bandwidth


def _card(name: str | None, peak_tflops: float | None, bandwidth_gbs: float | None) -> Any:
    if peak_tflops and bandwidth_gbs:
        return name or "custom", peak_tflops * 1e12, bandwidth_gbs * 1e9
    for key, (flops, bandwidth) in CARDS.items():
        if name and key in name.upper():
            return name, flops, bandwidth
    return (name or "H100 (assumed)"), *CARDS["H100"]


def _ecg_jpeg(seed: int, size: tuple[int, int]) -> bytes:
    """A page with a grid and a trace: decodes like a real ECG scan."""
    width, height = size
    image = Image.new("RGB", size, (255, 240, 240))
    draw = ImageDraw.Draw(image)
    for x in range(0, width, 20):
        draw.line((x, 0, x, height), fill=(240, 180, 180))
    for y in range(0, height, 20):
        draw.line((0, y, width, y), fill=(240, 180, 180))
    for row in range(4):
        base = 100 + row * 200
        points = [
            (x, base - (60 if (x + seed * 17) % 160 < 6 else 0) + (seed * 3 + x) % 7)
            for x in range(0, width, 4)
        ]
        draw.line(points, fill=(0, 0, 0), width=2)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _requests(
    images: Sequence[bytes], params: GenerationParams, constraint: LabelConstraint | None
) -> list[InferenceRequest]:
    return [
        InferenceRequest(
            record_id=f"ecg-{index}",
            messages=(
                ChatMessage.text("system", SYSTEM),
                ChatMessage(
                    role="user",
                    content=(TextPart(text=PROMPT), ImagePart(image=ImageRef.from_bytes(data))),
                ),
            ),
            params=params,
            constraint=constraint,
        )
        for index, data in enumerate(images)
    ]


@dataclass
class Measure:
    batch_size: int
    seconds: float
    images: int
    new_tokens: int
    model_seconds: float

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.seconds


def _timed_run(runner: TransformersRunner, requests: Sequence[InferenceRequest]) -> Measure:
    """Run all requests; also time the model calls (generate + scoring) alone."""
    spent = [0.0]
    original = runner._generate

    def generate(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        out = list(original(*args, **kwargs))
        spent[0] += time.perf_counter() - started
        return iter(out)

    runner._generate = generate  # type: ignore[method-assign]
    try:
        started = time.perf_counter()
        responses = list(runner.run(requests))
        seconds = time.perf_counter() - started
    finally:
        del runner._generate
    failed = [r for r in responses if r.error is not None]
    if failed:
        raise SystemExit(f"{len(failed)} requests failed, first: {failed[0].error}")
    tokens = sum((r.usage.completion_tokens or 0) for r in responses if r.usage)
    return Measure(runner.batch_size or 0, seconds, len(responses), tokens, spent[0])


def _sweep(
    make_runner: Callable[[int], TransformersRunner],
    batch_sizes: Sequence[int],
    requests: Sequence[InferenceRequest],
    title: str,
) -> list[Measure]:
    print(f"\n{title}")
    print(f"{'batch':>5} {'images/s':>9} {'tokens/s':>9} {'vs bs=1':>8} {'model share':>11}")
    results: list[Measure] = []
    for batch_size in batch_sizes:
        runner = make_runner(batch_size)
        with runner:
            _timed_run(runner, requests[: max(batch_size, 2)])  # warm-up
            measure = _timed_run(runner, requests)
        results.append(measure)
        base = results[0]
        print(
            f"{batch_size:>5} {measure.images_per_s:>9.2f} {measure.tokens_per_s:>9.1f} "
            f"{measure.images_per_s / base.images_per_s:>7.2f}x "
            f"{measure.model_seconds / measure.seconds:>10.0%}"
        )
    return results


def _image_share(runner: TransformersRunner, requests: Sequence[InferenceRequest]) -> None:
    """Serial cost of decoding alone, and of decoding + chat template + processor."""
    refs = [request.images[0] for request in requests]
    started = time.perf_counter()
    for ref in refs:
        load_image(ref)
    decode = time.perf_counter() - started
    with runner:
        started = time.perf_counter()
        for request in requests:
            runner._prepare(request)
        prepare = time.perf_counter() - started
    print(
        f"\nimage work, serial, per image: JPEG decode {decode / len(refs) * 1e3:.1f} ms, "
        f"decode + template + processor {prepare / len(refs) * 1e3:.1f} ms "
        f"(done in {runner.image_workers} background threads, one batch ahead)"
    )


PEER_BATCH = 16


def _label_trie_fn(tokenizer: Any, labels: Sequence[str], prompt_length: int) -> Any:
    """`prefix_allowed_tokens_fn` for "exactly one label, then end": what a user writes."""
    trie: dict[int, Any] = {}
    for label in labels:
        node = trie
        for token in tokenizer(label, add_special_tokens=False).input_ids:
            node = node.setdefault(token, {})
    end = [tokenizer.eos_token_id]

    def allowed(_: int, input_ids: Any) -> list[int]:
        node = trie
        for token in input_ids[prompt_length:].tolist():
            if token not in node:
                return end
            node = node[token]
        return list(node) or end

    return allowed


def _plain_loop(path: Path, images: Sequence[bytes], new_tokens: int, constrained: bool) -> int:
    """Processor + `model.generate`, 16 images at a time: what a user writes instead."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(path)
    processor.tokenizer.padding_side = "left"
    model = AutoModelForImageTextToText.from_pretrained(path).eval()
    count = 0
    for start in range(0, len(images), PEER_BATCH):
        chunk = [
            Image.open(io.BytesIO(data)).convert("RGB")
            for data in images[start : start + PEER_BATCH]
        ]
        texts = [
            processor.apply_chat_template(_chat(image), add_generation_prompt=True, tokenize=False)
            for image in chunk
        ]
        inputs = processor(
            text=texts,
            images=[[image] for image in chunk],
            padding=True,
            return_tensors="pt",
            add_special_tokens=False,
        )
        extra: dict[str, Any] = {}
        if constrained:
            extra["prefix_allowed_tokens_fn"] = _label_trie_fn(
                processor.tokenizer, ECG_LABELS, inputs["input_ids"].shape[1]
            )
        with torch.inference_mode():
            out = model.generate(**inputs, max_new_tokens=new_tokens, do_sample=False, **extra)
        count += len(processor.batch_decode(out[:, inputs["input_ids"].shape[1] :]))
    return count


def _chat(image: Any) -> list[dict[str, Any]]:
    return [
        {"role": "system", "content": [{"type": "text", "text": SYSTEM}]},
        {
            "role": "user",
            "content": [{"type": "text", "text": PROMPT}, {"type": "image", "image": image}],
        },
    ]


def _hf_pipeline(path: Path, images: Sequence[bytes], new_tokens: int) -> int:
    """`transformers.pipeline("image-text-to-text", batch_size=16)` on the in-memory model."""
    from transformers import AutoModelForImageTextToText, AutoProcessor, pipeline

    processor = AutoProcessor.from_pretrained(path)
    processor.tokenizer.padding_side = "left"
    model = AutoModelForImageTextToText.from_pretrained(path).eval()
    pipe = pipeline("image-text-to-text", model=model, processor=processor, batch_size=PEER_BATCH)
    chats = [_chat(Image.open(io.BytesIO(data)).convert("RGB")) for data in images]
    out = pipe(text=chats, max_new_tokens=new_tokens, do_sample=False)
    return len(out)


def _clocked(work: Callable[[], int]) -> tuple[float, float]:
    """(images/s, CPU-seconds of this process, all threads) for one call of `work`."""
    wall, cpu = time.perf_counter(), time.process_time()
    count = work()
    return count / (time.perf_counter() - wall), time.process_time() - cpu


def _versus_peers(
    path: Path,
    images: Sequence[bytes],
    make: Callable[[int], TransformersRunner],
    args: argparse.Namespace,
) -> None:
    """medbatch at batch 16 next to a plain generate loop and HF's pipeline, same images."""
    free = _requests(images, GenerationParams(max_tokens=args.new_tokens), None)
    choice = _requests(images, GenerationParams(max_tokens=8), LabelConstraint(labels=ECG_LABELS))

    def medbatch(requests: Sequence[InferenceRequest]) -> Callable[[], int]:
        def work() -> int:
            with make(PEER_BATCH) as runner:
                responses = list(runner.run(requests))
            if any(r.error is not None for r in responses):
                raise SystemExit(f"medbatch failed: {next(r.error for r in responses if r.error)}")
            return len(responses)

        return work

    contenders: dict[str, dict[str, Callable[[], int]]] = {
        "free text": {
            "medbatch": medbatch(free),
            "plain loop": lambda: _plain_loop(path, images, args.new_tokens, False),
            "HF pipeline": lambda: _hf_pipeline(path, images, args.new_tokens),
        },
        "constrained": {
            "medbatch": medbatch(choice),
            "plain loop": lambda: _plain_loop(path, images, 8, True),
        },
    }
    print(
        f"\nbatch {PEER_BATCH}, {len(images)} images, medians of {args.repeat} "
        "(model load included for every contender; CPU = process CPU-seconds, all threads)"
    )
    print(f"{'mode':<12} {'contender':<12} {'images/s':>9} {'CPU-s':>7}")
    for mode, runs in contenders.items():
        # Round robin, so a burst of load from elsewhere hits every contender alike.
        samples: dict[str, list[tuple[float, float]]] = {}
        for name, work in runs.items():
            try:
                work()  # warm-up: first-call costs (imports, kernels) out of the figure
                samples[name] = []
            except Exception as exc:  # a peer that cannot run offline is reported, not fatal
                print(f"{mode:<12} {name:<12} none: {type(exc).__name__}: {str(exc)[:80]}")
        for _ in range(args.repeat):
            for name, measured in samples.items():
                measured.append(_clocked(runs[name]))
        medians: dict[str, tuple[float, float]] = {
            name: (
                statistics.median(rate for rate, _ in runs_of),
                statistics.median(cpu for _, cpu in runs_of),
            )
            for name, runs_of in samples.items()
        }
        for name, (rate, cpu) in medians.items():
            print(f"{mode:<12} {name:<12} {rate:>9.2f} {cpu:>7.2f}")
        if mode == "constrained" and "HF pipeline" not in runs:
            print(f"{mode:<12} {'HF pipeline':<12} none: the pipeline takes no logits processor")
        ours = medians.get("medbatch")
        for peer in ("plain loop", "HF pipeline"):
            theirs = medians.get(peer)
            if ours is None or theirs is None:
                continue
            target = peer == "plain loop"
            for unit, index, lower in (("images/s", 0, False), ("CPU-s", 1, True)):
                ratio = theirs[index] / ours[index] if lower else ours[index] / theirs[index]
                figure = f"{mode} {unit}, vs {peer} (tiny Gemma 3, batch 16)"
                payload: dict[str, Any] = {
                    "figure": figure,
                    "medbatch": round(ours[index], 3),
                    "baseline": round(theirs[index], 3),
                    "unit": unit,
                    "ratio": round(ratio, 3),
                    "lower_is_better": lower,
                }
                if target:
                    payload["target"] = ">= plain loop images/s at <= its CPU"
                    payload["met"] = ours[0] >= theirs[0] and ours[1] <= theirs[1]
                print("BENCH " + json.dumps(payload))


def run_tiny(args: argparse.Namespace) -> None:
    folder = Path(args.model_dir or tempfile.mkdtemp(prefix="medbatch-bench-")) / "tiny-gemma3"
    path = tiny_vlm(folder)
    print("tiny random-weight Gemma 3 (answers are random; speed only), CPU")
    images = [_ecg_jpeg(seed, (1100, 850)) for seed in range(args.images)]
    batch_sizes = sorted({1, *args.batch_sizes})

    def make(batch_size: int) -> TransformersRunner:
        # No `num_image_workers` unless asked: the runner sizes its pool itself.
        workers = {} if args.workers is None else {"num_image_workers": args.workers}
        return TransformersRunner(path, device="cpu", batch_size=batch_size, **workers)

    free = _requests(images, GenerationParams(max_tokens=args.new_tokens), None)
    choice = _requests(images, GenerationParams(max_tokens=8), LabelConstraint(labels=ECG_LABELS))
    _versus_peers(path, images, make, args)
    if args.peers_only:
        return
    _image_share(make(1), free)
    free_results = _sweep(make, batch_sizes, free, f"free text, {args.new_tokens} new tokens")
    choice_results = _sweep(make, batch_sizes, choice, "constrained single label + label scores")
    for name, results in (("free text", free_results), ("constrained", choice_results)):
        best = max(results, key=lambda m: m.images_per_s)
        ratio = best.images_per_s / results[0].images_per_s
        verdict = "meets" if ratio >= 3 else "MISSES"
        print(f"{name}: best batch {best.batch_size} is {ratio:.1f}x batch 1 ({verdict} 3x)")


def _build_4b(device: str, dtype: Any, tokenizer: Any) -> Any:
    import torch
    from transformers import Gemma3ForConditionalGeneration

    names = ("<pad>", "<eos>", "<bos>", "<end_of_turn>", "<start_of_image>", "<end_of_image>")
    ids = {name: tokenizer.convert_tokens_to_ids(name) for name in names}
    ids["<image_soft_token>"] = tokenizer.image_token_id
    config = medgemma_4b_config(ids)
    if device == "meta":
        with torch.device("meta"):
            return Gemma3ForConditionalGeneration(config)
    # Built straight on the card (seconds, no 8 GB checkpoint to write and read back).
    with torch.device(device):
        model = Gemma3ForConditionalGeneration(config)
    generator = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():  # tied embeddings come once: the tie holds
            parameter.data = torch.empty_like(parameter, dtype=dtype).normal_(
                0.0, 0.02, generator=generator
            )
    # Only parameters are cast: rotary buffers stay float32, as from_pretrained keeps them.
    return model.eval()


def _count(model: Any) -> tuple[int, int]:
    vision = sum(p.numel() for p in model.model.vision_tower.parameters())
    vision += sum(p.numel() for p in model.model.multi_modal_projector.parameters())
    total = sum(p.numel() for p in model.parameters())
    return total - vision, vision


def run_4b(args: argparse.Namespace) -> None:
    import torch
    from transformers import AutoProcessor, Gemma3ImageProcessorPil, Gemma3Processor

    device = "meta" if args.dry_run else args.device
    if device == "cpu" and not args.force:
        raise SystemExit(
            "refusing to run the MedGemma 4B shape on CPU: decoding 1,024 tokens per image "
            "would take hours. Use a GPU (--device cuda), or --dry-run to check the "
            "configuration on the meta device, or --device cpu --force if you really mean it."
        )
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no GPU visible: use --dry-run to check the configuration only")

    # The tiny model's tokenizer and chat template with MedGemma's image processing (896 px,
    # 256 soft tokens per image); the model's vocabulary is the real 262,208.
    tiny = tiny_vlm(Path(args.model_dir or tempfile.mkdtemp(prefix="medbatch-bench-")) / "tiny")
    small = AutoProcessor.from_pretrained(tiny)
    processor = Gemma3Processor(
        image_processor=Gemma3ImageProcessorPil(
            size={"height": 896, "width": 896}, image_mean=[0.5] * 3, image_std=[0.5] * 3
        ),
        tokenizer=small.tokenizer,
        chat_template=small.chat_template,
        image_seq_length=256,
    )
    model = _build_4b(device, torch.bfloat16, small.tokenizer)
    text_params, vision_params = _count(model)
    name = torch.cuda.get_device_name() if device == "cuda" else args.card
    card, peak, bandwidth = _card(name, args.peak_tflops, args.bandwidth_gbs)
    roof = Roofline(text_params, vision_params, peak, bandwidth, card)
    print(
        f"MedGemma 4B shape (random weights): text {text_params / 1e9:.2f} B params, vision "
        f"{vision_params / 1e9:.2f} B; card {card}: {peak / 1e12:.0f} TFLOP/s bf16, "
        f"{bandwidth / 1e12:.2f} TB/s"
    )
    prompt_tokens = 330  # chat template + this prompt + 256 image tokens, roughly
    patches = (896 // 14) ** 2
    step = roof.decode_step_s()
    print(
        f"roofline per image: prefill >= {roof.prefill_s(prompt_tokens, 1, patches) * 1e3:.1f} "
        f"ms; a decode step >= {step * 1e3:.2f} ms at any batch size up to the compute bound, "
        f"so tokens/s <= {1 / step:.0f} x batch size"
    )
    if args.dry_run:
        print("dry run: configuration and model built on the meta device; nothing measured")
        return

    loaded = loading.Loaded(
        processor=processor,
        model=model,
        tokenizer=small.tokenizer,
        device=torch.device("cuda"),
        dtype=torch.bfloat16,
        end_ids=loading.end_token_ids(model, small.tokenizer),
        pad_id=int(small.tokenizer.pad_token_id),
        cache_kwarg=_cache_kwarg(model),
    )

    def make(batch_size: int) -> TransformersRunner:
        runner = TransformersRunner(
            tiny, device="cuda", batch_size=batch_size, num_image_workers=args.workers
        )
        runner._loaded = replace(loaded)  # the 4B model, not the tiny one in `tiny`
        return runner

    images = [_ecg_jpeg(seed, (2200, 1700)) for seed in range(args.images)]
    batch_sizes = sorted({1, *args.batch_sizes})
    free = _requests(images, GenerationParams(max_tokens=args.new_tokens), None)
    choice = _requests(images, GenerationParams(max_tokens=8), LabelConstraint(labels=ECG_LABELS))
    free_results = _sweep(make, batch_sizes, free, f"free text, {args.new_tokens} new tokens")
    for measure in free_results:
        bound = measure.batch_size / step
        per_row = measure.tokens_per_s / max(1, measure.batch_size)
        print(
            f"  batch {measure.batch_size}: {measure.tokens_per_s:.0f} tokens/s vs decode bound "
            f"{bound:.0f} ({measure.tokens_per_s / bound:.0%}); {per_row:.0f} tokens/s per row"
        )
    choice_results = _sweep(make, batch_sizes, choice, "constrained single label + label scores")
    for measure in choice_results:
        floor = roof.prefill_s(prompt_tokens, 1, patches)
        achieved = 1 / measure.images_per_s
        print(
            f"  batch {measure.batch_size}: {achieved * 1e3:.1f} ms/image vs prefill floor "
            f"{floor * 1e3:.1f} ms ({floor / achieved:.0%} of peak)"
        )


def _cache_kwarg(model: Any) -> str:
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", choices=("tiny", "medgemma-4b"), default="tiny")
    parser.add_argument("--device", choices=("cuda", "cpu"), default=None)
    parser.add_argument("--force", action="store_true", help="allow the 4B shape on CPU")
    parser.add_argument("--dry-run", action="store_true", help="4B: build on meta device only")
    parser.add_argument("--images", type=int, default=None, help="images per measurement")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=None)
    parser.add_argument("--new-tokens", type=int, default=None, help="free-text answer length")
    parser.add_argument(
        "--workers", type=int, default=None, help="image threads (default: the runner's own)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per peer figure (median)")
    parser.add_argument(
        "--peers-only", action="store_true", help="tiny: only medbatch vs its peers, batch 16"
    )
    parser.add_argument("--model-dir", default=None, help="where to build the tiny model")
    parser.add_argument("--card", default=None, help="card name for the roofline (dry run)")
    parser.add_argument("--peak-tflops", type=float, default=None)
    parser.add_argument("--bandwidth-gbs", type=float, default=None)
    args = parser.parse_args(argv)
    if args.shape == "tiny":
        args.images = args.images or 48
        args.batch_sizes = args.batch_sizes or [1, 4, 8, 16]
        args.new_tokens = args.new_tokens or 32
        run_tiny(args)
    else:
        args.device = args.device or "cuda"
        args.images = args.images or 32
        args.batch_sizes = args.batch_sizes or [1, 4, 8, 16]
        args.new_tokens = args.new_tokens or 1024
        run_4b(args)


if __name__ == "__main__":
    sys.exit(main())
