"""The analyst: its prompt, its answer and rules, the deterministic heuristic, and llm check's measures."""
