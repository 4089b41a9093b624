"""A plugin written for a later major version of diffloom's plugin API."""
from graph.api import Int, node

DIFFLOOM_API = "2.0"


@node(outputs="INT")
def FromTheFuture(value: int = Int(1)) -> int:
    """Never registered."""
    return value
