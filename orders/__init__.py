"""The release-order service: an order's rules, tags, records and actions, for every door (CLI, webhook, schedules, the UI's flows)."""
