"""Rich interactions: structured questions a turn asks the visitor (forms, choice chips)."""
