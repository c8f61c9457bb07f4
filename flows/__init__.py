"""Prefect wiring: flows, tasks, the ``ltv`` CLI and the one settings object."""
