"""Where configuration becomes a run: the config tree and its groups, validation before anything
starts, the builders that turn config into objects, and the entry-point helper every CLI uses."""

from chainrule.config.resolvers import register_resolvers

register_resolvers()
