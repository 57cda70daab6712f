"""Run one check for one strategy on one model: measure the figure, test the claim.

:func:`run_check` is the whole audit of one (model, strategy, claim) cell, without pytest:

1. the check's fixed reference examples are run and give the recorded figures
   (reproducible: the same examples for every strategy, every run);
2. when the strategy makes the claim, each reference example must pass, and hypothesis
   searches ``examples`` more drawn examples for a counterexample, shrinks it, and
   stores it in its example database so the next run tries it first.

The result is an :class:`Outcome`; failures carry the shrunk example (mask parameters,
seeds, image indices) and the check's account of the size and place of the mismatch.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.database import DirectoryBasedExampleDatabase

from maskbench.audit.checks import AuditInputs, Check, Example, Figure
from maskbench.invariants import CheckResult

#: Outcome statuses.
PASS = "pass"
FAIL = "fail"
NOT_CLAIMED = "not_claimed"
NOT_APPLICABLE = "not_applicable"
ERROR = "error"
STATUSES = (PASS, FAIL, NOT_CLAIMED, NOT_APPLICABLE, ERROR)


@dataclass(frozen=True)
class SearchSettings:
    """How hard hypothesis looks for counterexamples.

    Attributes:
        examples: drawn examples per claimed check (0: reference examples only).
        derandomize: draw the same examples every run (set in CI; implies no database).
        database: directory of hypothesis' example database (None: no database).
    """

    examples: int = 3
    derandomize: bool = False
    database: Path | None = None

    def hypothesis_settings(self, key: str) -> settings:
        """Hypothesis settings for the check identified by ``key``."""
        database = None
        if self.database is not None and not self.derandomize:
            digest = hashlib.sha1(key.encode()).hexdigest()[:16]
            database = DirectoryBasedExampleDatabase(str(Path(self.database) / digest))
        return settings(
            max_examples=max(1, self.examples),
            deadline=None,
            derandomize=self.derandomize,
            database=database,
            suppress_health_check=list(HealthCheck),
            report_multiple_bugs=False,
            print_blob=False,
            # No "explain" phase: it reruns the model on ~100 variations of the shrunk
            # example after shrinking, to annotate it; too slow for model calls.
            phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
        )


@dataclass
class Outcome:
    """The audit of one (model, strategy, claim) cell.

    Attributes:
        status: one of :data:`STATUSES`.
        claimed: whether the strategy makes the claim.
        figures: the measured figures (name -> :class:`Figure`).
        tolerance: the bound the claim was held to (None when not tested).
        message: a readable account (the failure, the reason it does not apply, ...).
        example: the failing example, described ("" when none).
        seconds: wall time of the check.
        searched: how many drawn examples hypothesis was asked for.
    """

    status: str
    claimed: bool
    figures: dict[str, Figure] = field(default_factory=dict)
    tolerance: float | None = None
    message: str = ""
    example: str = ""
    seconds: float = 0.0
    searched: int = 0


class ClaimViolation(AssertionError):
    """Raised inside the hypothesis search when an example breaks the claim."""


@dataclass
class Counterexample:
    """A failing example and its result (the last, i.e. shrunk, one hypothesis ran)."""

    example: Example
    result: CheckResult | None = None
    error: BaseException | None = None


def search_counterexample(
    check: Check, inputs: AuditInputs, search: SearchSettings, key: str
) -> Counterexample | None:
    """Let hypothesis look for (and shrink) an example that breaks the claim."""
    last: dict[str, Counterexample] = {}

    def attempt(example: Example) -> None:
        last["current"] = Counterexample(example)
        result = check.run(inputs, example)
        if not result.passed:
            last["current"] = Counterexample(example, result)
            raise ClaimViolation(result.message)

    test = given(example=check.draw(inputs))(search.hypothesis_settings(key)(attempt))
    try:
        test()
    except ClaimViolation:
        return last["current"]
    except Exception as exc:  # the strategy raised on some example: keep it and the example
        found = last.get("current") or Counterexample(Example(images=()))
        found.error = exc
        return found
    return None


def error_text(exc: BaseException) -> str:
    """``module.Type: message`` (without hypothesis' notes, which repeat the example)."""
    kind = type(exc)
    name = (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )
    return f"{name}: {exc}"


def failure_message(
    model: str, strategy: str, check: Check, example: Example, result: CheckResult
) -> str:
    """The message of a broken claim: who, which claim, which example, how big, where."""
    return (
        f"strategy {strategy!r} claims {check.claim.value!r} but breaks it on model "
        f"{model!r}.\n  example: {example.describe()}\n  {result.message}"
    )


def run_check(
    check: Check,
    inputs: AuditInputs,
    *,
    claimed: bool,
    search: SearchSettings | None = None,
    model: str = "",
    strategy: str = "",
    key: str = "",
) -> Outcome:
    """Measure ``check``'s figures and, when ``claimed``, test the claim.

    ``model`` and ``strategy`` name the cell in messages; ``key`` identifies it in the
    hypothesis database (defaults to ``model|strategy|claim``).
    """
    started = time.perf_counter()
    search = search or SearchSettings()
    key = key or f"{model}|{strategy}|{check.claim.value}"
    outcome = _run(check, inputs, claimed, search, model, strategy, key)
    outcome.seconds = time.perf_counter() - started
    return outcome


def _run(
    check: Check,
    inputs: AuditInputs,
    claimed: bool,
    search: SearchSettings,
    model: str,
    strategy: str,
    key: str,
) -> Outcome:
    unavailable = check.unavailable(inputs)
    if unavailable:
        status = NOT_APPLICABLE if claimed else NOT_CLAIMED
        return Outcome(status, claimed, message=f"not applicable: {unavailable}")

    examples = check.references(inputs)
    results: list[CheckResult] = []
    for example in examples:
        try:
            results.append(check.run(inputs, example))
        except Exception as exc:
            return Outcome(
                ERROR,
                claimed,
                message=(
                    f"strategy {strategy!r} raised on model {model!r} while measuring "
                    f"{check.claim.value!r}.\n  example: {example.describe()}\n  "
                    f"{error_text(exc)}"
                ),
                example=example.describe(),
            )
    figures = check.figures(results)
    tolerance = max(r.tolerance for r in results)

    if not claimed:
        worst = max(range(len(results)), key=lambda i: results[i].gap)
        text = results[worst].message.replace(" FAILS:", " would fail:", 1)
        text = text.replace(" holds:", " would hold:", 1)
        return Outcome(NOT_CLAIMED, False, figures, None, f"measured (not claimed): {text}")

    reason = check.not_applicable(inputs)
    if reason:
        return Outcome(NOT_APPLICABLE, True, figures, tolerance, f"not applicable: {reason}")

    failing = next((i for i, r in enumerate(results) if not r.passed), None)
    found = search_counterexample(check, inputs, search, key) if search.examples > 0 else None
    searched = search.examples
    if found is not None and found.error is not None:
        return Outcome(
            ERROR,
            True,
            figures,
            tolerance,
            (
                f"strategy {strategy!r} raised on model {model!r} while testing "
                f"{check.claim.value!r}.\n  example: {found.example.describe()}\n  "
                f"{error_text(found.error)}"
            ),
            found.example.describe(),
            searched=searched,
        )
    if found is not None and found.result is not None:
        message = failure_message(model, strategy, check, found.example, found.result)
        return Outcome(
            FAIL, True, figures, tolerance, message, found.example.describe(), searched=searched
        )
    if failing is not None:
        message = failure_message(model, strategy, check, examples[failing], results[failing])
        return Outcome(
            FAIL,
            True,
            figures,
            tolerance,
            message,
            examples[failing].describe(),
            searched=searched,
        )
    message = (
        f"holds on {len(examples)} reference and {searched} drawn examples; {results[0].message}"
    )
    return Outcome(PASS, True, figures, tolerance, message, searched=searched)
