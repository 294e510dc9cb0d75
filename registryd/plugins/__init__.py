"""Twisted plugin package for registryd: storage driver factories live here.

Other distributions extend it by installing a ``registryd/plugins/``
directory of their own (without an ``__init__.py``) that contains a module;
``pluginPackagePaths`` adds every such directory on ``sys.path`` to this
package's search path so ``twisted.plugin.getPlugins`` sees their modules.
"""

from twisted.plugin import pluginPackagePaths

__path__.extend(pluginPackagePaths(__name__))
__all__ = []
