"""Learning a Q-table: market states, shaping from the analyses, and the training recipes."""
