"""Fitting candidates: the data they share, fitting and scoring one, tuning.

- :mod:`~recsys.training.data`: :class:`~recsys.training.data.TrainingData`,
  the matrix, id map and typed fit context of a run;
- :mod:`~recsys.training.fit`: fit one model and score it, also as served;
- :mod:`~recsys.training.tuning`: Optuna on a validation carve of train.
"""
