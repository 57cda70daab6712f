"""Scorecard records, merging, files and rendering (no models)."""

from __future__ import annotations

import json
import random

import pytest

from maskbench.audit import scorecard as sc
from maskbench.strategies.claims import ALL_CLAIMS

SETTINGS = {"image_size": 64, "batch_size": 2, "images": "x", "dtype": "float32"}


def record(strategy: str, claim: str, status: str = "pass", value: float = 0.0, **kw):
    figure = f"{claim}_figure"
    return sc.Record(
        model="m",
        strategy=strategy,
        claim=claim,
        claimed=status != "not_claimed",
        status=status,
        figure=figure,
        figures={figure: {"value": value, "better": "lower", "tolerance": 0.1, "doc": "d"}},
        model_info={"weights": "random", "weights_source": "seed=0", "device": "cpu"},
        claims_made=["identity"],
        **kw,
    )


def full(strategies=("a", "b")):
    return [
        record(s, c.value, "pass" if i % 2 else "not_claimed", value=i / 10)
        for s in strategies
        for i, c in enumerate(ALL_CLAIMS)
    ]


def test_record_round_trips_through_plain_builtins():
    rec = record("a", "identity", seconds=1.5, worker="gw1")
    data = rec.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert sc.Record.from_dict({**data, "unknown": 1}) == rec
    with pytest.raises(ValueError, match="status"):
        record("a", "identity", status="maybe")


def test_merge_does_not_depend_on_arrival_order_or_timings():
    records = full()
    shuffled = [sc.Record.from_dict({**r.to_dict(), "seconds": 9.0}) for r in records]
    random.Random(0).shuffle(shuffled)
    one = sc.build_scorecard(records, SETTINGS, run={"workers": {"main": {}}})
    two = sc.build_scorecard(shuffled, SETTINGS, run={"workers": {"gw0": {}, "gw1": {}}})
    assert one != two
    assert sc.comparable(one) == sc.comparable(two)


def test_scorecard_has_every_claim_and_figure_per_strategy():
    card = sc.build_scorecard(full(), SETTINGS)
    assert card["schema"] == sc.SCHEMA
    assert set(card["versions"]) >= {"maskbench", "torch", "timm"}
    assert card["models"]["m"]["weights"] == "random"
    for strategy in ("a", "b"):
        entry = card["results"]["m"][strategy]
        assert list(entry["claims"]) == [c.value for c in ALL_CLAIMS]
        assert len(entry["figures"]) == len(ALL_CLAIMS)
        assert entry["claims"]["batch_consistency"]["value"] == pytest.approx(0.2)
    assert card["summary"]["pass"] == 8 and card["summary"]["not_claimed"] == 8


def test_non_finite_figures_are_valid_json():
    card = sc.build_scorecard([record("a", "finite", "fail", value=float("inf"))], SETTINGS)
    text = json.dumps(card, allow_nan=False)
    assert json.loads(text)["results"]["m"]["a"]["claims"]["finite"]["value"] == "inf"
    assert sc.as_number("inf") == float("inf") and sc.as_number("x") is None


def test_files_are_written_atomically_next_to_each_other(tmp_path):
    card = sc.build_scorecard(full(), SETTINGS)
    json_path, md_path = sc.write_scorecard(card, tmp_path / "sub" / "out.json")
    assert md_path == tmp_path / "sub" / "out.md"
    assert sc.read_scorecard(json_path) == card
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["out.json", "out.md"]
    sc.write_scorecard(card, json_path)  # overwriting leaves no temporary files either
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["out.json", "out.md"]


def test_markdown_has_one_row_per_strategy_with_every_claim():
    card = sc.build_scorecard(full(("a", "b", "c")), SETTINGS)
    text = sc.render_markdown(card)
    rows = [line for line in text.splitlines() if line.startswith("| ") and "strategy" not in line]
    assert [row.split("|")[1].strip() for row in rows] == ["a", "b", "c"]
    assert all(row.count("|") == 2 + len(ALL_CLAIMS) + 2 for row in rows)
    assert "pass 0.1" in rows[0] and "(0)" in rows[0]


def test_failures_are_listed_with_their_message():
    records = full()
    records[0] = record("a", "identity", "fail", value=0.5, message="identity FAILS: big gap")
    text = sc.render_markdown(sc.build_scorecard(records, SETTINGS))
    assert "**FAIL** 0.5" in text
    assert "**m / a / identity** (fail): identity FAILS: big gap" in text


def test_terminal_summary_is_a_plain_table():
    lines = sc.render_terminal(sc.build_scorecard(full(), SETTINGS))
    assert lines[0].startswith("m: random weights")
    assert lines[1].split()[0] == "strategy"
    assert lines[2].split()[0] == "a"
    assert lines[-1].startswith("checks: 8 pass")


def test_read_scorecard_explains_what_is_wrong(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        sc.read_scorecard(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        sc.read_scorecard(bad)
    other = tmp_path / "other.json"
    other.write_text('{"schema": "something-else"}')
    with pytest.raises(ValueError, match="not a maskbench scorecard"):
        sc.read_scorecard(other)
