"""The operator's page in the Airflow UI, for one registered model at a time.

- :mod:`~recsys.ui.page`: what the page shows, gathered from MLflow and the run folders;
- :mod:`~recsys.ui.words`: metric labels, column order, decisions in words;
- :mod:`~recsys.ui.charts`: the charts (matplotlib, inline SVG);
- :mod:`~recsys.ui.datadocs`: the validation report and Great Expectations' pages made safe;
- :mod:`~recsys.ui.render`: the HTML (Jinja2 templates);
- :mod:`~recsys.ui.app`: the FastAPI app and its security headers.
"""

from recsys.ui.app import create_app

__all__ = ["create_app"]
