"""The maskbench pytest plugin: ``pytest --model resnet50`` audits every strategy's claims.

Registered through the ``pytest11`` entry point ``maskbench`` (and, in a checkout, by
the root ``conftest.py``). Without ``--model`` it does nothing: the project's own tests
run as usual and the audit module is not collected. With ``--model`` it collects *only*
the audit (:mod:`maskbench.audit.test_audit`), parametrized over model x strategy x
claim, and at the end prints a scorecard, writes it (``--maskbench-report``) and
compares it with a baseline (``--maskbench-baseline``).

Results travel from pytest-xdist workers to the controller in two ways, neither of them
shared files: every check's :class:`~maskbench.audit.scorecard.Record` rides on its
test report (``user_properties``), which xdist forwards as each test finishes, so a
worker that crashes loses nothing already done (its current check becomes an error);
each worker's facts (device, GPU, threads, models built) come back in
``config.workeroutput`` and are merged in ``pytest_testnodedown``.
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from maskbench.audit import devices
from maskbench.audit.baseline import Regression, compare
from maskbench.audit.options import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_EXAMPLES,
    DEFAULT_IMAGE_SIZE,
    AuditCase,
    AuditOptions,
    OptionError,
    build_plan,
    make_options,
    resolve_device,
)
from maskbench.audit.runner import ERROR, FAIL, NOT_APPLICABLE
from maskbench.audit.scorecard import (
    Record,
    build_scorecard,
    read_scorecard,
    render_terminal,
    write_scorecard,
)
from maskbench.audit.session import AuditSession
from maskbench.strategies.claims import ALL_CLAIMS

#: The test module the plugin parametrizes.
AUDIT_MODULE = Path(__file__).with_name("test_audit.py").resolve()
#: Name of the user property that carries a check's record on its test report.
RECORD_PROPERTY = "maskbench"
#: Key of the worker facts in ``config.workeroutput``.
WORKEROUTPUT_KEY = "maskbench"
#: Key of the GPU list the controller hands to workers in ``workerinput``.
WORKERINPUT_GPUS = "maskbench_gpus"

_NODE_PARAM = re.compile(r"::test_audit\[(.*)\]$")


@dataclass
class AuditState:
    """What the plugin knows in one process (controller, worker or serial run)."""

    options: AuditOptions
    device: str
    worker: str
    cases: dict[str, AuditCase]
    baseline: dict[str, Any] | None = None
    report: Path | None = None
    session: AuditSession | None = None
    records: dict[str, Record] = field(default_factory=dict)
    workers: dict[str, Any] = field(default_factory=dict)
    scorecard: dict[str, Any] | None = None
    regressions: list[Regression] = field(default_factory=list)
    gate_notes: list[str] = field(default_factory=list)
    written: tuple[Path, Path] | None = None
    started: float = field(default_factory=time.time)


STATE = pytest.StashKey[AuditState]()


# --------------------------------------------------------------------------- options


def pytest_addoption(parser: pytest.Parser) -> None:
    """The audit's options (group "maskbench audit" in ``pytest --help``)."""
    group = parser.getgroup(
        "maskbench", "maskbench audit (with --model, runs the audit instead of the tests)"
    )
    group.addoption(
        "--model",
        action="append",
        default=[],
        dest="maskbench_models",
        metavar="NAME",
        help="audit this model (repeatable, or comma-separated): a timm name (resnet50), "
        "an fnmatch pattern over timm.list_models ('resnet*', at most 8 per pattern), a "
        "shipped maskbench model, or 'pkg.module:factory' returning an nn.Module (wrapped "
        "with the ImageNet mean/std) or a maskbench NormalizedModel. Giving --model "
        "collects only the audit.",
    )
    group.addoption(
        "--strategy",
        action="append",
        default=[],
        dest="maskbench_strategies",
        metavar="NAME",
        help="audit this strategy (repeatable, or comma-separated): a registered name or "
        "'pkg.module:attr'. Default: every registered strategy (maskbench.list_strategies()).",
    )
    group.addoption(
        "--weights",
        default="auto",
        dest="maskbench_weights",
        metavar="auto|random|pretrained|PATH",
        help="model weights (default auto: pretrained when cached or downloadable, else "
        "seeded random; the scorecard records which were used).",
    )
    group.addoption(
        "--device",
        default="auto",
        dest="maskbench_device",
        metavar="auto|cpu|cuda|cuda:N",
        help="device (default auto). Under pytest-xdist each worker takes its own GPU "
        "(worker index modulo visible GPUs).",
    )
    group.addoption(
        "--image-size",
        type=int,
        default=DEFAULT_IMAGE_SIZE,
        dest="maskbench_image_size",
        metavar="N",
        help=f"side of the square audit images in pixels (default {DEFAULT_IMAGE_SIZE}).",
    )
    group.addoption(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH_SIZE,
        dest="maskbench_batch_size",
        metavar="N",
        help=f"images per example, >= 2 (default {DEFAULT_BATCH_SIZE}).",
    )
    group.addoption(
        "--images",
        default=None,
        dest="maskbench_images",
        metavar="DIR",
        help="audit on the images in DIR (resized and centre-cropped; default: maskbench's "
        "bundled photographs, maskbench.sample_images).",
    )
    group.addoption(
        "--audit-examples",
        type=int,
        default=DEFAULT_EXAMPLES,
        dest="maskbench_examples",
        metavar="N",
        help="hypothesis-drawn examples per claimed check, on top of the fixed reference "
        f"examples the figures are measured on (default {DEFAULT_EXAMPLES}; 0: references "
        "only). Draws are derandomized when the CI environment variable is set.",
    )
    group.addoption(
        "--audit-stride",
        type=int,
        default=None,
        dest="maskbench_stride",
        metavar="N",
        help="total stride for crop and translation boxes (default: the model's, from "
        "timm's feature_info, else 32).",
    )
    group.addoption(
        "--audit-threads",
        type=int,
        default=1,
        dest="maskbench_threads",
        metavar="N",
        help="torch threads per audit process on the CPU (default 1, also in a serial run: "
        "use -n auto to use more cores; 0 keeps torch's default).",
    )
    group.addoption(
        "--maskbench-report",
        default=None,
        dest="maskbench_report",
        metavar="PATH",
        help="write the scorecard as JSON to PATH and as Markdown next to it (PATH with .md).",
    )
    group.addoption(
        "--maskbench-baseline",
        default=None,
        dest="maskbench_baseline",
        metavar="PATH",
        help="compare with this stored scorecard; fail the run when a claim that held now "
        "fails or a figure is worse than the tolerance stored with it.",
    )


