"""Notebooks: notebook runs, the %%runyard magic and its live widget, JupyterLab as a run."""
