"""recsys: train, evaluate and ship personalized recommendations on a schedule.

All logic lives in this package; Airflow DAGs in ``dags/`` only wire calls into it.
Its rooms, lowest layer first (each imports only from the rooms above it in
this list, plus the top-level modules ``config``, ``constants``, ``errors``,
``ids`` and ``serialize``):

- ``data``: loaders, the synthetic generator, ingest, validation (Great
  Expectations), cleaning, splits, feature tables, erasure and the
  forgotten-users list;
- ``models``: the model contract (``base``) and one file per model;
- ``serving``: the served model, the cold-start chain, re-ranking, one
  request's answer (filters, fold-in), the Redis cache of the batch lists, the
  cache purge;
- ``evaluation``: metrics, holdout scoring, beyond-accuracy and slices, cold
  users, drift and decay;
- ``training``: the data every model is fitted on, fitting, tuning (Optuna);
- ``promotion``: the gate and its decision records, the retraining policy;
- ``registry``: MLflow runs, the pyfunc, aliases, read-only views;
- ``pipeline``: the steps every task calls, the run folder, reports, benchmark,
  monitoring, erasure;
- ``service``: the HTTP service over the champion (``recsys serve``): routes,
  the versions that answer, metrics, settings;
- ``cli`` and ``ui``: the ``recsys`` command and the Airflow page.
"""

__version__ = "0.1.0"

from recsys import compat as _compat

_compat.install()
