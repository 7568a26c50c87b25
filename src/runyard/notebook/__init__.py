"""Notebooks: notebook runs, the %%runyard magic and its widget, JupyterLab as a run."""
