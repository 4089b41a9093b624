"""A plugin that fails while importing."""
raise RuntimeError("the pack is broken on purpose")
