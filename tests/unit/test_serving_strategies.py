"""Serving strategies against exact scoring, on synthetic versions written to tmp_path.

One random model is written once per strategy; the exact version is the reference: the
precomputed and float16 strategies must give its answers, ANN must obey every ranking rule
(and report its recall), and the batcher must give one-by-one answers in fewer scans.

Over 350 lines on purpose: every serving strategy against the same ranking rules.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

from offline.dataset import build_matrix
from offline.pipeline import version_arrays
from offline.serving_build import serving_arrays
from offline.training import fit
from shared.artifacts import CorruptArtifact, write_version
from shared.confidence import ConfidenceSettings, EventColumns
from shared.model_spec import ModelParams
from shared.ranking.batching import RequestBatcher
from shared.ranking.recommender import CatalogSnapshot, RankedList, RecentEvent, Recommender
from shared.ranking.strategies import ServingPlan
from shared.serving_strategy import ServingStrategy

USERS, ITEMS, FACTORS = 150, 400, 16
WINDOW_END = "2023-11-14T22:13:20+00:00"
LATER = 1_700_000_000.0 + 86_400.0  # after the window: news to the model
OPTIONS: list[dict[str, Any]] = [
    {},
    {"exclude": ["i0003", "i0010", "i0200", "unknown"]},
    {"category": "even"},  # half the items: the ANN path
    {"category": "odd3"},  # a tenth: filters leave precomputed lists short
    {"include_seen": True},
    {"n": 60},  # more than the precomputed lists hold
]


def _model(seed: int = 0, *, grid: bool = False) -> dict[str, Any]:
    """Random factors (on a 1/8 grid when `grid`: exact in float16); 8 seen items a user."""
    rng = np.random.default_rng(seed)
    users = rng.standard_normal((USERS, FACTORS)).astype(np.float32)
    items = rng.standard_normal((ITEMS, FACTORS)).astype(np.float32)
    if grid:
        users, items = (np.round(a * 8) / 8 for a in (users, items))
    rows = np.repeat(np.arange(USERS), 8)
    seen = sp.csr_matrix(
        (np.ones(len(rows), np.float32), (rows, rng.integers(0, ITEMS, len(rows)))),
        shape=(USERS, ITEMS),
    )
    seen.sum_duplicates()
    seen.data[:] = 1.0
    return {
        "user_factors": users.astype(np.float32),
        "item_factors": items.astype(np.float32),
        "user_ids": np.array([f"u{u:04d}" for u in range(USERS)]),
        "item_ids": np.array([f"i{i:04d}" for i in range(ITEMS)]),
        "seen": seen,
        "item_popularity": rng.integers(1, 50, ITEMS).astype(np.float32),
    }


def _write(root: Path, name: str, model: dict[str, Any], strategy: ServingStrategy) -> Path:
    extra = serving_arrays(
        strategy,
        user_factors=model["user_factors"],
        item_factors=model["item_factors"],
        seen=model["seen"],
        user_activity=None,
    )
    params = ModelParams(factors=FACTORS)
    fields = {
        "algorithm": "als",
        "params": params.to_dict(),
        "data": {"window_end": WINDOW_END, "confidence": ConfidenceSettings().to_dict()},
        "serving": strategy.to_dict(),
    }
    return write_version(root, name, {**model, **extra}, manifest_fields=fields)


def _catalog() -> CatalogSnapshot:
    """Even items in "even", odd ones in "odd0".."odd9" by last digit; every 11th unavailable."""
    return CatalogSnapshot.from_rows(
        (f"i{i:04d}", "even" if i % 2 == 0 else f"odd{i % 10}", i % 11 != 0) for i in range(ITEMS)
    )


STRATEGIES = {
    "exact": ServingStrategy(),
    "precomputed": ServingStrategy(name="precomputed", precomputed_n=20),
    "capped": ServingStrategy(name="precomputed", precomputed_n=20, precomputed_users=40),
    "ann": ServingStrategy(name="ann", ann_m=16, ann_ef_construction=100, ann_ef_search=64),
    "float16": ServingStrategy(name="float16"),
}


@pytest.fixture(scope="module")
def versions(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Recommender]:
    root = tmp_path_factory.mktemp("strategies")
    model = _model()
    return {
        name: Recommender.load(_write(root, name, model, strategy), catalog=_catalog())
        for name, strategy in STRATEGIES.items()
    }


@pytest.fixture
def scans(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the full scans (ServingPlan.score calls) and the users they scored."""
    counted: list[int] = []
    original = ServingPlan.score

    def counting(self: ServingPlan, vectors: np.ndarray, *args: Any) -> np.ndarray:
        counted.append(len(vectors))
        return original(self, vectors, *args)

    monkeypatch.setattr(ServingPlan, "score", counting)
    return counted


