"""Models that take pixel-space images: ``load_model`` and ``wrap_model``.

Every maskbench model is a :class:`NormalizedModel`: the network plus its own
normalisation as the first step, so that strategies reason in pixel space ("black" is
pixel 0, "grey" the mean colour, which is 0 after normalisation).
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from maskbench.errors import DeviceError, UnknownModelError, WeightsUnavailableError

logger = logging.getLogger("maskbench")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

WEIGHT_MODES = ("random", "pretrained", "auto")

#: Seconds that ``weights="auto"``/``"pretrained"`` wait to learn whether the hub answers.
HUB_PROBE_TIMEOUT = float(os.environ.get("MASKBENCH_HUB_TIMEOUT", "3"))
HUB_HOST = "huggingface.co"

SHIPPED_WEIGHTS_DIR = Path(__file__).parent / "benchmark" / "weights"


class NormalizedModel(nn.Module):
    """A network that takes pixel-space images and normalises them first.

    Attributes:
        network: the wrapped network; it expects *normalised* input.
        mean, std: (1, C, 1, 1) buffers, in pixel space.
        name: the model's name (timm name, shipped name, or the class name).
        weights: which weights were actually loaded: ``"random"``, ``"pretrained"``,
            ``"shipped"`` or ``"checkpoint"``.
        weights_source: where they came from (seed, hub id, file path).
        classes: class names when known (shipped models), else ``None``.
    """

    def __init__(
        self,
        network: nn.Module,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        *,
        name: str | None = None,
        weights: str = "user",
        weights_source: str = "",
        classes: Sequence[str] | None = None,
        input_size: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        if len(mean) != len(std):
            raise ValueError(f"mean {tuple(mean)} and std {tuple(std)} differ in length")
        if any(s <= 0 for s in std):
            raise ValueError(f"std must be positive, got {tuple(std)}")
        self.network = network
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.name = name or type(network).__name__
        self.weights = weights
        self.weights_source = weights_source
        self.classes = tuple(classes) if classes is not None else None
        self.input_size = input_size

    @property
    def mean_colour(self) -> tuple[float, ...]:
        """The pixel-space colour that normalises to 0 (the paper's "grey")."""
        return tuple(float(v) for v in self.mean.flatten())

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """Map pixel-space images to the network's input space."""
        mean = self.mean.to(images.dtype)
        std = self.std.to(images.dtype)
        return (images - mean) / std

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits of pixel-space ``images`` (B, C, H, W)."""
        return self.network(self.normalize(images))

    def extra_repr(self) -> str:
        return f"name={self.name!r}, weights={self.weights!r}, source={self.weights_source!r}"


def wrap_model(
    module: nn.Module,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    *,
    name: str | None = None,
) -> NormalizedModel:
    """Wrap a user's CNN (which expects normalised input) for use with maskbench.

    The returned model takes pixel-space images, normalises them with ``mean``/``std``
    and is put in eval mode (which also puts ``module`` in eval mode).
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"wrap_model needs an nn.Module, got {type(module).__name__}")
    if isinstance(module, NormalizedModel):
        return module.eval()
    device = _module_device(module)
    wrapped = NormalizedModel(module, mean, std, name=name, weights="user")
    return wrapped.to(device).eval()


def split_model(model: nn.Module) -> tuple[NormalizedModel | None, nn.Module]:
    """(wrapper, network): the normalising wrapper (or None) and the inner network."""
    if isinstance(model, NormalizedModel):
        return model, model.network
    return None, model


# --------------------------------------------------------------------------- shipped


@dataclass(frozen=True)
class ShippedModel:
    """A model whose weights ship inside the maskbench package."""

    name: str
    timm_name: str
    timm_kwargs: dict[str, Any]
    weights_file: Path
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: tuple[str, ...] = ()
    image_size: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


def shipped_models() -> dict[str, ShippedModel]:
    """The models shipped in ``maskbench/benchmark/weights`` (JSON + safetensors pairs)."""
    found: dict[str, ShippedModel] = {}
    if not SHIPPED_WEIGHTS_DIR.is_dir():
        return found
    for meta_path in sorted(SHIPPED_WEIGHTS_DIR.glob("*.json")):
        weights_file = meta_path.with_suffix(".safetensors")
        if not weights_file.exists():
            continue
        meta = json.loads(meta_path.read_text())
        found[meta_path.stem] = ShippedModel(
            name=meta_path.stem,
            timm_name=meta["timm_name"],
            timm_kwargs=dict(meta.get("timm_kwargs", {})),
            weights_file=weights_file,
            mean=tuple(meta.get("mean", IMAGENET_MEAN)),
            std=tuple(meta.get("std", IMAGENET_STD)),
            classes=tuple(meta.get("classes", ())),
            image_size=meta.get("image_size"),
            metadata=meta,
        )
    return found


# --------------------------------------------------------------------------- loading


def _module_device(module: nn.Module) -> torch.device:
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return torch.device("cpu")


