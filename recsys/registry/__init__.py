"""The registry plane: the one client of MLflow, the alias log, lineage and the pyfunc flavour."""
