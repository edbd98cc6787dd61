"""The Temporal worker process: `python worker.py`."""
