"""The analyst of a window: its prompt, its answer and rules, the heuristic analyst, llm check's measures."""
