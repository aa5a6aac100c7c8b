"""The serving plane: the HTTP API and the feedback it keeps in process."""
