"""The ``runyard`` command. ``main.py`` declares commands; each command's module loads when it runs."""
