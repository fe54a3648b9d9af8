"""/ops/: live dashboards for staff (fleet, sessions, processes, mobs)."""