def _users() -> list[str]:
    return [f"u{u:04d}" for u in range(USERS)] + ["stranger"]


def _same(a: RankedList, b: RankedList) -> None:
    assert (a.item_ids, a.source, a.filled_from_popular) == (
        b.item_ids,
        b.source,
        b.filled_from_popular,
    )
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-5, atol=1e-6)


def _answer(rec: Recommender, user: str, options: dict[str, Any]) -> RankedList:
    return rec.recommend(user, **{"n": 10, **options})


# -- precomputed -------------------------------------------------------------------------------


@pytest.mark.parametrize("options", OPTIONS)
@pytest.mark.parametrize("name", ["precomputed", "capped"])
def test_precomputed_lists_give_exactly_the_exact_top_n(
    versions: dict[str, Recommender], name: str, options: dict[str, Any]
) -> None:
    for user in _users():
        _same(_answer(versions[name], user, options), _answer(versions["exact"], user, options))


def test_a_lookup_answers_without_a_scan_and_short_lists_fall_back(
    versions: dict[str, Recommender], scans: list[int]
) -> None:
    rec = versions["precomputed"]
    for user in _users()[:-1]:
        _answer(rec, user, {"exclude": ["i0003"]})
    assert scans == []  # every known user answered from their list
    for user in _users()[:-1]:
        _answer(rec, user, {"category": "odd3"})
    assert len(scans) > USERS // 2  # two or so of 20 listed items are in "odd3": exact


def test_newer_events_are_folded_in_rather_than_looked_up(
    versions: dict[str, Recommender], scans: list[int]
) -> None:
    recent = [RecentEvent("i0005", "purchase", None, LATER)]
    answer = versions["precomputed"].recommend("u0001", n=10, recent=recent)
    assert answer.source == "realtime"
    assert scans == [1]
    _same(answer, versions["exact"].recommend("u0001", n=10, recent=recent))
    assert "i0005" not in answer.item_ids


def test_the_capped_table_holds_the_most_active_users() -> None:
    model = _model()
    activity = np.arange(USERS)[::-1]  # user 0 most active
    strategy = ServingStrategy(name="precomputed", precomputed_n=5, precomputed_users=10)
    arrays = serving_arrays(
        strategy,
        user_factors=model["user_factors"],
        item_factors=model["item_factors"],
        seen=model["seen"],
        user_activity=activity,
    )
    np.testing.assert_array_equal(arrays["precomputed_users"], np.arange(10, dtype=np.int32))
    assert arrays["precomputed_items"].shape == (10, 5)
    assert arrays["precomputed_items"].dtype == np.int32
    seen = model["seen"]
    for row, items in enumerate(arrays["precomputed_items"]):
        assert not set(items) & set(seen[row].indices)


# -- ANN ----------------------------------------------------------------------------------------


def _assert_rules(rec: Recommender, user: str, answer: RankedList, options: dict[str, Any]) -> None:
    """Every ranking rule: n items, none banned or out of scope, model part above 0 and best
    first with its exact score, the fill in popularity order."""
    n = options.get("n", 10)
    rows = [int(i[1:]) for i in answer.item_ids]
    assert len(rows) == len(set(rows)) == n
    assert all(r % 11 != 0 for r in rows)  # unavailable
    assert not set(answer.item_ids) & set(options.get("exclude", ()))
    if "category" in options:
        assert {"even" if r % 2 == 0 else f"odd{r % 10}" for r in rows} == {options["category"]}
    model = rec._model
    row = model.users.find_one(user)
    if row >= 0 and not options.get("include_seen"):
        assert not set(rows) & set(model.seen(row).tolist())
    head = len(rows) - answer.filled_from_popular
    if row >= 0:
        exact = model.item_factors[rows[:head]] @ model.user_factors[row]
        np.testing.assert_allclose(answer.scores[:head], exact, rtol=1e-5, atol=1e-6)
    assert all(s > 0 for s in answer.scores[:head])
    assert answer.scores[:head] == sorted(answer.scores[:head], reverse=True)
    fill = answer.scores[head:]
    assert fill == sorted(fill, reverse=True)


