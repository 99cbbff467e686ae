"""aggregator: a self-hosted crypto-news aggregator (feeds -> SQLite -> digest and merged feeds)."""

__version__ = "0.1.0"
PROJECT_URL = "https://github.com/aggregator-news/aggregator"
USER_AGENT = f"aggregator/{__version__} (+{PROJECT_URL})"
