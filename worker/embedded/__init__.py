"""Servers for running without services (the demo, the tests, a laptop): not the pipeline."""