@pytest.mark.parametrize("options", OPTIONS)
def test_ann_answers_obey_every_ranking_rule(
    versions: dict[str, Recommender], options: dict[str, Any]
) -> None:
    rec = versions["ann"]
    for user in _users():
        _assert_rules(rec, user, _answer(rec, user, options), options)


def test_ann_answers_mostly_without_a_full_scan(
    versions: dict[str, Recommender], scans: list[int]
) -> None:
    rec = versions["ann"]
    answers = rec.recommend_many(_users()[:-1], n=10)
    assert sum(scans) < USERS // 4  # users scored exactly after too few survivors
    exact = versions["exact"].recommend_many(_users()[:-1], n=10)
    overlap = np.mean(
        [len(set(a.item_ids) & set(b.item_ids)) / 10 for a, b in zip(answers, exact, strict=True)]
    )
    assert overlap > 0.8


def test_ann_recall_is_measured(tmp_path: Path, versions: dict[str, Recommender]) -> None:
    recall = versions["ann"].ann_recall(k=10, sample=100)
    assert 0.0 <= recall <= 1.0
    with pytest.raises(ValueError, match="not 'ann'"):
        versions["exact"].ann_recall()
    # Ten well-separated clusters: each user's best items are their cluster's closest ones.
    rng = np.random.default_rng(1)
    centers = np.eye(FACTORS, dtype=np.float32)[:10] * 4
    model = _model()
    model["item_factors"] = (
        centers[np.arange(ITEMS) % 10] + 0.3 * rng.standard_normal((ITEMS, FACTORS))
    ).astype(np.float32)
    model["user_factors"] = (
        centers[np.arange(USERS) % 10] + 0.3 * rng.standard_normal((USERS, FACTORS))
    ).astype(np.float32)
    strategy = ServingStrategy(name="ann", ann_m=8, ann_ef_construction=64, ann_ef_search=32)
    clustered = Recommender.load(_write(tmp_path, "clustered", model, strategy))
    assert clustered.ann_recall(k=10, sample=USERS) > 0.9


def test_a_poor_index_still_obeys_the_rules(tmp_path: Path) -> None:
    """A tiny graph searched with ef 1 misses many best items; answers stay within the rules."""
    model = _model(seed=3)
    strategy = ServingStrategy(name="ann", ann_m=2, ann_ef_construction=2, ann_ef_search=1)
    rec = Recommender.load(_write(tmp_path, "poor", model, strategy), catalog=_catalog())
    assert 0.0 <= rec.ann_recall(k=10, sample=USERS) < 1.0
    for options in OPTIONS:
        for user in _users():
            _assert_rules(rec, user, _answer(rec, user, options), options)


# -- float16 ------------------------------------------------------------------------------------


@pytest.mark.parametrize("options", OPTIONS)
def test_float16_answers_equal_exact_on_factors_float16_holds(
    tmp_path: Path, options: dict[str, Any]
) -> None:
    model = _model(grid=True)
    half = Recommender.load(
        _write(tmp_path, "half", model, STRATEGIES["float16"]), catalog=_catalog()
    )
    exact = Recommender.load(_write(tmp_path, "full", model, ServingStrategy()), catalog=_catalog())
    for user in _users():
        _same(_answer(half, user, options), _answer(exact, user, options))


def test_float16_answers_equal_exact_where_the_margins_are_clear(
    versions: dict[str, Recommender],
) -> None:
    compared = 0
    for user in _users()[:-1]:
        exact = versions["exact"].recommend(user, n=11)
        gaps = -np.diff(exact.scores[: 11 - exact.filled_from_popular])
        if exact.filled_from_popular or gaps.min() < 0.02:
            continue  # a near tie: rounding may swap the two
        compared += 1
        assert versions["float16"].recommend(user, n=10).item_ids == exact.item_ids[:10]
    assert compared > USERS // 4


# -- batched ------------------------------------------------------------------------------------


def _mixed_requests() -> list[tuple[str, dict[str, Any]]]:
    users = _users()
    recent = {"recent": [RecentEvent("i0007", "view", None, LATER)]}
    kinds = [{}, {"category": "even"}, {"exclude": ["i0002"], "n": 5}, recent, {"n": 3}]
    return [(users[(7 * i) % len(users)], kinds[i % len(kinds)]) for i in range(48)]


