"""The operator's console: a page in a browser per robot actor to watch, take over and judge episodes."""
