"""Loaded by the fork server that starts the worker processes of `workers`, before it forks any.

Importing it imports the parsing pipeline and builds the built-in taxonomy, so that every
worker starts with both in memory instead of building its own. Nothing else imports it.
"""

from aggregator.workers import warm_up

warm_up(())
