"""Reaching hosts: the connector protocol, SSH and local connectors, parallel runs."""

from installer.hosts.connector import Connector, Result, run_on

__all__ = ["Connector", "Result", "run_on"]