def test_concurrent_requests_share_scans_and_get_one_by_one_answers(
    versions: dict[str, Recommender], scans: list[int]
) -> None:
    rec = versions["exact"]
    requests = _mixed_requests()

    async def replay() -> tuple[list[RankedList], int]:
        batcher = RequestBatcher(rec, window_ms=20, max_batch=16)
        answers = await asyncio.gather(
            *(batcher.recommend(u, **{"n": 10, **o}) for u, o in requests)
        )
        await batcher.aclose()
        assert batcher.answered == len(requests)
        return answers, batcher.scans

    answers, batches = asyncio.run(replay())
    assert batches == 3  # all 48 waiting before the first scan: 16 a scan
    assert len(scans) < len(requests)  # one scan per category group of a batch
    for (user, options), answer in zip(requests, answers, strict=True):
        _same(answer, _answer(rec, user, options))


def test_a_batch_may_mix_versions_and_refuses_bad_requests(
    versions: dict[str, Recommender],
) -> None:
    old, new = versions["exact"], versions["float16"]
    batcher = RequestBatcher(old, window_ms=5)

    async def replay() -> list[RankedList]:
        with pytest.raises(ValueError, match="n must be"):
            await batcher.recommend("u0001", n=0)
        return await asyncio.gather(
            batcher.recommend("u0001", n=4), batcher.recommend("u0001", n=4, model=new)
        )

    for _ in range(2):  # a second event loop gets a drain of its own
        a, b = asyncio.run(replay())
        _same(a, old.recommend("u0001", n=4))
        _same(b, new.recommend("u0001", n=4))
    assert batcher.scans == 2


# -- versions exported by the pipeline ----------------------------------------------------------


def _events() -> EventColumns:
    rng = np.random.default_rng(5)
    users = [f"u{u:02d}" for u in range(40) for _ in range(10)]
    items = [f"i{int(i):02d}" for i in rng.integers(0, 60, len(users))]
    times = 1_700_000_000.0 - np.arange(len(users), dtype=np.float64)
    return EventColumns.from_arrays(users, items, ["view"] * len(users), occurred_at=times)


@pytest.mark.parametrize("name", ["exact", "precomputed", "batched", "ann", "float16"])
def test_a_version_exported_with_each_strategy_loads_and_serves(tmp_path: Path, name: str) -> None:
    events = _events()
    matrix = build_matrix(events, confidence=ConfidenceSettings(), reference_time=1.7e9)
    params = ModelParams(factors=8, iterations=5, num_threads=1, random_state=0)
    strategy = ServingStrategy(name=name)
    arrays = version_arrays(fit(matrix, params), matrix, events, serving=strategy)
    fields = {
        "algorithm": "als",
        "params": params.to_dict(),
        "data": {"window_end": WINDOW_END},
        "serving": strategy.to_dict(),
    }
    rec = Recommender.load(write_version(tmp_path, name, arrays, manifest_fields=fields))
    plain = {k: v for k, v in fields.items() if k != "serving"}  # as before strategies
    old = Recommender.load(
        write_version(
            tmp_path,
            "old",
            version_arrays(fit(matrix, params), matrix, events),
            manifest_fields=plain,
        )
    )
    assert (rec.serving.name, old.serving.name) == (name, "exact")
    for user in ("u00", "u17", "newcomer"):
        answer = rec.recommend(user, n=8)
        assert len(answer.item_ids) == 8
        if name == "float16":  # half-precision scores: the same items, close scores
            assert answer.item_ids == old.recommend(user, n=8).item_ids
        elif name != "ann":
            _same(answer, old.recommend(user, n=8))


def test_a_strategy_without_its_arrays_is_a_corrupt_artifact(tmp_path: Path) -> None:
    model = _model()
    fields = {"algorithm": "als", "params": ModelParams(factors=FACTORS).to_dict()}
    for name in ("precomputed", "ann", "float16"):
        serving = ServingStrategy(name=name).to_dict()
        path = write_version(tmp_path, name, model, manifest_fields={**fields, "serving": serving})
        with pytest.raises(CorruptArtifact, match="serving strategy unusable"):
            Recommender.load(path)
