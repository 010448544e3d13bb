"""Event columns -> confidence matrix: weights, ratings, decay, filters and id spaces by hand."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from offline.dataset import build_matrix
from shared.confidence import ConfidenceSettings, EventColumns, event_confidence, scale_confidence

DAY = 86_400.0
T0 = 1_750_000_000.0
DEFAULT = ConfidenceSettings()
ABOVE_NEUTRAL = ConfidenceSettings(ratings="above_neutral", rating_weight=2.0)


def columns(rows: list[tuple[str, str, str, float | None, float]]) -> EventColumns:
    """(user, item, type, value, time) rows -> EventColumns."""
    users, items, types, values, times = zip(*rows, strict=True)
    return EventColumns.from_arrays(
        users,
        items,
        types,
        values=[np.nan if v is None else v for v in values],
        occurred_at=np.array(times),
    )


def dense(
    events: EventColumns,
    *,
    confidence: ConfidenceSettings = DEFAULT,
    min_user_events: int = 1,
    min_item_events: int = 1,
) -> tuple[np.ndarray, list[str], list[str]]:
    """The built matrix as a dense array with its row and column ids."""
    built = build_matrix(
        events,
        confidence=confidence,
        reference_time=T0,
        min_user_events=min_user_events,
        min_item_events=min_item_events,
    )
    return built.matrix.toarray(), built.user_ids.tolist(), built.item_ids.tolist()


def test_a_hand_example_of_three_users_and_three_items() -> None:
    events = columns(
        [
            ("a", "x", "view", None, T0),
            ("a", "x", "click", None, T0),
            ("a", "y", "purchase", None, T0),
            ("b", "y", "add_to_cart", None, T0),
            ("b", "z", "rating", 5.0, T0),
            ("c", "z", "view", None, T0),
            ("c", "z", "view", None, T0),
            ("c", "x", "rating", 4.0, T0),
        ]
    )
    built = build_matrix(events, confidence=ABOVE_NEUTRAL, reference_time=T0)
    assert isinstance(built.matrix, sp.csr_matrix)
    assert built.matrix.dtype == np.float32
    assert built.shape == built.matrix.shape == (3, 3)
    assert built.user_ids.tolist() == ["a", "b", "c"]
    assert built.item_ids.tolist() == ["x", "y", "z"]
    np.testing.assert_array_equal(
        built.matrix.toarray(),
        [[3.0, 8.0, 0.0], [0.0, 4.0, 4.0], [2.0, 0.0, 2.0]],  # rating 5 -> 2*(5-3), 4 -> 2
    )


def test_above_neutral_ignores_ratings_at_or_below_neutral() -> None:
    events = columns(
        [
            ("a", "x", "rating", 3.0, T0),
            ("a", "y", "rating", 1.0, T0),
            ("a", "z", "rating", 3.5, T0),
            ("b", "x", "view", None, T0),
        ]
    )
    matrix, users, items = dense(events, confidence=ABOVE_NEUTRAL)
    assert (users, items) == (["a", "b"], ["x", "z"])  # y was only rated 1: no confidence
    np.testing.assert_array_equal(matrix, [[0.0, 1.0], [1.0, 0.0]])  # 3.5 -> 2 * 0.5


def test_ignored_ratings_do_not_count_toward_kept_ids() -> None:
    events = columns([("a", "x", "rating", 2.0, T0), ("b", "y", "view", None, T0)])
    matrix, users, items = dense(events, confidence=ABOVE_NEUTRAL)
    assert (users, items) == (["b"], ["y"])
    np.testing.assert_array_equal(matrix, [[1.0]])


def test_negative_ratings_can_subtract_instead() -> None:
    settings = ConfidenceSettings(ratings="signed", rating_weight=2.0)
    events = columns(
        [
            ("a", "x", "view", None, T0),
            ("a", "x", "rating", 1.0, T0),  # 2 * (1 - 3) = -4
            ("a", "y", "click", None, T0),
            ("a", "y", "rating", 2.0, T0),  # -2: cancels the click, the pair disappears
        ]
    )
    matrix, _, items = dense(events, confidence=settings)
    assert items == ["x", "y"]
    np.testing.assert_array_equal(matrix, [[-3.0, 0.0]])


def test_custom_weights_apply_per_type() -> None:
    settings = ConfidenceSettings(weights={"view": 0.5, "purchase": 10.0})
    events = columns(
        [
            ("a", "x", "view", None, T0),
            ("a", "x", "click", None, T0),  # weight 0: carries nothing
            ("a", "x", "purchase", None, T0),
        ]
    )
    np.testing.assert_array_equal(dense(events, confidence=settings)[0], [[10.5]])


def test_decay_halves_the_weight_at_one_half_life() -> None:
    settings = ConfidenceSettings(half_life_days=10.0)
    events = columns(
        [
            ("a", "x", "purchase", None, T0 - 10 * DAY),
            ("a", "y", "purchase", None, T0 - 20 * DAY),
            ("a", "z", "purchase", None, T0 + DAY),  # after the reference time: full weight
        ]
    )
    np.testing.assert_allclose(dense(events, confidence=settings)[0], [[4.0, 2.0, 8.0]])
    weights = event_confidence(events, settings, reference_time=T0)
    np.testing.assert_allclose(weights, [4.0, 2.0, 8.0])


def test_minimum_counts_drop_users_and_items_once() -> None:
    events = columns(
        [
            ("a", "x", "view", None, T0),
            ("a", "y", "view", None, T0),
            ("a", "x", "view", None, T0),
            ("b", "x", "view", None, T0),
            ("b", "z", "view", None, T0),
            ("c", "x", "view", None, T0),
        ]
    )
    matrix, users, items = dense(events, min_user_events=2, min_item_events=2)
    assert users == ["a", "b"]  # c has 1 event
    assert items == ["x"]  # y and z have 1 event each
    np.testing.assert_array_equal(matrix, [[2.0], [1.0]])


def test_fixed_id_spaces_align_rows_and_drop_unknown_ids() -> None:
    events = columns(
        [
            ("a", "x", "view", None, T0),
            ("new-user", "x", "view", None, T0),
            ("b", "new-item", "view", None, T0),
            ("b", "y", "click", None, T0),
        ]
    )
    built = build_matrix(
        events,
        confidence=DEFAULT,
        reference_time=T0,
        user_ids=np.array(["b", "a", "nobody"], dtype=object),
        item_ids=np.array(["y", "x"], dtype=object),
        min_user_events=5,  # ignored: the row space is given
    )
    assert built.user_ids.tolist() == ["b", "a", "nobody"]
    assert built.item_ids.tolist() == ["y", "x"]
    np.testing.assert_array_equal(built.matrix.toarray(), [[2.0, 0.0], [0.0, 1.0], [0.0, 0.0]])


def test_users_without_events_in_the_dictionary_get_no_row() -> None:
    events = columns([("a", "x", "view", None, T0), ("b", "y", "view", None, T0 + 1)])
    later = events.subset(events.occurred_at > T0)
    assert later.user_ids.tolist() == ["a", "b"]  # dictionaries are kept
    _, users, items = dense(later)
    assert (users, items) == (["b"], ["y"])


def test_empty_events_give_an_empty_matrix() -> None:
    events = columns([("a", "x", "view", None, T0)]).subset(np.array([False]))
    assert len(events) == 0
    built = build_matrix(events, confidence=DEFAULT, reference_time=T0)
    assert built.matrix.shape == (0, 0)


def test_columns_must_have_equal_lengths() -> None:
    events = columns([("a", "x", "view", None, T0)])
    with pytest.raises(ValueError, match="same length"):
        EventColumns(
            user_index=events.user_index,
            item_index=events.item_index,
            user_ids=events.user_ids,
            item_ids=events.item_ids,
            type_code=events.type_code,
            value=np.array([1.0, 2.0]),
            occurred_at=events.occurred_at,
        )


def test_from_arrays_rejects_unknown_types_and_accepts_datetime64() -> None:
    with pytest.raises(ValueError, match="unknown event types"):
        EventColumns.from_arrays(["a"], ["x"], ["like"], occurred_at=[T0])
    events = EventColumns.from_arrays(
        ["a"], ["x"], ["view"], occurred_at=np.array(["1970-01-02T00:00:00"], "datetime64[us]")
    )
    assert events.occurred_at.tolist() == [DAY]
    assert events.type_code.dtype == np.int8
    assert events.user_index.dtype == np.int32


@pytest.mark.parametrize(
    "kwargs",
    [
        {"weights": {"like": 1.0}},
        {"weights": {"rating": 1.0}},
        {"weights": {"view": -1.0}},
        {"ratings": "flip"},
        {"half_life_days": 0.0},
    ],
)
def test_confidence_settings_reject_nonsense(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"must|unknown|rating"):
        ConfidenceSettings(**kwargs)  # type: ignore[arg-type]


def test_confidence_settings_serialise_for_the_manifest() -> None:
    assert ConfidenceSettings(half_life_days=30.0).to_dict() == {
        "weights": {"view": 1.0, "click": 2.0, "add_to_cart": 4.0, "purchase": 8.0},
        "ratings": "scaled",
        "rating_neutral": 3.0,
        "rating_weight": 8.0,
        "rating_scale": None,
        "half_life_days": 30.0,
    }


def test_every_rating_is_a_positive_interaction_rising_with_its_value() -> None:
    """The default: a top rating weighs a purchase's 8, a low one less but never nothing."""
    events = columns(
        [
            ("a", "x", "rating", 5.0, T0),
            ("a", "y", "rating", 1.0, T0),
            ("b", "y", "rating", 0.5, T0),
            ("b", "z", "rating", 2.5, T0),
        ]
    )
    matrix, users, items = dense(events)
    assert (users, items) == (["a", "b"], ["x", "y", "z"])  # no rated item disappears
    np.testing.assert_allclose(matrix, [[8.0, 1.6, 0.0], [0.0, 0.8, 4.0]])