# --------------------------------------------------------------------------- configure


def _worker_id(config: pytest.Config) -> str | None:
    workerinput = getattr(config, "workerinput", None)
    return workerinput.get("workerid") if workerinput else None


def _pin_worker_gpu(config: pytest.Config, device: str) -> str:
    """Give an xdist worker its own GPU before torch initialises CUDA; returns the device."""
    workerinput = getattr(config, "workerinput", None) or {}
    gpus = workerinput.get(WORKERINPUT_GPUS) or []
    gpu = devices.gpu_for_worker(_worker_id(config), gpus)
    if gpu is None or device not in ("auto", "cuda"):
        return device
    import torch

    if torch.cuda.is_initialized():  # too late to narrow the visible devices: pick by index
        return f"cuda:{gpus.index(gpu)}"
    os.environ[devices.CUDA_VISIBLE_DEVICES] = gpu
    return "cuda"


def _database_dir(config: pytest.Config) -> Path:
    """Hypothesis' example database: in pytest's cache (``--cache-clear`` empties it)."""
    cache = getattr(config, "cache", None)
    if cache is not None:
        return Path(cache.mkdir("maskbench_hypothesis"))
    return Path(config.rootpath) / ".hypothesis" / "maskbench"


def _usage(message: str) -> pytest.UsageError:
    return pytest.UsageError(f"maskbench audit: {message}")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """Validate the audit options, pin a worker's device, and collect only the audit."""
    if not config.getoption("maskbench_models", default=None):
        stray = [
            flag
            for flag, dest in (
                ("--strategy", "maskbench_strategies"),
                ("--maskbench-report", "maskbench_report"),
                ("--maskbench-baseline", "maskbench_baseline"),
                ("--images", "maskbench_images"),
            )
            if config.getoption(dest, default=None)
        ]
        if stray:
            raise _usage(f"{', '.join(stray)} configure the audit, which runs only with --model")
        return
    device = _pin_worker_gpu(config, str(config.getoption("maskbench_device")).strip().lower())
    try:
        options = make_options(
            models=config.getoption("maskbench_models"),
            strategies=config.getoption("maskbench_strategies"),
            weights=config.getoption("maskbench_weights"),
            device=device,
            image_size=config.getoption("maskbench_image_size"),
            batch_size=config.getoption("maskbench_batch_size"),
            images=config.getoption("maskbench_images"),
            examples=config.getoption("maskbench_examples"),
            stride=config.getoption("maskbench_stride"),
        )
        resolved = resolve_device(options.device)
    except OptionError as exc:
        raise _usage(str(exc)) from None
    baseline = None
    baseline_path = config.getoption("maskbench_baseline")
    if baseline_path:
        try:
            baseline = read_scorecard(baseline_path)
        except ValueError as exc:
            raise _usage(f"--maskbench-baseline: {exc}") from None
    report = config.getoption("maskbench_report")
    worker = _worker_id(config)
    requested_threads = config.getoption("maskbench_threads")
    if requested_threads < 0:
        raise _usage(f"--audit-threads {requested_threads}: must be >= 0")
    threads = devices.torch_threads(resolved.split(":")[0], requested_threads)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    if resolved.startswith("cuda"):
        devices.disable_tf32()
    cases = build_plan(options)
    state = AuditState(
        options=options,
        device=resolved,
        worker=worker or "main",
        cases={case.id: case for case in cases},
        baseline=baseline,
        report=Path(report) if report else None,
    )
    config.stash[STATE] = state
    if config.args_source != pytest.Config.ArgsSource.ARGS:
        # No paths given: run the audit instead of testpaths / the current directory.
        config.args[:] = [str(AUDIT_MODULE)]
    config.pluginmanager.register(AuditReporter(config, state), "maskbench-audit-reporter")


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    """One line on what the audit will run, plus notes (pattern expansion ...)."""
    state = config.stash.get(STATE, None)
    if state is None:
        return None
    options = state.options
    models = ", ".join(t.name for t in options.models)
    lines = [
        f"maskbench audit: {len(options.models)} model(s) [{models}] x "
        f"{len(options.strategies)} strategies x {len(ALL_CLAIMS)} claims = "
        f"{len(state.cases)} checks; "
        f"{options.image_size}px images, {options.batch_size} per example, "
        f"{options.examples} drawn examples per claim"
        f"{' (derandomized: CI)' if options.derandomize else ''}; device {state.device}; "
        f"weights {options.weights}",
    ]
    lines += [f"maskbench audit: {note}" for note in options.notes]
    if config.args_source == pytest.Config.ArgsSource.ARGS:
        lines.append(
            "maskbench audit: with --model only the audit module is collected from the "
            f"paths given ({' '.join(config.args)}); other test files are ignored"
        )
    if any(t.kind == "factory" for t in options.models):
        lines.append(
            "maskbench audit: factory models returning a plain nn.Module are wrapped with "
            "the ImageNet mean/std (the scorecard notes it per model)"
        )
    return lines


