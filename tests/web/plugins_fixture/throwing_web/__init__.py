"""Loads fine on the server; its browser extension scripts all go wrong in the editor."""
WEB_DIRECTORY = "web"
NODE_CLASS_MAPPINGS = {}
