"""A plugin that needs a package that is not installed."""
import diffloom_fixture_missing_dependency  # noqa: F401

NODE_CLASS_MAPPINGS = {}
