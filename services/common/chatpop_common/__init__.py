"""Shared runtime for ChatPop services: bootstrap, settings, telemetry, datastores, token checks.

Not deployable on its own; every service imports it.
"""
