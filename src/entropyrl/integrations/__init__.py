"""Plug-ins that bring entropyrl's losses, selection, diagnostics and control to other trainers.

- :mod:`entropyrl.integrations.trl`: TRL's ``GRPOTrainer`` (install ``entropyrl[trl]``).

Importing this package imports no third-party trainer.
"""
