"""Runs before the plugins load (ComfyUI's prestartup hook)."""
import os

os.environ["DIFFLOOM_FIXTURE_PRESTARTUP"] = "ran"
