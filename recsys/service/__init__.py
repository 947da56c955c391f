"""The recommendation service: the registry's champion answering over HTTP.

The top room: it imports the registry (which version answers) and serving
(how a list is made), and nothing imports it but the ``recsys serve`` command.

- :mod:`~recsys.service.app`: the routes (FastAPI), A/B bucketing, the access log;
- :mod:`~recsys.service.holder`: the loaded champion and challenger, followed
  as their aliases move, swapped without dropping requests;
- :mod:`~recsys.service.metrics`: the Prometheus metrics;
- :mod:`~recsys.service.config`: the settings (flags, environment, defaults).
"""
