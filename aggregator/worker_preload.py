"""Loaded by the fork server that starts the worker processes of `workers`, before it forks any.

Importing it imports the parsing pipeline and story grouping and builds the built-in taxonomy,
so that every worker starts with them in memory instead of loading its own. Nothing else
imports it.
"""

import aggregator.stories  # noqa: F401  (for the story worker)
from aggregator.workers import warm_up

warm_up(())
