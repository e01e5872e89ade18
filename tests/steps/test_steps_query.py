"""Queries: comparisons, AND / OR / NOT / IN / is-null, stages, missing columns."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from shoal.steps import CountEstimator, MeanEstimator, Query, QueryFeature, StepsError

pytestmark = pytest.mark.timeout(30)

DF = pd.DataFrame(
    {
        "x": [1.0, 2.0, 3.0, None, 5.0, 0.5],
        "g": ["a", "b", "a", "c", None, "b"],
    }
)
x, g = QueryFeature("x"), QueryFeature("g")


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        (x < 2, DF.x < 2),
        (x <= 2, DF.x <= 2),
        (x > 2, DF.x > 2),
        (x >= 2, DF.x >= 2),
        (x == 3, DF.x == 3),
        (x != 3, DF.x != 3),
        ((x < 2) & (g == "b"), (DF.x < 2) & (DF.g == "b")),
        ((x < 2) | (g == "c"), (DF.x < 2) | (DF.g == "c")),
        (~(x < 2), ~(DF.x < 2)),
        (g.isin(["a", "c"]), DF.g.isin(["a", "c"])),
        (x.isnull(), DF.x.isna()),
        (g.notnull(), DF.g.notna()),
    ],
)
def test_filters_equal_pandas(flt, expected) -> None:  # type: ignore[no-untyped-def]
    got = Query().filter(flt).apply(DF)
    pd.testing.assert_frame_equal(got, DF[expected])


def test_stages_apply_in_order() -> None:
    query = Query().filter(x > 0.7).select(["x"]).filter(x < 5)
    pd.testing.assert_frame_equal(query.apply(DF), DF[(DF.x > 0.7) & (DF.x < 5)][["x"]])


def test_a_missing_column_names_the_columns_that_exist() -> None:
    with pytest.raises(StepsError) as info:
        Query().filter(QueryFeature("age") > 3).apply(DF)
    assert info.value.code == "steps.column"
    assert "['age']" in str(info.value) and "['x', 'g']" in str(info.value)
    with pytest.raises(StepsError, match="the data has"):
        Query().select(["nope"]).apply(DF)


def test_filters_apply_to_estimators() -> None:
    # Ferdelance ignored the filter: x < 2 on 6 rows counted 6.
    est = CountEstimator(query=x < 2)
    assert est.merge([est.local(est.frame(DF))]) == 2
    mean = MeanEstimator(feature="x", query=g == "a")
    assert math.isclose(mean.merge([mean.local(mean.frame(DF))]), 2.0)
