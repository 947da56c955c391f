"""What differs between the engines ``RECSYS_ENGINE`` chooses (:func:`recsys.config.engine`).

- ``local`` (default): pandas, NumPy and SciPy inside each task; its code is
  :mod:`recsys.data` itself.
- ``spark``: :mod:`recsys.engines.spark` (the one module that imports
  ``pyspark``) reads the interaction store, de-duplicates, splits and builds
  the feature tables on a Spark cluster, with the same results as the local
  code on the same data. The pipeline's steps pick the engine; the DAG, its
  params and its outputs (Parquet files in the run folder) are the same.
"""
