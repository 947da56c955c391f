"""Scoring lists offline: ranking metrics, holdout evaluation, beyond-accuracy, cold users.

- :mod:`~recsys.evaluation.metrics`: precision, recall, NDCG, MAP, MRR, hit
  rate at K over index arrays;
- :mod:`~recsys.evaluation.holdout`: a model or a recommendation frame on a
  held-out split;
- :mod:`~recsys.evaluation.beyond`: coverage, novelty, diversity, popularity
  bias and the user and item slices;
- :mod:`~recsys.evaluation.cold_users`: the cold-user slice;
- :mod:`~recsys.evaluation.drift`: drift and (prequential) decay of a new batch
  against a model's training data.
"""
