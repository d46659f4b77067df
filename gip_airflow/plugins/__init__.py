"""Airflow plugins shipped with the provider (registered through ``plugins`` in the provider info)."""
