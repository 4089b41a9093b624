"""Raises while it is imported: the plugin fails and is reported, the others load."""
raise RuntimeError("fixture plugin refuses to load")
