"""recsys: train, evaluate and ship personalized recommendations on a schedule.

All logic lives in this package; Airflow DAGs in ``dags/`` only wire calls into it.
"""

__version__ = "0.1.0"
