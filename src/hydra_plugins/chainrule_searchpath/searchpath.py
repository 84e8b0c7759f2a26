"""A user's own config options, without copying chainrule's config tree: YAML files in `./conf/<group>/`
(the directory a command starts from) and in `$CHAINRULE_CONFIG_DIR/<group>/` are options of that group
(`cluster=mysite` picks `conf/cluster/mysite.yaml`), searched before chainrule's own tree, so a file of
the same name replaces the shipped one. Hydra finds this plugin in the hydra_plugins namespace."""

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


class ChainruleSearchPath(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        from chainrule.config.groups import user_config_dirs

        for folder in reversed(user_config_dirs()):  # prepended one by one: the first ends up first
            search_path.prepend(provider="chainrule-user", path=f"file://{folder}")
