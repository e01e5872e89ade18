"""The node agent: runs task instances for a coordinator on one site."""
