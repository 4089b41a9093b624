raise RuntimeError("a hidden folder must never be imported")
