"""Imports fine, but its requirements.txt names a package that is not installed."""
NODE_CLASS_MAPPINGS = {}
