"""The optimizer service: prompt hygiene, routing, optional reductions and context fitting.

core.Optimizer is the whole pipeline behind a ``count(request) -> int`` callable; service.py
puts it on the bus (``Optimize`` -> ``Optimized``) with counter.EngineCounter.
"""