def resolve_device(device: torch.device | str | None) -> torch.device:
    """``None`` -> CPU, ``"auto"`` -> CUDA when available else CPU, else ``torch.device``.

    Raises :class:`DeviceError` for a malformed device and for a CUDA device this
    machine does not have (instead of torch's driver error at the first allocation).
    """
    if device is None:
        return torch.device("cpu")
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise DeviceError(
            f"unknown device {device!r}: use cpu, cuda, cuda:N or auto ({exc})"
        ) from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                f"device {str(device)!r}: CUDA is not available here (no GPU, driver or CUDA "
                f"build of torch {torch.__version__}); use cpu or auto"
            )
        count = torch.cuda.device_count()
        if resolved.index is not None and resolved.index >= count:
            raise DeviceError(
                f"device {str(device)!r}: only {count} CUDA device(s) are visible "
                f"(cuda:0 .. cuda:{count - 1})"
            )
    return resolved


def _create_timm(name: str, seed: int, **kwargs: Any) -> nn.Module:
    import timm

    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.75)
        hint = f" Similar timm names: {', '.join(close)}." if close else ""
        shipped = ", ".join(sorted(shipped_models())) or "none"
        raise UnknownModelError(
            f"unknown model {name!r}: not a timm model and not a shipped maskbench model "
            f"(shipped: {shipped}).{hint}"
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return timm.create_model(name, pretrained=False, **kwargs)


def _hub_reachable(timeout: float = HUB_PROBE_TIMEOUT) -> bool:
    """Whether the Hugging Face hub answers a TCP connect within ``timeout`` seconds."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on"):
        return False
    try:
        with socket.create_connection((HUB_HOST, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _cached_pretrained_file(pretrained_cfg: dict[str, Any]) -> str | None:
    """Path of an already downloaded checkpoint for this pretrained config, if any."""
    hub_id = pretrained_cfg.get("hf_hub_id")
    if hub_id:
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:  # pragma: no cover - huggingface_hub ships with timm
            try_to_load_from_cache = None
        if try_to_load_from_cache is not None:
            names = (
                [pretrained_cfg.get("hf_hub_filename")]
                if pretrained_cfg.get("hf_hub_filename")
                else ["model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"]
            )
            for filename in names:
                path = try_to_load_from_cache(hub_id, filename)
                if isinstance(path, str) and os.path.exists(path):
                    return path
    url = pretrained_cfg.get("url")
    if url:
        path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
        if path.exists():
            return str(path)
    return None


def _load_pretrained_timm(name: str, seed: int, allow_download: bool, **kwargs: Any):
    """(network, source) with timm's pretrained weights; raise if they cannot be had."""
    import timm

    network = _create_timm(name, seed, **kwargs)
    cfg = dict(getattr(network, "pretrained_cfg", {}) or {})
    if not (cfg.get("hf_hub_id") or cfg.get("url") or cfg.get("file")):
        raise WeightsUnavailableError(
            f"timm has no pretrained weights for {name!r}; use weights='random' or a "
            "checkpoint path"
        )
    cached = _cached_pretrained_file(cfg)
    if cached is None and not allow_download:
        raise WeightsUnavailableError(
            f"pretrained weights for {name!r} ({cfg.get('hf_hub_id') or cfg.get('url')}) are "
            f"not in the local cache and the hub ({HUB_HOST}) is unreachable or "
            "HF_HUB_OFFLINE is set. Download them once with network access, pass a "
            "checkpoint path as weights=..., or use weights='random'."
        )
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            overlay = {"file": cached} if cached else None
            network = timm.create_model(
                name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs
            )
    except Exception as exc:  # timm/hub raise many types; keep the cause attached
        raise WeightsUnavailableError(
            f"could not load pretrained weights for {name!r}: {type(exc).__name__}: {exc}"
        ) from exc
    return network, cached or cfg.get("hf_hub_id") or cfg.get("url")


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.exists():
        raise WeightsUnavailableError(f"checkpoint file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsUnavailableError(
            f"could not read checkpoint {path}: {type(exc).__name__}: {exc}"
        ) from exc
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise WeightsUnavailableError(f"{path} does not hold a state dict")
    if state and all(k.startswith("network.") for k in state if k not in ("mean", "std")):
        state = {k[len("network.") :]: v for k, v in state.items() if k.startswith("network.")}
    return state


def load_checkpoint(network: nn.Module, path: str | os.PathLike) -> None:
    """Load a local checkpoint (safetensors or torch state dict) into ``network``, strictly.

    Accepts the network's own state dict, a ``NormalizedModel`` state dict, or a dict
    with a ``state_dict``/``model`` entry. Torch files are read with ``weights_only``.
    """
    path = Path(path)
    state = _read_state_dict(path)
    reference = network.state_dict()
    missing = sorted(set(reference) - set(state))
    unexpected = sorted(set(state) - set(reference))
    if missing or unexpected:
        raise WeightsUnavailableError(
            f"checkpoint {path} does not fit this model: "
            f"{len(missing)} missing keys (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected keys (e.g. {unexpected[:3]})"
        )
    shapes = [k for k in reference if tuple(reference[k].shape) != tuple(state[k].shape)]
    if shapes:
        k = shapes[0]
        raise WeightsUnavailableError(
            f"checkpoint {path} does not fit this model: {len(shapes)} tensors differ in "
            f"shape, e.g. {k}: {tuple(state[k].shape)} vs {tuple(reference[k].shape)}"
        )
    network.load_state_dict({k: v.to(reference[k].dtype) for k, v in state.items()})


def load_model(
    name: str,
    weights: str | os.PathLike = "auto",
    seed: int = 0,
    device: torch.device | str | None = None,
    **timm_kwargs: Any,
) -> NormalizedModel:
    """Build a model that takes pixel-space images, in eval mode.

    Args:
        name: a timm model name (``"resnet50"``) or a model shipped with maskbench
            (see :func:`shipped_models`, e.g. ``"shapes_resnet"``).
        weights: ``"random"`` (seeded by ``seed``, reproducible), ``"pretrained"``
            (timm's hub weights or the shipped file; raises
            :class:`WeightsUnavailableError` quickly when they cannot be had),
            ``"auto"`` (pretrained when cached or the hub answers within
            ``MASKBENCH_HUB_TIMEOUT`` seconds, else random; the choice is logged and
            stored in ``model.weights``), or a path to a local checkpoint
            (``.safetensors`` or a torch state dict).
        seed: seed for random initialisation (also used before pretrained loading so
            that any freshly initialised head is reproducible).
        device: ``None``/``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``.
        **timm_kwargs: passed to ``timm.create_model`` (e.g. ``output_stride=16``).
    """
    started = time.monotonic()
    target = resolve_device(device)
    shipped = shipped_models().get(name)
    mode = str(weights)
    is_mode = isinstance(weights, str) and weights in WEIGHT_MODES
    classes: Sequence[str] | None = None
    input_size = None

    if shipped is not None:
        network = _create_timm(shipped.timm_name, seed, **{**shipped.timm_kwargs, **timm_kwargs})
        mean, std = shipped.mean, shipped.std
        classes = shipped.classes or None
        if shipped.image_size:
            input_size = (shipped.image_size, shipped.image_size)
        if is_mode and mode == "random":
            kind, source = "random", f"seed={seed}"
        elif is_mode:
            load_checkpoint(network, shipped.weights_file)
            kind, source = "shipped", str(shipped.weights_file)
        else:
            load_checkpoint(network, weights)
            kind, source = "checkpoint", str(weights)
    else:
        if is_mode and mode == "random":
            network = _create_timm(name, seed, **timm_kwargs)
            kind, source = "random", f"seed={seed}"
        elif is_mode and mode == "pretrained":
            probe = _cached_pretrained_file(_pretrained_cfg(name)) is None
            reachable = _hub_reachable() if probe else True
            network, source = _load_pretrained_timm(name, seed, reachable, **timm_kwargs)
            kind = "pretrained"
        elif is_mode:  # auto
            cached = _cached_pretrained_file(_pretrained_cfg(name))
            if cached is not None or _hub_reachable():
                try:
                    network, source = _load_pretrained_timm(name, seed, True, **timm_kwargs)
                    kind = "pretrained"
                except WeightsUnavailableError as exc:
                    logger.warning("maskbench: %s; falling back to random weights", exc)
                    network = _create_timm(name, seed, **timm_kwargs)
                    kind, source = "random", f"seed={seed} (pretrained unavailable)"
            else:
                network = _create_timm(name, seed, **timm_kwargs)
                kind, source = "random", f"seed={seed} (pretrained not cached, hub unreachable)"
        else:
            network = _create_timm(name, seed, **timm_kwargs)
            load_checkpoint(network, weights)
            kind, source = "checkpoint", str(weights)
        cfg = getattr(network, "pretrained_cfg", {}) or {}
        mean = tuple(cfg.get("mean", IMAGENET_MEAN))
        std = tuple(cfg.get("std", IMAGENET_STD))
        if cfg.get("input_size"):
            input_size = tuple(cfg["input_size"][-2:])

    model = NormalizedModel(
        network,
        mean,
        std,
        name=name,
        weights=kind,
        weights_source=source,
        classes=classes,
        input_size=input_size,
    )
    model = model.to(target).eval()
    level = logging.WARNING if (mode == "auto" and kind == "random") else logging.INFO
    logger.log(
        level,
        "maskbench: loaded %s with %s weights (%s) on %s in %.1fs",
        name,
        kind,
        source,
        target,
        time.monotonic() - started,
    )
    return model


def _pretrained_cfg(name: str) -> dict[str, Any]:
    """timm's default pretrained config for ``name`` (no weights are loaded)."""
    import timm

    if not timm.is_model(name):
        _create_timm(name, 0)  # raises UnknownModelError with suggestions
    cfg = timm.models.get_pretrained_cfg(name)
    return cfg.to_dict() if cfg is not None else {}
