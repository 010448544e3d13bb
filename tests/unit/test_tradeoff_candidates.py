"""Candidates: the default grid, JSON files, the baseline always in, no duplicates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from offline.tradeoff.candidates import (
    DEFAULT_MODELS,
    baseline_candidate,
    by_model,
    default_grid,
    load_candidates,
    parse_candidates,
    resolve,
    with_baseline,
)
from shared.model_spec import ALGORITHMS, FACTOR_ALGORITHMS, ModelParams, model_kind
from shared.serving_strategy import STRATEGIES, ServingStrategy, refusal

BASE = ModelParams(factors=32, regularization=3.0)
SERVING = ServingStrategy()


def _servable(model: dict[str, object]) -> list[str]:
    kind = model_kind(str(model["algorithm"]))
    return [name for name in STRATEGIES if refusal(name, kind) is None]


def test_default_grid_is_models_times_the_strategies_each_can_serve() -> None:
    grid = default_grid(BASE, SERVING)
    assert len(grid) == sum(len(_servable(model)) for model in DEFAULT_MODELS)
    assert {c.serving["name"] for c in grid} == set(STRATEGIES)
    assert len({c.key for c in grid}) == len(grid)
    assert {c.model["algorithm"] for c in grid} == set(ALGORITHMS)  # every algorithm is in
    for candidate in grid:  # no pair the serving side would refuse
        assert refusal(candidate.serving["name"], model_kind(candidate.model["algorithm"])) is None
    labels = {c.label for c in grid}
    assert {"item_knn cosine k200 / precomputed", "ease r500 / exact"} <= labels
    assert "popularity window / exact" in labels


def test_the_default_grid_groups_into_one_fit_per_model_setting() -> None:
    grid = default_grid(BASE, SERVING)
    groups = by_model(enumerate(grid))
    assert len(groups) == len(DEFAULT_MODELS)
    assert sorted(i for ids in groups for i in ids) == list(range(len(grid)))
    for ids in groups:
        assert len({grid[i].model_key for i in ids}) == 1
        assert {grid[i].serving["name"] for i in ids} == set(_servable(grid[ids[0]].model))


def test_threads_do_not_split_a_model_setting() -> None:
    one = resolve(BASE, SERVING, {"num_threads": 1}, {"name": "exact"})
    two = resolve(BASE, SERVING, {"num_threads": 2}, {"name": "float16"})
    other = resolve(BASE, SERVING, {"factors": 8}, {"name": "exact"})
    assert by_model([(0, one), (1, other), (2, two)]) == [[0, 2], [1]]


def test_gpu_candidates_join_the_grid_only_when_a_gpu_is_there() -> None:
    without = default_grid(BASE, SERVING)
    assert not any(c.model["use_gpu"] for c in without)
    with_gpu = default_grid(BASE, SERVING, gpu=True)
    gpu = [c for c in with_gpu if c.model["use_gpu"]]
    assert len(gpu) == sum(m["algorithm"] in FACTOR_ALGORITHMS for m in DEFAULT_MODELS)
    assert all(c.serving["name"] == "exact" and " gpu " in c.label for c in gpu)
    assert len({c.key for c in with_gpu}) == len(with_gpu)  # distinct from their CPU twins


def test_unnamed_settings_come_from_the_base_and_algorithm_defaults_do_not_leak() -> None:
    als = resolve(BASE, SERVING, {"factors": 8}, {})
    assert als.model["factors"] == 8
    assert als.model["regularization"] == 3.0
    bpr = resolve(BASE, SERVING, {"algorithm": "bpr"}, {"name": "float16"})
    assert bpr.model["regularization"] == 0.01
    assert bpr.model["iterations"] == 100
    assert bpr.serving["name"] == "float16"
    assert "bpr f32" in bpr.label


def test_the_baseline_is_always_in_once_and_first() -> None:
    base = baseline_candidate(BASE, SERVING)
    same = resolve(BASE, SERVING, {}, {"name": "exact"})
    other = resolve(BASE, SERVING, {"factors": 4}, {})
    merged = with_baseline([other, same, other], base)
    assert [c.baseline for c in merged] == [True, False]
    assert merged[0].key == same.key
    assert merged[1].key == other.key


def test_candidates_file_as_a_list_or_a_product(tmp_path: Path) -> None:
    listed = parse_candidates(
        [{"model": {"factors": 1}, "serving": "exact", "label": "tiny"}, {"model": {}}],
        BASE,
        SERVING,
    )
    assert next(c.label for c in listed) == "tiny"
    assert listed[0].model["factors"] == 1
    path = tmp_path / "c.json"
    path.write_text(
        json.dumps(
            {
                "models": [{"factors": 2}, {"factors": 4}],
                "strategies": ["exact", {"name": "ann", "ann_ef_search": 16}],
            }
        )
    )
    product = load_candidates(path, BASE, SERVING)
    assert len(product) == 4
    assert product[1].serving["ann_ef_search"] == 16


@pytest.mark.parametrize(
    "bad",
    [
        {"nope": 1},
        [{"model": {"factors": 0}}],
        [{"serving": {"name": "warp"}}],
        [{"model": {"colour": "red"}}],
        [],
    ],
)
def test_bad_candidates_are_refused(bad: object) -> None:
    with pytest.raises((ValueError, TypeError)):
        parse_candidates(bad, BASE, SERVING)
