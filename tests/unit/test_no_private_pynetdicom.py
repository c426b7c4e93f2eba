"""Only the compat module touches pynetdicom's internals (issue 14 item 1).

Every module of ``dicom_node/`` and ``tests/`` outside the compat package
``dicom_node/receive/pynetdicom_compat/`` is parsed and searched for:

- imports of a private pynetdicom module or name (``import pynetdicom._x``,
  ``from pynetdicom._x import y``, ``from pynetdicom import _x``);
- the private names the compat package uses (in any of its files), and
  pynetdicom's private names the node has used (``_servers``, ``_handlers``,
  ``_config``, ...), as attribute access (``ae._servers``), as a string given
  to ``getattr``/``setattr``/``hasattr``/``delattr``, or as a method defined
  in a class (an override of ``_create_association``);
- any assignment to ``__class__`` (a class swap on a live object).

A private attribute of a pynetdicom object reached under another name cannot
be seen statically; the list grows with the compat package, since every name
it uses is forbidden elsewhere.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
#: The compat package: every file in it may use pynetdicom's internals, no file outside may.
COMPAT = ROOT / "dicom_node" / "receive" / "pynetdicom_compat"
#: pynetdicom private names the node used before they moved into the compat module,
#: plus its private modules' names (``pynetdicom._config``, ``pynetdicom._globals``).
KNOWN_PRIVATE = frozenset(
    {
        "_servers",
        "_handlers",
        "_config",
        "_globals",
        "_version",
        "_server",
        "_reactor_checkpoint",
        "_is_paused",
        "_affected_sop_instance_uid",
        "_create_association",
        "_run_reactor",
        "_is_connected",
        "_dul_ready",
        "_kill",
        "_kill_thread",
    }
)
#: ``_server`` is also the Storage SCP's own attribute (``StorageSCP._server``): it is
#: forbidden only as an override or a string, not as ``self._server``.
OWN_NAMES_TOO = frozenset({"_server"})
ATTRIBUTE_FUNCTIONS = frozenset({"getattr", "setattr", "hasattr", "delattr"})


def _compat_files() -> list[Path]:
    """The Python files of the compat package, at any depth."""
    return sorted(COMPAT.rglob("*.py"))


def _in_compat(path: Path) -> bool:
    return path.is_relative_to(COMPAT)


def _private_names_of_compat() -> frozenset[str]:
    """Every private name the compat package uses on other objects or overrides."""
    names: set[str] = set()
    nodes = (
        node
        for path in _compat_files()
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
    )
    for node in nodes:
        if isinstance(node, ast.Attribute):
            names.add(node.attr)
        elif isinstance(node, ast.ClassDef):
            names.update(
                item.name
                for item in node.body
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef)
            )
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ATTRIBUTE_FUNCTIONS
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
        ):
            names.add(node.args[1].value)
    return frozenset(name for name in names if name.startswith("_") and not name.endswith("__"))


FORBIDDEN = KNOWN_PRIVATE | _private_names_of_compat()


def _is_private_module(module: str) -> bool:
    parts = module.split(".")
    return parts[0] == "pynetdicom" and any(part.startswith("_") for part in parts[1:])


def violations(source: str, filename: str = "<source>") -> list[str]:
    """The uses of private pynetdicom names in ``source``, as ``file:line: what``."""
    found: list[str] = []

    def add(node: ast.AST, what: str) -> None:
        found.append(f"{filename}:{getattr(node, 'lineno', 0)}: {what}")

    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _is_private_module(alias.name):
                    add(node, f"import {alias.name}")
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if _is_private_module(node.module):
                add(node, f"from {node.module} import ...")
            elif node.module.split(".")[0] == "pynetdicom":
                for alias in node.names:
                    if alias.name.startswith("_"):
                        add(node, f"from {node.module} import {alias.name}")
        elif isinstance(node, ast.Attribute) and node.attr in FORBIDDEN:
            own = (
                node.attr in OWN_NAMES_TOO
                and isinstance(node.value, ast.Name)
                and node.value.id in ("self", "cls")
            )
            if not own:
                add(node, f".{node.attr}")
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if (
                    isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef)
                    and item.name in FORBIDDEN
                ):
                    add(item, f"override of {item.name}")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ATTRIBUTE_FUNCTIONS
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and node.args[1].value in FORBIDDEN
        ):
            add(node, f"{node.func.id}(..., {node.args[1].value!r})")
        elif isinstance(node, ast.keyword) and node.arg in FORBIDDEN:
            add(node.value, f"keyword {node.arg}=")
        if isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign):
            targets = list(node.targets) if isinstance(node, ast.Assign) else [node.target]
            while targets:
                target = targets.pop()
                if isinstance(target, ast.Tuple | ast.List):
                    targets.extend(target.elts)
                elif isinstance(target, ast.Starred):
                    targets.append(target.value)
                elif isinstance(target, ast.Attribute) and target.attr == "__class__":
                    add(node, "assignment to __class__")
    return found


def _modules() -> list[Path]:
    paths = sorted((ROOT / "dicom_node").rglob("*.py")) + sorted((ROOT / "tests").rglob("*.py"))
    return [path for path in paths if not _in_compat(path)]


def test_only_the_compat_module_names_private_pynetdicom_internals():
    modules = _modules()
    assert len(modules) > 50  # the scan saw the code base, not an empty folder
    found = [
        hit for path in modules for hit in violations(path.read_text(), str(path.relative_to(ROOT)))
    ]
    assert found == [], "private pynetdicom names outside pynetdicom_compat:\n" + "\n".join(found)


def test_exactly_the_compat_package_is_exempt():
    every = sorted((ROOT / "dicom_node").rglob("*.py")) + sorted((ROOT / "tests").rglob("*.py"))
    exempt = [path for path in every if path not in set(_modules())]
    assert exempt == _compat_files()
    assert COMPAT / "__init__.py" in exempt
    assert not _in_compat(COMPAT.with_name("pynetdicom_compat_other.py"))  # a sibling is not in


def test_the_forbidden_names_follow_the_compat_module():
    # What the compat module patches today; a rename there moves the check with it.
    assert {
        "_reactor_checkpoint",
        "_create_association",
        "_run_reactor",
        "_servers",
        "_idle_timer",
        "_serve_request",
    } <= FORBIDDEN
    assert "_open" not in FORBIDDEN  # the node's own private attributes stay usable


@pytest.mark.parametrize(
    ("source", "what"),
    [
        ("import pynetdicom._config", "import pynetdicom._config"),
        ("from pynetdicom._handlers import standard_pdu_recv_handler", "pynetdicom._handlers"),
        ("from pynetdicom import _config", "from pynetdicom import _config"),
        ("from pynetdicom import AE, _globals", "from pynetdicom import _globals"),
        ("ae._servers.remove(server)", "._servers"),
        ("ae._servers = []", "._servers"),
        ("for e in server._handlers: pass", "._handlers"),
        ("assoc._reactor_checkpoint.clear()", "._reactor_checkpoint"),
        ("req._affected_sop_instance_uid = uid", "._affected_sop_instance_uid"),
        ("sock.__class__ = Guarded", "assignment to __class__"),
        ("a, b.__class__ = 1, Guarded", "assignment to __class__"),
        ("getattr(ae, '_servers', None)", "getattr(..., '_servers')"),
        (
            "class H(RequestHandler):\n    def _create_association(self): ...",
            "override of _create_association",
        ),
        ("SimpleNamespace(_servers=[])", "keyword _servers="),
    ],
)
def test_the_scan_finds_each_kind_of_private_use(source, what):
    found = violations(source)
    assert len(found) == 1 and what in found[0], found


@pytest.mark.parametrize(
    "source",
    [
        "from pynetdicom import AE, evt\nfrom pynetdicom.status import code_to_category",
        "name = err.__class__.__name__",
        "self._server = None\nself._open = {}",
        "import pynetdicom\nversion = pynetdicom.__version__",
        "counts[err.__class__.__name__] += 1",
    ],
)
def test_the_scan_leaves_public_use_alone(source):
    assert violations(source) == []
