"""A batch's path: dispatch windows, analyse each, reduce a symbol, gate and promote."""
