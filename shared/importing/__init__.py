"""Bulk import of event logs and catalogues (CSV or JSON Lines, gzip or plain): readers, column
mapping, the shared chunk loop, events and items. Imports `shared` only."""