# --------------------------------------------------------------------------- collection


def _is_audit_module(path: Path) -> bool:
    try:
        return path.resolve() == AUDIT_MODULE
    except OSError:
        return False


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """With --model collect only the audit module; without it never collect the audit."""
    state = config.stash.get(STATE, None)
    if state is None:
        return True if _is_audit_module(collection_path) else None
    if collection_path.suffix == ".py" and not _is_audit_module(collection_path):
        return True
    return None


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize the audit test over model x strategy x claim."""
    if "audit_case" not in metafunc.fixturenames:
        return
    state = metafunc.config.stash.get(STATE, None)
    cases = list(state.cases.values()) if state is not None else []
    metafunc.parametrize("audit_case", cases, ids=[case.id for case in cases])


@pytest.fixture(scope="session")
def maskbench_audit(pytestconfig: pytest.Config) -> AuditSession:
    """This process's :class:`AuditSession` (models built once per process and model)."""
    state = pytestconfig.stash.get(STATE, None)
    if state is None:
        pytest.skip("the maskbench audit runs only with --model")
    if state.session is None:
        # The database lives in pytest's cache, which exists only after configure.
        options = dataclasses.replace(state.options, database=_database_dir(pytestconfig))
        state.session = AuditSession(options, state.device, state.worker)
    return state.session


def run_audit_case(request: pytest.FixtureRequest, session: AuditSession, case: AuditCase) -> None:
    """Run ``case``, attach its record to the test report, fail or skip as it says."""
    record = session.run(case)
    request.node.user_properties.append((RECORD_PROPERTY, record.to_dict()))
    if record.status in (FAIL, ERROR):
        pytest.fail(record.message, pytrace=False)
    if record.status == NOT_APPLICABLE:
        pytest.skip(f"{case.strategy} / {case.claim}: {record.message}")


