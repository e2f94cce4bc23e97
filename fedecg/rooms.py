"""The distribution's rooms and a check that each top-level name is really ours.

fedecg installs its rooms as top-level packages (``client``, ``server``, ``privacy``, ``evaluation``, ``bench``,
...): the folder layout the project asked for, and the module paths Flower loads the apps by
(``server.app:app``, ``client.app:app`` in pyproject's ``[tool.flwr.app.components]``, also inside the FAB a
SuperLink ships to the SuperExec). Such generic names can collide with other distributions in the same
environment. Rather than let a foreign ``client`` package fail deep inside a command, :func:`check_rooms`
(run by the CLI before any command) finds each room's package and refuses, in one line, a package without
fedecg's room marker (``__fedecg_room__`` in its ``__init__``); a plain folder of the same name without an
``__init__.py`` (say, a data folder called ``ptbxl``) does not shadow a room and is let through. Install fedecg
in its own virtual environment (``make install`` does) to avoid the collision altogether.
"""

from __future__ import annotations

import importlib

from fedecg.errors import FedECGError

ROOMS = ("ptbxl", "sssd", "privacy", "evaluation", "pretraining", "client", "server", "simulations", "deploy",
         "experiments", "bench")


def check_rooms(rooms: tuple[str, ...] = ROOMS) -> None:
    """Import each room's package (its ``__init__`` only: a docstring and the marker) and check it is fedecg's.
    Raises FedECGError naming every package that is missing or belongs to another distribution."""
    problems = []
    for name in rooms:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            problems.append(f"{name}: cannot be imported ({exc})")
            continue
        if getattr(module, "__file__", None) is None:
            # a plain folder of that name (no __init__.py, e.g. a data folder called ptbxl in the working
            # directory) is a namespace portion: a regular package wins over it (site-packages), and the editable
            # install's finder resolves the room's submodules; it shadows nothing
            continue
        if getattr(module, "__fedecg_room__", None) != name:
            where = getattr(module, "__file__", None) or list(getattr(module, "__path__", []) or ["?"])[0]
            problems.append(f"{name}: {where} is another distribution's package")
    if problems:
        raise FedECGError("fedecg's top-level packages are shadowed: " + "; ".join(problems)
                          + " (install fedecg in its own virtual environment, e.g. `make install`)")
