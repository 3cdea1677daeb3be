"""The agent's decision: component signals, the ensemble, the run-time step and position sizing."""
