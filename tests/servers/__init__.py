"""Real servers' helper programs, run in subprocesses by ``tests/_fixtures_servers.py``."""