# --------------------------------------------------------------------------- results


def _case_for(state: AuditState, nodeid: str) -> AuditCase | None:
    match = _NODE_PARAM.search(nodeid)
    return state.cases.get(match.group(1)) if match else None


def _report_text(report: pytest.TestReport) -> str:
    text = getattr(report, "longreprtext", "") or str(report.longrepr or "")
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return "\n".join(lines[-12:])


class AuditReporter:
    """Controller-side (and serial) hooks: merge records, write, gate, summarise."""

    def __init__(self, config: pytest.Config, state: AuditState) -> None:
        self.config = config
        self.state = state
        self.is_worker = hasattr(config, "workerinput")

    # ------------------------------------------------------------------ xdist

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        """Tell each worker the visible GPUs (decided here, before any worker uses CUDA)."""
        if not self.state.device.startswith("cuda") or ":" in self.state.device:
            return
        import torch

        gpus = devices.visible_gpus(
            os.environ.get(devices.CUDA_VISIBLE_DEVICES), torch.cuda.device_count()
        )
        node.workerinput[WORKERINPUT_GPUS] = gpus

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        """Merge a worker's facts from ``workeroutput``; remember a worker that died."""
        worker = getattr(getattr(node, "gateway", None), "id", None) or str(node)
        output = getattr(node, "workeroutput", None) or {}
        info = dict(output.get(WORKEROUTPUT_KEY) or {})
        if error is not None:
            info["crashed"] = str(error)
        self.state.workers[worker] = info

    # ------------------------------------------------------------------ reports

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Collect a check's record (from its report) or turn a failure into an error."""
        if self.is_worker:
            return
        case = _case_for(self.state, report.nodeid)
        if case is None:
            return
        data = next((v for k, v in report.user_properties if k == RECORD_PROPERTY), None)
        if report.when == "call" and data is not None:
            self.state.records[case.id] = Record.from_dict(data)
            return
        if report.failed and case.id not in self.state.records:
            crashed = report.when not in ("setup", "call", "teardown")
            what = "its worker crashed" if crashed else f"pytest {report.when} failed"
            self.state.records[case.id] = Record(
                model=case.model,
                strategy=case.strategy,
                claim=case.claim,
                claimed=case.claimed,
                status=ERROR,
                message=f"the check did not finish: {what}.\n{_report_text(report)}",
                worker=str(
                    getattr(getattr(getattr(report, "node", None), "gateway", None), "id", "")
                    or "main"
                ),
            )

    # ------------------------------------------------------------------ the end

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        """Workers: hand their facts to the controller. Else: scorecard, files, gate."""
        state = self.state
        if self.is_worker:
            if state.session is not None:
                self.config.workeroutput[WORKEROUTPUT_KEY] = state.session.worker_info()
            return
        if state.session is not None:
            state.workers.setdefault("main", state.session.worker_info())
        if not state.records:
            return
        run = {
            "seconds": round(time.time() - state.started, 1),
            "workers": state.workers,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "invocation": list(self.config.invocation_params.args),
        }
        device_type = state.device.split(":")[0]
        state.scorecard = build_scorecard(
            state.records.values(), state.options.settings(device_type), run=run
        )
        if state.report is not None:
            state.written = write_scorecard(state.scorecard, state.report)
        if state.baseline is not None:
            state.regressions, state.gate_notes = compare(state.baseline, state.scorecard)
            if state.regressions and session.exitstatus == pytest.ExitCode.OK:
                session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        """The scorecard as a table, where it was written, and the baseline gate."""
        state = self.state
        if self.is_worker or state.scorecard is None:
            return
        terminalreporter.section("maskbench audit")
        for line in render_terminal(state.scorecard):
            terminalreporter.write_line(line)
        if state.written:
            json_path, md_path = state.written
            terminalreporter.write_line(f"scorecard written to {json_path} and {md_path}")
        if state.baseline is None:
            return
        baseline = self.config.getoption("maskbench_baseline")
        if state.regressions:
            terminalreporter.section("maskbench baseline gate: FAILED", red=True)
            terminalreporter.write_line(
                f"{len(state.regressions)} regression(s) against {baseline}:", red=True
            )
            for regression in state.regressions:
                terminalreporter.write_line(f"  {regression}", red=True)
        else:
            terminalreporter.write_line(f"maskbench baseline gate: passed (against {baseline})")
        for note in state.gate_notes:
            terminalreporter.write_line(f"  note: {note}")
