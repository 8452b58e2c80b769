"""`make demo`: the whole product on one machine (see demo/__main__.py); demo/workload.py plays Aurum."""
