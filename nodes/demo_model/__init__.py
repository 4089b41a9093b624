"""diffloom's own small text-to-image model: procedural training data, the trainer, and its export.

Nothing here is imported at run time; the trained files under `models/` load like any SD1 checkpoint.
"""
