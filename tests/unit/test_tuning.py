"""The tuner's pure parts: the search space, trial judging and budgets (no database)."""

from __future__ import annotations

import uuid
from dataclasses import replace

import optuna
import orjson
import pytest

from offline.tuning_space import (
    SearchSpace,
    TuningResult,
    beats,
    best_trial,
    check_budgets,
    chosen_fields,
    reference_trial,
)
from shared.control.schedule import parse_cron
from shared.model_spec import ModelParams


@pytest.mark.parametrize("algorithm", ["als", "bpr", "item_knn", "ease"])
def test_the_default_space_holds_the_default_settings(algorithm: str) -> None:
    space = SearchSpace.default(algorithm)
    defaults = ModelParams(algorithm=algorithm)
    point = space.point_of(defaults)
    assert point is not None
    for name, value in point.items():
        if name == "similarity":
            assert value in space.similarity
            continue
        low, high = getattr(space, name)
        assert low <= value <= high, name
    assert space.including(defaults) == space


@pytest.mark.parametrize(
    ("algorithm", "knobs"),
    [
        ("als", {"factors", "iterations", "regularization", "alpha"}),
        ("bpr", {"factors", "iterations", "regularization", "learning_rate"}),
        ("item_knn", {"neighbours", "similarity"}),
        ("ease", {"regularization"}),
        ("popularity", {"recency_half_life_days"}),
    ],
)
def test_each_algorithm_searches_its_own_key_knobs(algorithm: str, knobs: set[str]) -> None:
    space = SearchSpace.default(algorithm)
    assert set(space.searched()) == knobs
    chosen = space.suggest(optuna.trial.FixedTrial(_inside(space)))
    params = replace(ModelParams(), **chosen)  # every suggested point is a valid model
    assert params.algorithm == algorithm
    assert space.point_of(params) == {k: v for k, v in chosen.items() if k != "algorithm"}


def _inside(space: SearchSpace) -> dict[str, object]:
    """A point inside every searched range (the low end; the first similarity)."""
    point: dict[str, object] = {}
    for name in space.searched():
        bounds = getattr(space, name)
        point[name] = bounds[0]
    return point


def test_item_knn_searches_neighbours_and_the_similarity() -> None:
    space = SearchSpace.default("item_knn")
    chosen = space.suggest(optuna.trial.FixedTrial({"neighbours": 50, "similarity": "bm25"}))
    assert chosen == {"algorithm": "item_knn", "neighbours": 50, "similarity": "bm25"}
    assert chosen_fields(replace(ModelParams(), **chosen)) == chosen


def test_popularity_over_the_whole_window_is_no_point_of_the_half_life_search() -> None:
    space = SearchSpace.default("popularity")
    assert space.point_of(ModelParams(algorithm="popularity")) is None  # compared as it is
    half = ModelParams(algorithm="popularity", recency_half_life_days=0.01)
    assert space.including(half).recency_half_life_days == (0.01, 365.0)


def test_an_unknown_algorithm_is_refused() -> None:
    with pytest.raises(ValueError, match="algorithm"):
        SearchSpace.default("svd")


def test_a_suggested_point_is_a_valid_model_and_reproduces_through_point_of() -> None:
    space = SearchSpace.default("als")
    fixed = {"factors": 17, "iterations": 9, "regularization": 0.3, "alpha": 7.5}
    chosen = space.suggest(optuna.trial.FixedTrial(fixed))
    params = replace(ModelParams(), **chosen)
    assert chosen == {"algorithm": "als", **fixed}
    assert space.point_of(params) == fixed


def test_bpr_searches_the_learning_rate_not_alpha() -> None:
    space = SearchSpace.default("bpr")
    fixed = {"factors": 32, "iterations": 50, "regularization": 0.001, "learning_rate": 0.05}
    chosen = space.suggest(optuna.trial.FixedTrial(fixed))
    assert "alpha" not in chosen
    assert replace(ModelParams(), **chosen).learning_rate == 0.05


