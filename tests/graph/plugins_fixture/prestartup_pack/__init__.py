"""A plugin with a prestartup script."""
NODE_CLASS_MAPPINGS = {}