def test_the_rating_scale_is_read_off_the_data_and_recorded() -> None:
    """A 1-10 log weighs 10 like a 5-star log weighs 5; the retrain records the scale it used
    so the API's fold-in weighs a new rating the same way."""
    tens = columns([("a", "x", "rating", 10.0, T0), ("a", "y", "rating", 5.0, T0)])
    np.testing.assert_allclose(dense(tens)[0], [[8.0, 4.0]])
    resolved = DEFAULT.resolved_for(tens)
    assert resolved.rating_scale == 10.0
    alone = columns([("b", "y", "rating", 5.0, T0)])
    np.testing.assert_allclose(dense(alone, confidence=resolved)[0], [[4.0]])


def test_log_scaling_follows_its_formula_and_keeps_sparsity() -> None:
    matrix = sp.csr_matrix(np.array([[1.0, 0.0, 15.0], [0.0, -3.0, 0.0]], dtype=np.float32))
    scaled = scale_confidence(matrix, method="log", alpha=2.0)
    expected = [[1 + 2 * np.log(2), 0.0, 1 + 2 * np.log(16)], [0.0, -(1 + 2 * np.log(4)), 0.0]]
    np.testing.assert_allclose(scaled.toarray(), expected, rtol=1e-6)
    assert scaled.dtype == np.float32
    assert scaled.nnz == 3


def test_none_scaling_multiplies_by_alpha() -> None:
    matrix = sp.csr_matrix(np.array([[2.0, 0.0]], dtype=np.float32))
    np.testing.assert_array_equal(scale_confidence(matrix, alpha=3.0).toarray(), [[6.0, 0.0]])


def test_bm25_scaling_matches_implicit_on_the_items_by_users_matrix() -> None:
    from implicit.nearest_neighbours import bm25_weight

    rng = np.random.default_rng(0)
    matrix = sp.random(6, 5, density=0.5, format="csr", random_state=rng, dtype=np.float64)
    matrix.data = np.ceil(matrix.data * 8)
    expected = bm25_weight(matrix.T.tocsr(), K1=100, B=0.8).T.toarray()
    scaled = scale_confidence(matrix, method="bm25", alpha=1.0)
    np.testing.assert_allclose(scaled.toarray(), expected, rtol=1e-5)
    assert scaled.nnz == matrix.nnz


def test_unknown_scaling_is_refused() -> None:
    with pytest.raises(ValueError, match="scaling"):
        scale_confidence(sp.csr_matrix((1, 1)), method="sqrt")
