"""A plugin whose prestartup script fails; the plugin itself still loads."""
NODE_CLASS_MAPPINGS = {}
