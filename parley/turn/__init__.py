"""What crosses the turn workflow's boundary: its input, the activities' inputs and
outputs, and the typed events of its stream."""
