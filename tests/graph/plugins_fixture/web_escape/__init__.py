"""A plugin whose WEB_DIRECTORY points outside its own folder: loaded, but nothing is served."""
from graph.api import Int, node

WEB_DIRECTORY = "../good_pack/web"


@node(outputs="INT", category="web_escape")
def EscapeValue(value: int = Int(7)) -> int:
    """A node so the plugin has something to load."""
    return value
