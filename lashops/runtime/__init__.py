"""The framework-free agent engine.

Nothing in this package imports Django. Storage, journaling and event delivery are
passed in through the small interfaces in :mod:`lashops.runtime.interfaces`, so the
turn machine runs the same in memory (tests) and against the ORM (sessions_app).
"""
