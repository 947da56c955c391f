"""Promotion: the gate that judges a challenger, and the records of what was decided.

- :mod:`recsys.promotion.gate`: the checks (margin, paired bootstrap,
  coverage, slices, load) and :func:`~recsys.promotion.gate.decide_gate`;
- :mod:`recsys.promotion.decision`: :class:`~recsys.promotion.decision.Decision`,
  manual decisions and their Markdown report;
- :mod:`recsys.promotion.retrain`: when to retrain (drift and decay against
  thresholds, a cooldown, erasures) and the record of each decision.

Both are pure: the registry (:mod:`recsys.registry`) records a decision and
moves the aliases.
"""
