"""Talking to servers outside qtrain: the LLM servers and the exchanges (ccxt)."""
