"""Labs: a topology file (YAML) applied, planned and destroyed as one batch.

topology  the file: schema (pydantic), one-line errors with file, line and field
diff      the difference between a topology and the store, and the requests that make it
run       apply and destroy, on the controller's verbs, under one hold of the lock
progress  a progress bar on a terminal, plain lines otherwise
"""
