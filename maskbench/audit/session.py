"""One process's audit: models built once, images loaded once, cases run into records.

An :class:`AuditSession` lives for a whole pytest session in each process that runs
checks (the serial process, or each xdist worker). It builds each model the first time a
case needs it and keeps it (a model that fails to build is remembered, so every case of
that model reports the same error quickly), and turns an
:class:`~maskbench.audit.options.AuditCase` into a
:class:`~maskbench.audit.scorecard.Record`. It needs no pytest.
"""

from __future__ import annotations

import os
import time
import traceback
from typing import Any

import torch

from maskbench.audit.applicability import crop_applicability, model_stride
from maskbench.audit.checks import Applicability, AuditInputs, check_for
from maskbench.audit.images import audit_images
from maskbench.audit.options import AuditCase, AuditOptions
from maskbench.audit.runner import ERROR, SearchSettings, error_text, run_check
from maskbench.audit.scorecard import Record
from maskbench.audit.targets import BuiltModel, build_model
from maskbench.strategies.registry import get_strategy


class AuditSession:
    """Runs audit cases in this process, caching models and images.

    Args:
        options: validated options.
        device: the resolved torch device string (``cpu``, ``cuda``, ``cuda:N``).
        worker: xdist worker id, or ``"main"``.
    """

    def __init__(self, options: AuditOptions, device: str, worker: str = "main") -> None:
        self.options = options
        self.device = torch.device(device)
        self.worker = worker
        self._models: dict[str, BuiltModel | BaseException] = {}
        self._images: torch.Tensor | None = None
        self._engine_answers: dict[str, tuple[Applicability, int | None]] = {}
        self.load_seconds: dict[str, float] = {}
        self.search = SearchSettings(
            examples=options.examples,
            derandomize=options.derandomize,
            database=options.database,
        )

    # ------------------------------------------------------------------ caches

    def model(self, name: str) -> BuiltModel:
        """The built model ``name`` (built on first use; a build error is re-raised)."""
        if name not in self._models:
            target = next(t for t in self.options.models if t.name == name)
            started = time.perf_counter()
            try:
                self._models[name] = build_model(target, self.options.weights, self.device)
            except Exception as exc:
                self._models[name] = exc
            self.load_seconds[name] = round(time.perf_counter() - started, 3)
        built = self._models[name]
        if isinstance(built, BaseException):
            raise built
        return built

    def images(self) -> torch.Tensor:
        """The image bank (float32, on the device; converted per model as needed)."""
        if self._images is None:
            bank = audit_images(
                self.options.images, self.options.image_size, self.options.batch_size
            )
            self._images = bank.to(self.device)
        return self._images

    def geometry(self, strategy: Any, built: BuiltModel, name: str) -> tuple[Applicability, int]:
        """Crop applicability of (strategy, model) and the stride to align boxes to."""
        if getattr(strategy, "crop_applicability", None) is not None:
            applicability, stride = crop_applicability(strategy, built.model)
        else:  # the engine's answer (or the default) depends on the model only
            if name not in self._engine_answers:
                self._engine_answers[name] = crop_applicability(strategy, built.model)
            applicability, stride = self._engine_answers[name]
        stride = self.options.stride or stride or model_stride(built.model)
        return applicability, int(stride)

    def _rng_devices(self) -> list[int]:
        """CUDA devices whose random state a check may touch (restored afterwards)."""
        if self.device.type != "cuda":
            return []
        return [self.device.index if self.device.index is not None else 0]

    # ------------------------------------------------------------------ running

    def run(self, case: AuditCase) -> Record:
        """Run one case; never raises for a strategy or model problem (it becomes an error)."""
        started = time.perf_counter()
        base = {
            "model": case.model,
            "strategy": case.strategy,
            "claim": case.claim,
            "claimed": case.claimed,
            "worker": self.worker,
        }
        check = check_for(case.claim)
        try:
            built = self.model(case.model)
        except Exception as exc:
            return Record(
                **base,
                status=ERROR,
                figure=check.figure,
                message=f"model {case.model!r} could not be built: {error_text(exc)}",
                seconds=time.perf_counter() - started,
            )
        try:
            strategy = get_strategy(case.strategy)
            dtype = next(
                (p.dtype for p in built.model.parameters() if p.is_floating_point()),
                torch.float32,
            )
            images = self.images().to(dtype)
            applicability, stride = self.geometry(strategy, built, case.model)
            inputs = AuditInputs(
                strategy, built.model, images, self.options.batch_size, stride, applicability
            )
            with torch.random.fork_rng(devices=self._rng_devices()):
                torch.manual_seed(0)  # the same start for every check, in any order
                outcome = run_check(
                    check,
                    inputs,
                    claimed=case.claimed,
                    search=self.search,
                    model=case.model,
                    strategy=case.strategy,
                    key=f"{case.id}|{self.options.image_size}|{self.options.batch_size}",
                )
        except Exception as exc:
            return Record(
                **base,
                status=ERROR,
                figure=check.figure,
                message=(
                    f"the audit of {case.strategy!r} / {case.claim!r} on {case.model!r} "
                    f"raised: {error_text(exc)}\n{traceback.format_exc(limit=-3)}"
                ),
                seconds=time.perf_counter() - started,
                model_info=built.info,
            )
        return Record(
            **base,
            status=outcome.status,
            figure=check.figure,
            figures={name: fig.to_dict() for name, fig in outcome.figures.items()},
            tolerance=outcome.tolerance,
            message=outcome.message,
            example=outcome.example,
            seconds=time.perf_counter() - started,
            model_info=built.info,
            geometry={
                "stride": stride,
                "crop_applicable": applicability.applicable,
                "reason": applicability.reason,
            },
            claims_made=sorted(c.value for c in strategy.claims),
        )

    def worker_info(self) -> dict[str, Any]:
        """Facts about this process for the scorecard's ``run`` section."""
        return {
            "device": str(self.device),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "torch_threads": torch.get_num_threads(),
            "cudnn_tf32": bool(torch.backends.cudnn.allow_tf32),
            "pid": os.getpid(),
            "models_built": sorted(
                n for n, m in self._models.items() if not isinstance(m, BaseException)
            ),
            "model_load_seconds": dict(self.load_seconds),
        }
