"""The shape of the code, checked from its source: one composition root
(collaborators passed to constructors, never set on objects afterwards),
no import cycles between registryd's modules, private Twisted names only
in registryd.compat, and storage drivers made without the daemon.
"""

import ast
import os
import subprocess
import sys
from collections import defaultdict

import twisted

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACKAGE = os.path.join(ROOT, "registryd")


def modules():
    """{dotted name: parsed tree} of every module of the registryd package."""
    found = {}
    for directory, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                dotted = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                dotted = dotted.removesuffix(".__init__")
                with open(path, encoding="utf-8") as stream:
                    found[dotted] = (path, ast.parse(stream.read(), path))
    return found


def imported(tree, module, is_package, known):
    """The registryd modules ``module`` imports, anywhere in it (an import
    inside a function makes a cycle as much as one at the top)."""

    def owner(name):
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name

    package = module if is_package else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(
                owner(alias.name) for alias in node.names if alias.name.startswith("registryd")
            )
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            if base.startswith("registryd"):
                for alias in node.names:
                    submodule = f"{base}.{alias.name}"
                    found.add(submodule if submodule in known else owner(base))
    found.discard(module)
    found.discard("")
    return found


def cycles(graph):
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph.get(node, ())):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                other = stack.pop()
                on_stack.discard(other)
                component.append(other)
                if other == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles_between_registryds_modules():
    known = modules()
    graph = {
        name: imported(tree, name, path.endswith("__init__.py"), known)
        for name, (path, tree) in known.items()
    }
    assert "registryd.runtime.startup" in graph["registryd.runtime.tap"]  # the scan sees imports
    assert cycles(graph) == []


#: Collaborators registryd.runtime.composition passes to constructors; setting one
#: on another object after construction is the wiring the composition root
#: replaced.
COLLABORATORS = frozenset(
    {
        "authorizer",
        "token_issuer",
        "proxy",
        "health",
        "events",
        "urls",
        "access_log",
        "prefix",
        "config_path",
        "listen_override",
        "config_filter",
        "app",
        "site",
        "driver",
        "registry",
    }
)


def assigned_attributes(tree):
    """(line, target source) of every assignment to an attribute of an
    object other than ``self``."""
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        flat = []
        for target in targets:
            flat.extend(target.elts if isinstance(target, ast.Tuple) else [target])
        for target in flat:
            if isinstance(target, ast.Attribute) and not (
                isinstance(target.value, ast.Name) and target.value.id in ("self", "cls")
            ):
                yield node.lineno, target.attr, ast.unparse(target)


def test_collaborators_are_passed_to_constructors_not_set_afterwards():
    wired = [
        f"{os.path.relpath(path, ROOT)}:{line}: {source}"
        for name, (path, tree) in sorted(modules().items())
        for line, attribute, source in assigned_attributes(tree)
        if attribute in COLLABORATORS
    ]
    assert wired == []


def test_operations_does_not_reach_into_the_service():
    path, tree = modules()["registryd.ops.operations"]
    reaching = sorted(
        {
            ast.unparse(node)
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "service"
        }
        | {
            ast.unparse(node)
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute)
            and node.attr == "service"
            and isinstance(node.value, ast.Name)
            and node.value.id == "self"
        }
    )
    assert reaching == []


def twisted_private_names():
    """Every underscore-prefixed name in the source of the Twisted modules
    registryd imports and of the modules their classes come from (their
    base classes' included): attributes set in ``__init__`` are found too.
    These are the names registryd must reach only through registryd.compat."""
    import importlib
    import inspect

    sources = set()
    for _path, tree in modules().values():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("twisted"):
                candidates = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                candidates = [
                    alias.name for alias in node.names if alias.name.startswith("twisted")
                ]
            else:
                continue
            for candidate in candidates:
                if candidate == "twisted.internet.reactor":
                    continue  # installs a reactor
                try:
                    module = importlib.import_module(candidate)
                except ImportError:
                    continue
                for value in [module, *vars(module).values()]:
                    classes = inspect.getmro(value) if inspect.isclass(value) else ()
                    for owner in [value, *classes]:
                        source = getattr(inspect.getmodule(owner), "__file__", None)
                        if source and os.sep + "twisted" + os.sep in source:
                            sources.add(source)
    names = set()
    for source in sources:
        with open(source, encoding="utf-8") as stream:
            tree = ast.parse(stream.read())
        for node in ast.walk(tree):
            name = (
                node.attr
                if isinstance(node, ast.Attribute)
                else node.name
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                else node.id
                if isinstance(node, ast.Name)
                else ""
            )
            if name.startswith("_") and not name.startswith("__"):
                names.add(name)
    return names


def registryd_definitions():
    """Underscore names registryd defines itself (functions, methods,
    classes, attributes it assigns): using those is not using Twisted's."""
    defined = set()
    for _path, tree in modules().values():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                defined.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                defined.add(node.id)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                defined.add(node.attr)
            elif isinstance(node, ast.alias):
                defined.add(node.asname or node.name.rpartition(".")[2])
    return defined


def attribute_uses(tree):
    """(attribute name, node) of every ``x.name`` and every
    ``getattr/hasattr/setattr(x, "name", ...)`` in ``tree``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            yield node.attr, node
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "hasattr", "setattr")
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
        ):
            yield node.args[1].value, node.args[1]


def test_private_twisted_names_are_used_only_in_compat():
    twisted_names = twisted_private_names()
    assert {"_observers", "_waitingForPort", "_parse", "_tempDataLen"} <= twisted_names, (
        f"Twisted {twisted.__version__}: the scan no longer finds the names registryd.compat wraps"
    )
    _, compat_tree = modules()["registryd.compat"]
    # What compat wraps may appear elsewhere only as a module's own
    # function of that name (urls.URLBuilder._path; the hooks overridden
    # in subclasses, which compat's tests check).
    wrapped = {name for name, _ in attribute_uses(compat_tree)}
    own = registryd_definitions()
    used = defaultdict(set)
    for name, (path, tree) in sorted(modules().items()):
        if name == "registryd.compat":
            continue
        functions = {
            node.name
            for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        }
        for attribute, node in attribute_uses(tree):
            if attribute in twisted_names and (
                attribute not in functions if attribute in wrapped else attribute not in own
            ):
                used[os.path.relpath(path, ROOT)].add(attribute)
            if attribute == "__class__" and isinstance(getattr(node, "ctx", None), ast.Store):
                used[os.path.relpath(path, ROOT)].add("__class__ =")
    assert dict(used) == {}


def test_offline_tools_make_their_driver_without_the_daemon():
    """registryd-gc and registryd-referrers reach storage through
    registryd.storage.factory: neither the service, the web stack nor the
    reactor is loaded."""
    script = (
        "import sys\n"
        "from registryd.ops.command import load_storage\n"
        "config, driver = load_storage('test', None)\n"
        "assert driver.name == 'filesystem', driver\n"
        "print(' '.join(sorted(m for m in sys.modules if m in (\n"
        "    'registryd.runtime.service', 'registryd.http.app', 'registryd.http.web', 'registryd.runtime.composition',\n"
        "    'klein', 'twisted.web.server', 'twisted.internet.reactor'))))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": ROOT},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == []
