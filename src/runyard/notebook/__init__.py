"""Notebooks: run a notebook headless as a background run (``runyard run notebook.ipynb``)."""
