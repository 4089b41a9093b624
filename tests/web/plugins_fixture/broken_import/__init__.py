"""Needs a package that is not installed: the plugin fails to import and is reported."""
import diffloom_fixture_absent_package  # noqa: F401

NODE_CLASS_MAPPINGS = {}
