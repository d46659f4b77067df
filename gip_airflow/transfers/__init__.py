"""Transfers of GIP results to other systems (``gip_to_sql``: any common.sql database)."""
