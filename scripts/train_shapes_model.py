"""Train the small ResNet shipped with maskbench for the offline shapes benchmark.

The network is trained from scratch, on CPU, on clean images only (no masks, no fills),
with fixed seeds and deterministic data, then stored as safetensors (float16 by default)
next to a JSON file of metadata. The held-out accuracy recorded in the JSON is measured
on the test split *with the stored (rounded) weights*.

Run from the repository root::

    python scripts/train_shapes_model.py            # writes maskbench/benchmark/weights/
    python scripts/train_shapes_model.py --out /tmp/w --epochs 2 --train-n 2000
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import timm
import torch
import torch.nn.functional as F
from torch import nn

from maskbench.benchmark.shapes import SHAPE_CLASSES, generate_shapes

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "maskbench" / "benchmark" / "weights"

TIMM_NAME = "resnet18"
#: A narrow ResNet with one BasicBlock per stage, a 3x3 "deep" stem and total stride 32.
TIMM_KWARGS: dict[str, Any] = {
    "num_classes": len(SHAPE_CLASSES),
    "layers": [1, 1, 1, 1],
    "channels": [16, 32, 64, 128],
    "stem_type": "deep",
    "stem_width": 8,
}
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (defaults reproduce the shipped weights)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory")
    p.add_argument("--name", default="shapes_resnet", help="file stem of the outputs")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--train-n", type=int, default=16_000, help="training images")
    p.add_argument("--data-seed", type=int, default=0, help="benchmark seed of the train split")
    p.add_argument("--heldout-n", type=int, default=1000, help="held-out (test split) images")
    p.add_argument("--heldout-seed", type=int, default=0, help="benchmark seed of the test split")
    p.add_argument("--size", type=int, default=96, help="image side (multiple of 32)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-3, help="peak AdamW learning rate")
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0, help="seed of initialisation and batches")
    p.add_argument("--warmup-steps", type=int, default=100)
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1: on a shared 2-core machine, 2 threads ran 3-10x slower)",
    )
    p.add_argument("--log-every", type=int, default=0, help="print every N steps (0: off)")
    p.add_argument("--dtype", choices=("float16", "float32"), default="float16")
    return p.parse_args(argv)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Store [0, 1] images compactly as uint8 (rounded)."""
    return (images * 255.0).round_().to(torch.uint8)


def augment(x: torch.Tensor, generator: torch.Generator, pad: int = 8) -> torch.Tensor:
    """Standard label-preserving augmentation of a (B, 3, H, W) [0, 1] batch.

    Every shape class is closed under rotation and mirroring, so the 8 dihedral
    transforms keep the label; plus a random translation (reflect padding + crop) and a
    per-image brightness/contrast jitter.
    """
    b, _, h, w = x.shape
    out = torch.empty_like(x)
    dihedral = torch.randint(8, (b,), generator=generator)
    for k in range(8):
        idx = (dihedral == k).nonzero().flatten()
        if idx.numel():
            part = torch.rot90(x[idx], k % 4, dims=(2, 3))
            out[idx] = part.flip(3) if k >= 4 else part
    padded = F.pad(out, (pad, pad, pad, pad), mode="reflect")
    offsets = torch.randint(2 * pad + 1, (b, 2), generator=generator).tolist()
    out = torch.stack(
        [padded[i, :, dy : dy + h, dx : dx + w] for i, (dy, dx) in enumerate(offsets)]
    )
    brightness = (torch.rand(b, 1, 1, 1, generator=generator) - 0.5) * 0.2
    contrast = 0.8 + 0.4 * torch.rand(b, 1, 1, 1, generator=generator)
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    return ((out - mean) * contrast + mean + brightness).clamp_(0.0, 1.0)


def normalise(x: torch.Tensor) -> torch.Tensor:
    """Pixel space [0, 1] to the network's input space."""
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (x - mean) / std


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to zero."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * 0.5 * (1.0 + math.cos(math.pi * progress))


@torch.no_grad()
def accuracy(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch: int = 250
) -> float:
    """Top-1 accuracy of ``model`` (eval mode) on pixel-space ``images``."""
    model.eval()
    correct = 0
    for i in range(0, len(labels), batch):
        logits = model(normalise(images[i : i + batch].float()))
        correct += int((logits.argmax(1) == labels[i : i + batch]).sum())
    return correct / max(1, len(labels))


