"""`recsys`, the command line: thin commands over plain functions of the three rooms. The edge:
the one package that may import `shared`, `online` and `offline` alike."""
