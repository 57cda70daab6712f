"""Timing of the masking engine against a plain forward (not a test; run it directly).

    python tests/engine/bench_engine.py --model resnet50 --batch 16 --size 224 --threads 2

Plain and masked forwards alternate, so background load hits both alike; the ratios of
the fastest and of the median runs are printed per variant. The mask removes half of the
16 x 16 patches at random.
"""

from __future__ import annotations

import argparse
import statistics
import time

import timm
import torch

from maskbench.engine import Variant, masked_forward


def patch_mask(batch: int, size: int, patch: int = 16, keep: float = 0.5) -> torch.Tensor:
    """Random patch mask: each patch kept with probability ``keep``."""
    cells = size // patch
    grid = torch.rand(batch, 1, cells, cells) < keep
    return grid.repeat_interleave(patch, 2).repeat_interleave(patch, 3)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="cpu: process CPU time (robust to other load when --threads 1)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dtype = getattr(torch, args.dtype)
    model = timm.create_model(args.model, pretrained=False).eval().to(dtype)
    x = torch.randn(args.batch, 3, args.size, args.size, dtype=dtype)
    keep = patch_mask(args.batch, args.size)
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    times: dict[str, list[float]] = {"plain": []} | {v.value: [] for v in Variant}
    with torch.inference_mode():
        model(x)
        for v in Variant:
            masked_forward(model, x, keep, v)
        for _ in range(args.repeats):
            for name in times:
                start = clock()
                if name == "plain":
                    model(x)
                else:
                    masked_forward(model, x, keep, name)
                times[name].append(clock() - start)
    plain_min = min(times["plain"])
    plain_median = statistics.median(times["plain"])
    print(
        f"{args.model} batch {args.batch} {args.size}px {args.dtype} "
        f"threads {args.threads} clock {args.clock}"
    )
    for name, values in times.items():
        fastest, median = min(values), statistics.median(values)
        print(
            f"  {name:20s} min {fastest * 1000:8.1f} ms (x{fastest / plain_min:.2f})"
            f"  median {median * 1000:8.1f} ms (x{median / plain_median:.2f})"
        )


if __name__ == "__main__":
    main()
