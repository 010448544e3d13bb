"""What both sides use: settings, database, artifacts, metering and the cost ledger, the model
spec and event confidence, the ranking core, operator actions. Imports neither side nor cli."""
