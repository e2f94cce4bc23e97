"""The PTB-XL data layer: PhysioNet layout, validation, labels, demographics, partitions, cached arrays, demo
data.

Modules: ``constants``, ``layout`` (CSV files), ``signals`` (WFDB records, model view, lead derivation),
``labels``, ``demographics``, ``partition`` (clients + splits + manifest), ``dataset`` (arrays, torch
Dataset), ``cache``, ``check`` (folder validation), ``download``, ``writer`` (writes PTB-XL-layout folders),
``demo``/``synth`` (synthetic data).
"""

__fedecg_room__ = "ptbxl"  # marks this top-level package as fedecg's (fedecg.rooms.check_rooms)