def train(
    args: argparse.Namespace,
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    heldout: tuple[torch.Tensor, torch.Tensor],
) -> None:
    """Train ``model`` in place on uint8 ``images``, printing progress every epoch."""
    generator = torch.Generator().manual_seed(args.seed)
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": args.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=args.lr,
    )
    steps_per_epoch = len(labels) // args.batch_size
    total = steps_per_epoch * args.epochs
    step = 0
    for epoch in range(args.epochs):
        model.train()
        start, seen, loss_sum, correct = time.time(), 0, 0.0, 0
        order = torch.randperm(len(labels), generator=generator)
        for b in range(steps_per_epoch):
            idx = order[b * args.batch_size : (b + 1) * args.batch_size]
            x = augment(images[idx].float() / 255.0, generator)
            y = labels[idx]
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, total, args.lr, warmup=args.warmup_steps)
            logits = model(normalise(x))
            loss = F.cross_entropy(logits, y, label_smoothing=args.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            seen += len(y)
            loss_sum += float(loss.detach()) * len(y)
            correct += int((logits.argmax(1) == y).sum())
            if args.log_every and step % args.log_every == 0:
                print(
                    f"  step {step}/{total}: loss {loss_sum / seen:.3f} acc {correct / seen:.3f}",
                    flush=True,
                )
        val = accuracy(model, *heldout) if heldout[1].numel() else float("nan")
        print(
            f"epoch {epoch + 1}/{args.epochs}: loss {loss_sum / seen:.3f} "
            f"train-acc {correct / seen:.3f} check-acc {val:.3f} "
            f"({time.time() - start:.0f} s, {seen / (time.time() - start):.0f} img/s)",
            flush=True,
        )


def save_weights(args: argparse.Namespace, model: nn.Module) -> Path:
    """Write the network's state dict as ``<name>.safetensors`` (floats in ``args.dtype``)."""
    args.out.mkdir(parents=True, exist_ok=True)
    dtype = getattr(torch, args.dtype)
    state = {
        k: (v.to(dtype) if v.is_floating_point() else v).contiguous()
        for k, v in model.state_dict().items()
    }
    weights = args.out / f"{args.name}.safetensors"
    safetensors.torch.save_file(state, str(weights), metadata={"format": "pt"})
    return weights


def load_stored(weights: Path) -> nn.Module:
    """Re-create the network from the stored file exactly as users will."""
    model = timm.create_model(TIMM_NAME, **TIMM_KWARGS)
    state = safetensors.torch.load_file(str(weights))
    reference = model.state_dict()
    model.load_state_dict({k: v.to(reference[k].dtype) for k, v in state.items()})
    return model.eval()


def main(argv: list[str] | None = None) -> None:
    """Generate data, train, store the weights, measure held-out accuracy, write JSON."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    torch.use_deterministic_algorithms(True)
    t0, c0 = time.time(), time.process_time()
    train_set = generate_shapes(args.train_n, size=args.size, seed=args.data_seed, split="train")
    images, labels = to_uint8(train_set.images), train_set.labels
    del train_set
    heldout = generate_shapes(args.heldout_n, size=args.size, seed=args.heldout_seed, split="test")
    check = (heldout.images[:300], heldout.labels[:300])
    print(
        f"data: {args.train_n} train + {args.heldout_n} held-out images in {time.time() - t0:.0f} s"
    )

    model = timm.create_model(TIMM_NAME, **TIMM_KWARGS)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: timm {TIMM_NAME} {TIMM_KWARGS}, {n_params} parameters")
    t1, c1 = time.time(), time.process_time()
    train(args, model, images, labels, check)
    train_seconds, train_cpu_seconds = time.time() - t1, time.process_time() - c1

    meta: dict[str, Any] = {
        "timm_name": TIMM_NAME,
        "timm_kwargs": TIMM_KWARGS,
        "num_classes": len(SHAPE_CLASSES),
        "classes": list(SHAPE_CLASSES),
        "mean": list(MEAN),
        "std": list(STD),
        "image_size": args.size,
        "dataset": "maskbench.benchmark.shapes.generate_shapes",
        "train_n": args.train_n,
        "train_seed": args.data_seed,
        "train_split": "train",
        "heldout_split": "test",
        "heldout_n": args.heldout_n,
        "heldout_seed": args.heldout_seed,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "weight_decay": args.weight_decay,
        "label_smoothing": args.label_smoothing,
        "warmup_steps": args.warmup_steps,
        "optimizer": "AdamW, linear warm-up then cosine decay to 0",
        "augmentation": "dihedral (rot90/flip), translate +-8 px (reflect), brightness/contrast",
        "seed": args.seed,
        "threads": args.threads,
        "num_parameters": n_params,
        "dtype": args.dtype,
        "train_seconds": round(train_seconds, 1),
        "train_cpu_seconds": round(train_cpu_seconds, 1),
        "torch_version": torch.__version__,
        "timm_version": timm.__version__,
    }
    weights = save_weights(args, model)
    stored = load_stored(weights)
    meta["heldout_accuracy"] = accuracy(stored, heldout.images, heldout.labels)
    meta["total_seconds"] = round(time.time() - t0, 1)
    meta["total_cpu_seconds"] = round(time.process_time() - c0, 1)
    meta_path = args.out / f"{args.name}.json"
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    print(
        f"held-out accuracy {meta['heldout_accuracy']:.4f} on {args.heldout_n} test images "
        f"(stored {args.dtype} weights); train {train_seconds:.0f} s, total "
        f"{meta['total_seconds']:.0f} s; wrote {weights} ({weights.stat().st_size / 1e6:.2f} MB)"
    )


if __name__ == "__main__":
    main()
