"""State discretisation: range, warm-up handling, train-only fitting, JSON round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from model.learning.states import DEFAULT_BINS, StateSpace

FEATS = ("a", "b", "c")

finite_or_nan = st.one_of(st.floats(-1e6, 1e6, allow_nan=False), st.just(float("nan")))


@st.composite
def feature_table(draw: st.DrawFn) -> dict[str, np.ndarray]:
    n = draw(st.integers(1, 60))
    return {
        name: draw(hnp.arrays(np.float64, n, elements=finite_or_nan | st.sampled_from([np.inf, -np.inf])))
        for name in FEATS
    }


@st.composite
def edges(draw: st.DrawFn) -> np.ndarray:
    vals = draw(st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=1, max_size=5, unique=True))
    return np.array(sorted(vals))


@settings(max_examples=200, deadline=None)
@given(feature_table(), st.tuples(edges(), edges(), edges()))
def test_encode_in_range_and_minus_one_iff_nan(
    feats: dict[str, np.ndarray], e: tuple[np.ndarray, ...]
) -> None:
    space = StateSpace(FEATS, e)
    m = space.encode(feats)
    assert m.dtype == np.int64
    any_nan = np.any(np.vstack([np.isnan(feats[f]) for f in FEATS]), axis=0)
    np.testing.assert_array_equal(m == -1, any_nan)
    assert np.all((m[~any_nan] >= 0) & (m[~any_nan] < space.n_market_states))
    # decode gives back the per-feature bins that searchsorted would give
    bins = space.decode(m)
    for i, f in enumerate(FEATS):
        expect = np.searchsorted(e[i], feats[f][~any_nan], side="right")
        np.testing.assert_array_equal(bins[~any_nan, i], expect)


def test_encode_is_causal_row_by_row() -> None:
    rng = np.random.default_rng(0)
    feats = {f: rng.normal(size=50) for f in FEATS}
    space = StateSpace.fit(feats, names=FEATS, n_bins=4)
    whole = space.encode(feats)
    for t in (0, 17, 49):
        one = space.encode({f: feats[f][t : t + 1] for f in FEATS})
        assert one[0] == whole[t]


def test_mixed_radix_order_first_feature_most_significant() -> None:
    space = StateSpace(("x", "y"), (np.array([0.0]), np.array([0.0, 1.0])))
    assert space.n_market_states == 6 and space.n_states == 12
    m = space.encode({"x": np.array([-1.0, -1.0, 5.0, 5.0]), "y": np.array([-1.0, 0.5, -1.0, 2.0])})
    np.testing.assert_array_equal(m, [0, 1, 3, 5])


@settings(max_examples=100, deadline=None)
@given(
    st.integers(20, 200).flatmap(
        lambda n: st.tuples(
            hnp.arrays(np.float64, n, elements=finite_or_nan),
            hnp.arrays(np.bool_, n),
            hnp.arrays(np.float64, n, elements=finite_or_nan),
        )
    ),
    st.integers(2, 8),
)
def test_fit_reads_train_rows_only(data: tuple[np.ndarray, np.ndarray, np.ndarray], n_bins: int) -> None:
    x, mask, other = data
    if not np.any(mask & np.isfinite(x)):
        with pytest.raises(ValueError, match="no finite value"):
            StateSpace.fit({"x": x}, names=["x"], n_bins=n_bins, train_mask=mask)
        return
    space = StateSpace.fit({"x": x}, names=["x"], n_bins=n_bins, train_mask=mask)
    changed = np.where(mask, x, other)  # every non-train row replaced
    space2 = StateSpace.fit({"x": changed}, names=["x"], n_bins=n_bins, train_mask=mask)
    assert space == space2
    assert len(space.edges[0]) <= n_bins - 1
    assert np.all(np.diff(space.edges[0]) > 0)


def test_fit_quantiles_give_balanced_bins_and_ignore_nan() -> None:
    x = np.arange(1000, dtype=np.float64)
    x[::10] = np.nan
    mask = np.arange(1000) < 800
    space = StateSpace.fit({"x": x}, names=["x"], n_bins=4, train_mask=mask)
    m = space.encode({"x": x})
    counts = np.bincount(m[mask & (m >= 0)], minlength=4)
    assert counts.min() >= 170 and counts.max() <= 190  # 720 finite train rows / 4
    assert space.edges[0][-1] < 800  # test rows (>= 800) did not move the top edge


def test_default_space_documented_bins_and_json_round_trip() -> None:
    space = StateSpace.default()
    assert space.features == tuple(DEFAULT_BINS)
    assert space.n_market_states == int(np.prod([len(v) + 1 for v in DEFAULT_BINS.values()]))
    back = StateSpace.from_json(json.loads(json.dumps(space.to_json())))
    assert back == space
    feats = {f: np.array([np.nan, 50.0, -3.0]) for f in space.features}
    m = space.encode(feats)
    assert m[0] == -1 and 0 <= m[1] < space.n_market_states


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"features": (), "edges": ()}, "features is empty"),
        ({"features": ("a",), "edges": (np.array([2.0, 1.0]),)}, "strictly increasing"),
        ({"features": ("a",), "edges": (np.array([np.nan]),)}, "NaN"),
        ({"features": ("a", "a"), "edges": (np.array([1.0]), np.array([1.0]))}, "duplicates"),
        ({"features": ("a", "b"), "edges": (np.array([1.0]),)}, "edges has 1"),
    ],
)
def test_bad_spaces_rejected(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        StateSpace(**kwargs)  # type: ignore[arg-type]


def test_encode_errors_name_the_feature() -> None:
    space = StateSpace(("a", "b"), (np.array([0.0]), np.array([0.0])))
    with pytest.raises(ValueError, match="'b'"):
        space.encode({"a": np.zeros(3)})
    with pytest.raises(ValueError, match="'b' has 2 rows"):
        space.encode({"a": np.zeros(3), "b": np.zeros(2)})
    with pytest.raises(ValueError, match="n_bins"):
        StateSpace.fit({"a": np.zeros(3)}, names=["a"], n_bins=1)
