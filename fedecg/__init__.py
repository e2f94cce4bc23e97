"""fedecg: federated, privacy-preserving training of a conditional ECG generator (SSSD-MIDT).

The distribution's rooms are top-level packages (see ARCHITECTURE.md): ``ptbxl`` (data), ``sssd`` (model),
``client``/``server`` (Flower apps), ``privacy``, ``evaluation``, ``simulations``, ``deploy``. This package
holds what they share: the project error type, atomic file I/O, device choice, and the CLI.
"""

__version__ = "0.1.0"
