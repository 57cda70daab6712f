"""The checks and the runner, without pytest's plugin: tiny model, small images."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import maskbench as mb
from maskbench.audit import applicability as app
from maskbench.audit.checks import CHECKS, Applicability, AuditInputs, aligned_moves, check_for
from maskbench.audit.runner import (
    FAIL,
    NOT_APPLICABLE,
    NOT_CLAIMED,
    PASS,
    SearchSettings,
    run_check,
)
from maskbench.strategies.blur import Blur

SIZE = 64


class LyingBlur(Blur):
    """Claims content independence; a blur reads the removed pixels."""

    claims = Blur.claims | {mb.Claim.CONTENT_INDEPENDENCE}


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    layers, channels = [], 3
    for out in (8, 8, 8, 8, 16):
        layers += [torch.nn.Conv2d(channels, out, 3, stride=2, padding=1), torch.nn.ReLU()]
        channels = out
    layers += [torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(channels, 10)]
    return mb.wrap_model(torch.nn.Sequential(*layers))


@pytest.fixture(scope="module")
def images():
    return mb.sample_images(4, SIZE)


def inputs_for(strategy, tiny, images, **kw):
    return AuditInputs(strategy, tiny, images, batch_size=2, **kw)


def test_every_claim_has_a_check_with_a_figure():
    assert set(CHECKS) == set(mb.ALL_CLAIMS)
    assert all(check_for(c.value).figure for c in mb.ALL_CLAIMS)


@settings(max_examples=60, deadline=None)
@given(size=st.tuples(st.integers(32, 200), st.integers(32, 200)), data=st.data())
def test_aligned_moves_stay_inside_and_really_move(size, data):
    stride = 16
    if (size[0] // stride) * (size[1] // stride) < 2:
        return
    (top, left, h, w), (dy, dx) = data.draw(aligned_moves(size, stride))
    assert (dy, dx) != (0, 0)
    for value in (top, left, h, w, dy, dx):
        assert value % stride == 0
    assert top + dy >= 0 and top + dy + h <= size[0]
    assert left + dx >= 0 and left + dx + w <= size[1]


def test_reference_examples_are_the_same_for_every_strategy(tiny, images):
    for check in CHECKS.values():
        one = check.references(inputs_for(mb.get_strategy("black"), tiny, images))
        two = check.references(inputs_for(mb.get_strategy("blur"), tiny, images))
        assert one == two and one
        assert all(example.describe() for example in one)


def test_a_claim_that_holds_passes_and_records_its_figure(tiny, images):
    outcome = run_check(
        check_for("content_independence"),
        inputs_for(mb.get_strategy("black"), tiny, images),
        claimed=True,
        search=SearchSettings(examples=2),
    )
    assert outcome.status == PASS, outcome.message
    assert outcome.figures["content_sensitivity"].value == 0.0
    assert outcome.tolerance == 0.0


def test_an_unclaimed_claim_is_measured_not_tested(tiny, images):
    outcome = run_check(
        check_for("content_independence"),
        inputs_for(mb.get_strategy("blur"), tiny, images),
        claimed=False,
        search=SearchSettings(examples=5),
    )
    assert outcome.status == NOT_CLAIMED
    assert outcome.figures["content_sensitivity"].value > 1e-3
    assert outcome.searched == 0


def test_a_broken_claim_fails_with_a_shrunk_readable_example(tiny, images, tmp_path):
    outcome = run_check(
        check_for("content_independence"),
        inputs_for(LyingBlur(), tiny, images),
        claimed=True,
        search=SearchSettings(examples=5, database=tmp_path),
        model="tiny",
        strategy="lying_blur",
    )
    assert outcome.status == FAIL
    message = outcome.message
    assert "strategy 'lying_blur' claims 'content_independence'" in message
    assert "model 'tiny'" in message
    assert "example: image ind" in message and "mask " in message and "seed " in message
    assert "relative gap" in message and "largest difference at sample" in message
    assert outcome.example and outcome.example in message
    assert any(tmp_path.iterdir()), "the failure is stored in hypothesis' database"


def test_crop_claims_do_not_apply_when_the_engine_or_strategy_says_so(tiny, images):
    class CropClaimer(mb.InputSpaceStrategy):
        claims = frozenset({mb.Claim.CROP_EQUIVALENCE})

        def compute_fill(self, images, keep):
            return images * keep

    no = Applicability(False, "squeeze-excite takes an unmasked mean")
    outcome = run_check(
        check_for("crop_equivalence"),
        inputs_for(CropClaimer(), tiny, images, crop=no),
        claimed=True,
    )
    assert outcome.status == NOT_APPLICABLE
    assert outcome.message == "not applicable: squeeze-excite takes an unmasked mean"
    assert outcome.figures["crop_gap"].value is not None  # still measured


def test_translation_needs_room_to_move(tiny):
    small = mb.sample_images(2, 32)
    outcome = run_check(
        check_for("translation_invariance"),
        AuditInputs(mb.get_strategy("black"), tiny, small, batch_size=2, stride=32),
        claimed=True,
    )
    assert outcome.status == NOT_APPLICABLE
    assert "room for no translation" in outcome.message


def test_applicability_answers_in_every_documented_form(tiny):
    strategy = mb.get_strategy("black")
    assert app._as_applicability(True, "x") == (Applicability(True, ""), None)
    assert app._as_applicability((False, "why"), "x") == (Applicability(False, "why"), None)
    answer = SimpleNamespace(applicable=False, reason="r", stride=16)
    assert app._as_applicability(answer, "x") == (Applicability(False, "r"), 16)
    assert (
        app._as_applicability(False, "engine")[0].reason
        == "engine says the model is not crop-applicable"
    )
    with pytest.raises(TypeError):
        app._as_applicability(object(), "x")
    strategy.crop_applicability = lambda model: (False, "strategy says no")
    assert app.crop_applicability(strategy, tiny)[0] == Applicability(False, "strategy says no")


def test_engine_answer_is_used_when_the_engine_provides_it(tiny, monkeypatch):
    import maskbench.engine as engine

    seen = []

    def fake(network):
        seen.append(network)
        return SimpleNamespace(ok=False, reason="not crop-exact")

    monkeypatch.setattr(engine, "crop_applicability", fake, raising=False)
    answer, _ = app.crop_applicability(mb.get_strategy("black"), tiny)
    assert answer == Applicability(False, "not crop-exact")
    assert seen == [tiny.network]


def test_model_stride_comes_from_timm_feature_info_else_32(tiny):
    resnet = mb.load_model("resnet18", weights="random")
    assert app.model_stride(resnet) == 32
    assert app.model_stride(tiny) == 32
    assert app.model_stride(tiny, default=8) == 8


def test_ci_derandomizes_and_drops_the_database(tmp_path):
    from maskbench.audit.options import ci_environment

    assert ci_environment({"CI": "true"}) and ci_environment({"CI": "1"})
    assert not ci_environment({}) and not ci_environment({"CI": "false"})
    local = SearchSettings(examples=4, database=tmp_path).hypothesis_settings("k")
    assert local.database is not None and not local.derandomize
    assert local.max_examples == 4 and local.deadline is None
    ci = SearchSettings(examples=4, derandomize=True, database=tmp_path).hypothesis_settings("k")
    assert ci.derandomize and ci.database is None


def test_an_engine_that_cannot_handle_the_model_makes_crop_claims_not_applicable(tiny, monkeypatch):
    import maskbench.engine as engine

    def refuse(network):
        raise mb.UnsupportedModelError("no rule for op 'foo' at network.3")

    monkeypatch.setattr(engine, "crop_applicability", refuse, raising=False)
    answer, _ = app.crop_applicability(mb.get_strategy("black"), tiny)
    assert not answer.applicable
    assert "UnsupportedModelError: no rule for op 'foo'" in answer.reason


def test_a_strategy_that_raises_is_an_error_with_the_example(tiny, images, tmp_path):
    class BreaksOnTinyMasks(mb.InputSpaceStrategy):
        claims = frozenset({mb.Claim.FINITE})

        def compute_fill(self, images, keep):
            if int(keep.sum()) <= 2 * images.shape[0] and bool(keep.any()):
                raise ValueError("solver broke down")
            return images * keep

    outcome = run_check(
        check_for("finite"),
        inputs_for(BreaksOnTinyMasks(), tiny, images),
        claimed=True,
        search=SearchSettings(examples=20, database=tmp_path),
        model="tiny",
        strategy="breaks",
    )
    assert outcome.status == "error"
    assert "strategy 'breaks' raised on model 'tiny' while" in outcome.message
    assert "example: image ind" in outcome.message and "keep_rect" in outcome.message
    assert outcome.message.endswith("ValueError: solver broke down")
