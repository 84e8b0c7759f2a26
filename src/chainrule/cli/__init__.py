"""The console commands: thin entry points that compose a config and hand it to the layers below."""
