"""A plugin with a syntax error."""
def broken(:
    pass
