"""Models already in registries keep loading after code moves.

``fixtures/pyfunc_before_house`` is a served model (popularity on a tiny
synthetic data set) logged by the release before the package was split into
rooms: its pickles name ``recsys.tracking.RecsysPyfuncModel`` and
``recsys.coldstart.ColdStart``. MLflow's own loader must still read it and
answer exactly as it did then.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

FIXTURES = Path(__file__).parent / "fixtures"
SAVED = FIXTURES / "pyfunc_before_house"


def test_model_pickled_under_the_old_module_paths_loads_and_answers_as_before():
    import mlflow.pyfunc

    pickled = (SAVED / "python_model.pkl").read_bytes()
    assert b"recsys.tracking" in pickled, "the fixture must name the old module path"
    assert b"recsys.coldstart" in (SAVED / "artifacts" / "cold_start.pkl").read_bytes()
    expected = pd.DataFrame(
        json.loads((FIXTURES / "pyfunc_before_house.expected.json").read_text())
    )
    model = mlflow.pyfunc.load_model(str(SAVED))
    answer = model.predict(pd.DataFrame({"user_id": [1, 2, 99999]}), params={"k": 3})
    pd.testing.assert_frame_equal(answer.reset_index(drop=True), expected, check_dtype=False)
