"""The study runner ``python -m runtime.cohort INPUT... -o OUTROOT``: many subjects, one folder each, resumable."""
