"""Notebooks: the IPython magics and live widget, and notebooks run as runs."""
