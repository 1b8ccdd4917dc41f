"""One module per screen (mode) and per modal."""
