raise OSError("prestartup could not prepare its cache")
