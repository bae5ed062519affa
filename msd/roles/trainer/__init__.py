"""The trainer process: one training request, then exit (SIGTERM = cancel).

main.py runs the job named by `trainer.job` (msd.learning.job by default); config.py is its
section.
"""
