"""Request ids meet trained ids: ``match_ids`` and the service's one-id fast path."""

from __future__ import annotations

import pandas as pd
import pytest

from recsys.ids import IdMap, match_ids

ASKED = ["42", "42.0", "4.5", "new-7", "nan", "inf", "-inf", 42, 42.0, "-3", " 7 "]


@pytest.mark.parametrize(
    ("index", "expected"),
    [
        (pd.Index([1, 2, 42]), [42, 42, "4.5", "new-7", "nan", "inf", "-inf", 42, 42, -3, 7]),
        (
            pd.Index(["a", "42"]),
            ["42", "42.0", "4.5", "new-7", "nan", "inf", "-inf", "42", "42.0", "-3", " 7 "],
        ),
    ],
)
def test_match_ids_reads_request_ids_in_the_trained_type(index, expected):
    assert match_ids(ASKED, index).tolist() == expected


def test_an_infinite_id_is_unknown_not_a_crash():
    """Regression: "inf" passed the whole-number test (inf == round(inf)) and the
    cast to int64 raised, so ``/recommendations/inf`` answered 500."""
    assert match_ids(["inf", "-inf"], pd.Index([1, 2])).tolist() == ["inf", "-inf"]


@pytest.mark.parametrize("users", [[1, 2, 42], ["a", "42"]])
def test_the_services_one_id_path_agrees_with_match_ids(users):
    from recsys.serving.online import OnlineModel

    class Served:  # what OnlineModel reads of a served model, for ids only
        id_map = IdMap(pd.Index(users), pd.Index([1, 2]))
        model = X = None

        class cold_start:  # noqa: N801 - stands in for the attribute
            item_genres = None

    online = OnlineModel(Served())
    for raw in ASKED:
        want = match_ids([raw], online.users)[0]
        got = online.user_id(raw)
        assert (got, type(got)) == (want, type(want)), raw
