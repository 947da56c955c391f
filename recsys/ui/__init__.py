"""The operator's page in the Airflow UI (see :mod:`recsys.ui.page`)."""

from recsys.ui.page import create_app

__all__ = ["create_app"]
