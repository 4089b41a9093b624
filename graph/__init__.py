"""diffloom's graph engine: node declarations, the registry, workflows, validation, the executor, the cache.

This package imports without torch. The public plugin API is what `graph.api` exports.
"""
