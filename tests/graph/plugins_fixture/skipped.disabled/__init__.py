raise RuntimeError("a .disabled plugin must never be imported")
