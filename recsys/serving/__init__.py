"""What answers a request: the served model, its cold-start chain, re-ranking.

- :mod:`~recsys.serving.served`: top-K lists by external id, known or unknown users;
- :mod:`~recsys.serving.coldstart`: the fallback chain for users without history;
- :mod:`~recsys.serving.rerank`: popularity and diversity re-ranking;
- :mod:`~recsys.serving.forget`: a forgotten user's entries out of the serving cache.
"""
