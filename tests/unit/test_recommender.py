"""The online Recommender on real model versions written to tmp_path.

Two models: a hand-made one whose scores are known exactly (ranking rules), and ALS/BPR
trained on a two-block shop (users of block A touch only block A's items), where the right
answer is "items of the user's own block".

Over 350 lines on purpose: one test module for one class, every ranking rule a test.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

from offline.dataset import build_matrix
from offline.pipeline import version_arrays
from offline.training import fit
from shared.artifacts import CorruptArtifact, read_version, write_version
from shared.confidence import ConfidenceSettings, EventColumns
from shared.model_spec import ModelParams
from shared.ranking.recommender import (
    CatalogSnapshot,
    RankedList,
    RecentEvent,
    Recommender,
    UnknownItem,
)
from tests.shop import two_block_events

T0 = 1_700_000_000.0  # training events happen up to T0, where the window ends
WINDOW_END = "2023-11-14T22:13:20+00:00"  # T0 in ISO form
LATER = T0 + 86_400.0  # after the window: news to the model
BLOCK = 20
ITEM_SCORES = [5.0, 4.0, 3.0, 2.0, 1.0, -1.0, -2.0, -3.0, -4.0, -5.0]


def _manifest(algorithm: str, params: ModelParams) -> dict[str, Any]:
    return {
        "algorithm": algorithm,
        "params": params.to_dict(),
        "data": {"window_end": WINDOW_END, "confidence": ConfidenceSettings().to_dict()},
    }


def _write_tiny(root: Path, **overrides: Any) -> Path:
    """Ten items on one axis scoring 5..1 then -1..-5 for alice, who has seen i1.

    Popularity rises with the item number: i9 is the most popular, i0 the least.
    """
    arrays: dict[str, Any] = {
        "user_factors": np.array([[1.0, 0.0]], dtype=np.float32),
        "item_factors": np.stack([ITEM_SCORES, np.zeros(10)], axis=1).astype(np.float32),
        "user_ids": np.array(["alice"]),
        "item_ids": np.array([f"i{i}" for i in range(10)]),
        "seen": sp.csr_matrix((np.ones(1, np.float32), ([0], [1])), shape=(1, 10)),
        "item_popularity": np.arange(1, 11, dtype=np.float32),
    }
    arrays.update(overrides)
    params = ModelParams(factors=2)
    return write_version(root, "tiny", arrays, manifest_fields=_manifest("als", params))


@pytest.fixture
def tiny(tmp_path: Path) -> Recommender:
    return Recommender.load(_write_tiny(tmp_path))


def _catalog(unavailable: Sequence[int] = (), extra: bool = True) -> CatalogSnapshot:
    """Odd items in "odd", even ones in "even"; plus an id the model does not know."""
    rows: list[tuple[str, str | None, bool]] = [
        (f"i{i}", "odd" if i % 2 else "even", i not in unavailable) for i in range(10)
    ]
    if extra:
        rows.append(("not-in-model", None, True))
    return CatalogSnapshot.from_rows(rows)


def _block_events() -> EventColumns:
    return two_block_events(BLOCK, end=T0)


def _write_block(root: Path, algorithm: str) -> Path:
    events = _block_events()
    matrix = build_matrix(events, confidence=ConfidenceSettings(), reference_time=T0)
    params = ModelParams(algorithm=algorithm, factors=8, num_threads=1, random_state=0)
    trained = fit(matrix, params)
    return write_version(
        root,
        algorithm,
        version_arrays(trained, matrix, events),
        manifest_fields=_manifest(algorithm, params),
    )


@pytest.fixture(scope="module")
def block_paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("block")
    return {algorithm: _write_block(root, algorithm) for algorithm in ("als", "bpr")}


@pytest.fixture
def block(block_paths: dict[str, Path]) -> Recommender:
    return Recommender.load(block_paths["als"])


def _block_of(item_ids: Sequence[str]) -> set[str]:
    return {item[0] for item in item_ids}


def _seen_by(rec: Recommender, user: str) -> set[str]:
    model = rec._model
    return set(model.items.ids[model.seen(model.users.find_one(user))].tolist())


def _assert_clean(answer: RankedList) -> None:
    """No duplicates, finite scores, one score per item, a consistent fill count."""
    assert len(set(answer.item_ids)) == len(answer.item_ids) == len(answer.scores)
    assert all(np.isfinite(answer.scores))
    assert 0 <= answer.filled_from_popular <= len(answer.item_ids)


# -- ranking rules on the hand-made model ----------------------------------------------------


def test_a_known_user_gets_the_best_scored_items_they_have_not_seen(tiny: Recommender) -> None:
    answer = tiny.recommend("alice", n=3)
    assert answer == RankedList(["i0", "i2", "i3"], [5.0, 3.0, 2.0], "model", 0)
    assert tiny.knows_user("alice")
    assert not tiny.knows_user("bob")


def test_include_seen_lets_seen_items_back_in(tiny: Recommender) -> None:
    assert tiny.recommend("alice", n=3, include_seen=True).item_ids == ["i0", "i1", "i2"]


def test_unavailable_and_excluded_items_are_never_recommended(tiny: Recommender) -> None:
    shop = tiny.with_catalog(_catalog(unavailable=[0]))
    assert shop.recommend("alice", n=3).item_ids == ["i2", "i3", "i4"]
    excluded = tiny.recommend("alice", n=3, exclude=["i2", "never-heard-of"])
    assert excluded.item_ids == ["i0", "i3", "i4"]
    assert "i0" not in shop.popular(n=10).item_ids
    assert "i0" not in shop.recommend("bob", n=10).item_ids


def test_items_missing_from_the_catalogue_count_as_available(tiny: Recommender) -> None:
    partial = CatalogSnapshot.from_rows([("i0", "even", False)])
    assert partial.available.tolist() == [False]
    assert tiny.with_catalog(partial).recommend("alice", n=3).item_ids == ["i2", "i3", "i4"]


def test_a_category_filter_keeps_its_items_and_fills_from_its_popular_ones(
    tiny: Recommender,
) -> None:
    shop = tiny.with_catalog(_catalog())
    answer = shop.recommend("alice", n=3, category="odd")
    # i1 is seen; i3 is the only odd item scoring above 0; i9 and i7 are the most popular.
    assert answer == RankedList(["i3", "i9", "i7"], [2.0, 10.0, 8.0], "model", 2)
    assert shop.recommend("alice", n=3, category="no-such-category").item_ids == []
    assert shop.popular(n=3, exclude=["i9"], category="odd").item_ids == ["i7", "i5", "i3"]


def test_n_is_met_by_filling_from_popular_items_after_the_model_runs_out(
    tiny: Recommender,
) -> None:
    answer = tiny.recommend("alice", n=8)
    assert answer.item_ids == ["i0", "i2", "i3", "i4", "i9", "i8", "i7", "i6"]
    assert answer.filled_from_popular == 4
    assert answer.scores[4:] == [10.0, 9.0, 8.0, 7.0]  # filled items score their popularity
    _assert_clean(answer)


def test_fewer_eligible_items_than_n_returns_all_of_them_once(tiny: Recommender) -> None:
    shop = tiny.with_catalog(_catalog(unavailable=[8, 9]))
    for answer in (
        shop.recommend("alice", n=50),
        shop.recommend("bob", n=50),
        shop.popular(n=50),
        shop.similar("i0", n=50),
    ):
        _assert_clean(answer)
        assert {"i8", "i9"}.isdisjoint(answer.item_ids)
    assert set(shop.recommend("alice", n=50).item_ids) == {f"i{i}" for i in (0, 2, 3, 4, 5, 6, 7)}
    assert len(shop.similar("i0", n=50).item_ids) == 7  # all but itself, i8 and i9


def test_an_unknown_user_gets_popular_items(tiny: Recommender) -> None:
    answer = tiny.recommend("bob", n=3)
    assert answer == RankedList(["i9", "i8", "i7"], [10.0, 9.0, 8.0], "popular", 3)
    assert tiny.popular(n=3) == answer
    unknown_item = [RecentEvent("not-in-model", "view", None, LATER)]
    assert tiny.recommend("bob", n=3, recent=unknown_item).source == "popular"
    rated = [RecentEvent("i9", "rating", 1.0, LATER)]  # a low rating is still an interaction
    cold = tiny.recommend("bob", n=3, recent=rated)
    assert cold.source == "realtime"
    assert "i9" not in cold.item_ids  # what the user touched counts as seen


def test_invalid_requests_are_refused(tiny: Recommender) -> None:
    with pytest.raises(ValueError, match="n must be"):
        tiny.recommend("alice", n=0)
    with pytest.raises(ValueError, match="event type"):
        RecentEvent("i0", "wishlist", None, LATER)
    with pytest.raises(ValueError, match="same length"):
        CatalogSnapshot(np.array(["i0"]), np.array([]), np.array([True]))


def test_with_catalog_is_a_new_recommender_and_the_old_one_is_unchanged(
    tiny: Recommender,
) -> None:
    shop = tiny.with_catalog(_catalog(unavailable=[0]))
    assert shop is not tiny
    assert shop.version == tiny.version == "tiny"
    assert tiny.recommend("alice", n=1).item_ids == ["i0"]
    assert shop.recommend("alice", n=1).item_ids == ["i2"]


# -- trained models: known users, fold-in, similar items -------------------------------------


def test_a_known_user_gets_unseen_items_of_their_own_block(block: Recommender) -> None:
    for user, own in (("u03", "a"), ("u31", "b")):
        answer = block.recommend(user, n=5)
        assert answer.source == "model"
        assert _block_of(answer.item_ids) == {own}
        assert _seen_by(block, user).isdisjoint(answer.item_ids)
        assert len(_seen_by(block, user)) == 12


def test_an_unknown_user_with_recent_events_is_folded_in(block: Recommender) -> None:
    viewed = ["a00", "a05", "a11"]
    recent = [RecentEvent(item, "view", None, LATER) for item in viewed]
    answer = block.recommend("newcomer", n=5, recent=recent)
    assert answer.source == "realtime"
    assert _block_of(answer.item_ids) == {"a"}
    assert set(viewed).isdisjoint(answer.item_ids)
    old = [RecentEvent(item, "view", None, T0 - 5) for item in viewed]  # before the window end
    assert block.recommend("newcomer", n=5, recent=old).source == "realtime"


def test_new_events_move_a_known_users_vector_toward_their_items(block: Recommender) -> None:
    bought = ["b01", "b02", "b03", "b04"]
    recent = [RecentEvent(item, "purchase", None, LATER) for item in bought]
    trained, source = block.user_vector("u03")
    folded, folded_source = block.user_vector("u03", recent=recent)
    assert (source, folded_source) == ("model", "realtime")
    assert trained is not None
    assert folded is not None
    b_direction = block._model.item_factors[[int(i[1:]) + BLOCK for i in bought]].mean(axis=0)
    assert folded @ b_direction > trained @ b_direction + 0.1
    answer = block.recommend("u03", n=10, recent=recent)
    assert answer.source == "realtime"
    assert set(bought).isdisjoint(answer.item_ids)
    assert "b" in _block_of(answer.item_ids[:5])


def test_events_already_in_the_model_are_excluded_but_not_folded_in_again(
    block: Recommender,
) -> None:
    trained, _ = block.user_vector("u03")
    old = [RecentEvent("a19", "purchase", None, T0 - 5), RecentEvent("b00", "view", None, T0)]
    vector, source = block.user_vector("u03", recent=old)
    assert source == "model"
    np.testing.assert_array_equal(vector, trained)
    assert {"a19", "b00"}.isdisjoint(block.recommend("u03", n=30, recent=old).item_ids)


def test_similar_items_share_a_block_and_exclude_the_item_itself(block: Recommender) -> None:
    answer = block.similar("a03", n=5)
    assert answer.source == "model"
    assert "a03" not in answer.item_ids
    assert _block_of(answer.item_ids) == {"a"}
    assert answer.scores == sorted(answer.scores, reverse=True)
    assert all(0 < s <= 1.0 + 1e-6 for s in answer.scores)  # cosine similarity
    assert "a07" not in block.similar("a03", n=5, exclude=["a07"]).item_ids
    with pytest.raises(UnknownItem):
        block.similar("no-such-item", n=5)


def test_a_bpr_model_folds_in_a_new_user_too(block_paths: dict[str, Path]) -> None:
    bpr = Recommender.load(block_paths["bpr"])
    recent = [RecentEvent(item, "view", None, LATER) for item in ("b02", "b08", "b13")]
    answer = bpr.recommend("newcomer", n=5, recent=recent)
    assert answer.source == "realtime"
    assert _block_of(answer.item_ids) == {"b"}
    assert _block_of(bpr.similar("b02", n=3).item_ids) == {"b"}


def test_recommend_many_equals_recommend_per_user(block: Recommender) -> None:
    shop = block.with_catalog(
        CatalogSnapshot.from_rows([("a01", "x", False), ("a02", "x", True), ("b05", "y", True)])
    )
    recent = {
        "u05": [RecentEvent("b06", "add_to_cart", None, LATER)],
        "newcomer": [RecentEvent("b07", "view", None, LATER)],
    }
    users = ["u05", "u25", "newcomer", "stranger", "u05"]
    for options in ({}, {"category": "x"}, {"exclude": ["a02", "b01"], "include_seen": True}):
        many = shop.recommend_many(users, n=6, recent=recent, **options)
        one = [shop.recommend(u, n=6, recent=recent.get(u, ()), **options) for u in users]
        assert [a.source for a in many] == ["realtime", "model", "realtime", "popular", "realtime"]
        for a, b in zip(many, one, strict=True):
            assert a.item_ids == b.item_ids
            np.testing.assert_allclose(a.scores, b.scores, rtol=1e-5)


# -- the artifact: refused when corrupt, never written to ------------------------------------


def test_load_refuses_a_corrupt_artifact(tmp_path: Path) -> None:
    path = _write_tiny(tmp_path)
    factors = path / "item_factors.npy"
    data = bytearray(factors.read_bytes())
    data[-1] ^= 0xFF
    factors.write_bytes(bytes(data))
    with pytest.raises(CorruptArtifact, match="sha256"):
        Recommender.load(path)


@pytest.mark.parametrize(
    ("override", "reason"),
    [
        ({"item_popularity": np.ones(9, np.float32)}, "disagree"),
        ({"item_factors": np.full((10, 2), np.nan, np.float32)}, "NaN"),
        ({"seen": sp.csr_matrix((2, 10), dtype=np.float32)}, "disagree"),
    ],
)
def test_load_refuses_arrays_that_do_not_fit_together(
    tmp_path: Path, override: dict[str, Any], reason: str
) -> None:
    with pytest.raises(CorruptArtifact, match=reason):
        Recommender.load(_write_tiny(tmp_path, **override))


def test_the_recommender_never_writes_to_the_model_arrays(tmp_path: Path) -> None:
    path = _write_tiny(tmp_path)
    before = {name: np.array(a) for name, a in read_version(path).arrays.items()}
    rec = Recommender.load(path, catalog=_catalog(unavailable=[3]))
    for array in (rec._model.item_factors, rec._model.user_factors, rec._model.popularity):
        assert not array.flags.writeable
        with pytest.raises(ValueError, match="read-only"):
            array[0] = 0
    recent = [RecentEvent("i5", "purchase", None, LATER)]
    for category in (None, "odd"):
        rec.recommend_many(["alice", "bob"], n=20, category=category, recent={"alice": recent})
        rec.similar("i2", n=20, category=category)
        rec.popular(n=20, category=category)
    after = read_version(path, verify=True).arrays
    for name, array in before.items():
        np.testing.assert_array_equal(after[name], array)