def test_including_widens_only_the_ranges_a_point_lies_outside() -> None:
    space = SearchSpace.default("als")
    odd = ModelParams(factors=1000, regularization=0.001, iterations=15, alpha=2.0)
    wider = space.including(odd)
    assert wider.factors == (8, 1000)
    assert wider.regularization == (0.001, 100.0)
    assert wider.iterations == space.iterations
    assert wider.alpha == space.alpha
    assert space.including(ModelParams(algorithm="bpr")) == space  # another algorithm: as is


def test_chosen_fields_resolve_the_per_algorithm_defaults() -> None:
    assert chosen_fields(ModelParams(algorithm="bpr")) == {
        "algorithm": "bpr",
        "factors": 64,
        "iterations": 100,
        "regularization": 0.01,
        "learning_rate": 0.01,
    }
    assert chosen_fields(ModelParams())["regularization"] == 5.0


def _trial(number: int, value: float | None, *, state: str = "complete", ref: bool = False) -> dict:
    return {"number": number, "value": value, "state": state, "reference": ref, "params": {}}


def test_the_best_trial_is_the_highest_completed_and_a_tie_goes_to_the_earliest() -> None:
    trials = [
        _trial(0, 0.20, ref=True),
        _trial(1, 0.25),
        _trial(2, 0.25),
        _trial(3, None, state="over_budget"),
    ]
    best = best_trial(trials)
    assert best is not None
    assert best["number"] == 1
    assert reference_trial(trials) == trials[0]
    assert best_trial([_trial(0, None, state="over_budget")]) is None


def test_only_a_strictly_better_trial_beats_the_settings_in_force() -> None:
    reference = _trial(0, 0.2, ref=True)
    assert beats(_trial(1, 0.21), reference)
    assert not beats(_trial(1, 0.2), reference)
    assert not beats(reference, reference)
    assert not beats(_trial(1, 0.3), None)  # the settings in force were never scored
    assert best_trial([reference, _trial(1, 0.2)]) == reference  # a tie keeps what is in force


@pytest.mark.parametrize(
    ("max_trials", "max_cost", "metric", "message"),
    [
        (None, None, "ndcg", "budget"),
        (0, None, "ndcg", "max_trials"),
        (None, 0.0, "ndcg", "max_cost"),
        (None, -1.0, "ndcg", "max_cost"),
        (5, None, "auc", "metric"),
    ],
)
def test_a_search_without_a_sound_budget_is_refused(
    max_trials: int | None, max_cost: float | None, metric: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        check_budgets(max_trials, max_cost, metric)


def test_a_result_reports_its_gain_over_the_settings_in_force_as_json() -> None:
    reference, best = _trial(0, 0.2, ref=True), _trial(3, 0.26)
    result = TuningResult(
        tuning_id=uuid.uuid4(),
        status="done",
        metric="ndcg",
        trials=[reference, best],
        best=best,
        reference=reference,
        applied=True,
        settings_id=7,
        cost=0.001,
        currency="USD",
        reason=None,
    )
    assert result.improvement == pytest.approx(0.06)
    plain = orjson.loads(orjson.dumps(result.to_dict()))
    assert plain["tuning_id"] == str(result.tuning_id)
    assert plain["improvement"] == pytest.approx(0.06)


@pytest.mark.parametrize(
    ("expression", "weekdays", "month_days", "months"),
    [
        ("0 3 * * 0", {0}, set(range(1, 32)), set(range(1, 13))),  # Sundays: the weekly tune
        ("0 3 1 * *", set(range(7)), {1}, set(range(1, 13))),  # the 1st, not Mondays
        ("0 3 15 6 *", set(range(7)), {15}, {6}),
    ],
)
def test_cron_fields_reach_the_crontab_in_cron_order(
    expression: str, weekdays: set[int], month_days: set[int], months: set[int]
) -> None:
    cron = parse_cron(expression, "UTC")
    assert (cron.minute, cron.hour) == ({0}, {3})
    assert (cron.day_of_week, cron.day_of_month, cron.month_of_year) == (
        weekdays,
        month_days,
        months,
    )
