"""Starting Parley: the `parley` CLI, the all-in-one dev stack, the embedded stores, and the
harness that tests and benches share.

The only code in `parley` that may import `gateway` or `worker` (tests/test_layout.py).
"""
