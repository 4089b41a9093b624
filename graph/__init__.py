"""diffloom's graph engine: node declarations, the registry, workflows, validation, the executor, the cache.

This package imports without torch.
"""

__version__ = "0.1.0"
