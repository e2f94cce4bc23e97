"""Fixed facts about PTB-XL and the model view used across the project.

Signals are in millivolts (mV). The full view has the 12 standard leads in PTB-XL order; the model view keeps
the 8 linearly independent leads (I, II, V1..V6) at 100 Hz, 1000 samples (10 s); the other 4 limb leads follow
from Einthoven/Goldberger (see ``ptbxl.signals.derive_12_leads``).
"""

from __future__ import annotations

LEADS_12: tuple[str, ...] = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
MODEL_LEADS: tuple[str, ...] = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")
MODEL_LEAD_INDEX: tuple[int, ...] = tuple(LEADS_12.index(name) for name in MODEL_LEADS)

FS = 100  # Hz, model view (records100/)
FS_HIGH = 500  # Hz, records500/
N_SAMPLES = 1000  # samples per record in the model view (10 s at 100 Hz)
DURATION_S = 10.0
ADC_GAIN = 1000.0  # PTB-XL stores 16-bit integers at 1000 units per mV (1 µV resolution)

DEMOGRAPHIC_FIELDS: tuple[str, ...] = ("age", "sex", "height", "weight")

DATABASE_CSV = "ptbxl_database.csv"
STATEMENTS_CSV = "scp_statements.csv"

# Columns the loader needs in ptbxl_database.csv (PTB-XL has 28; these are the ones we read).
REQUIRED_COLUMNS: tuple[str, ...] = (
    "ecg_id",
    "patient_id",
    "age",
    "sex",
    "height",
    "weight",
    "site",
    "scp_codes",
    "strat_fold",
    "filename_lr",
    "filename_hr",
)

# strat_fold split recommended by the PTB-XL authors (folds are patient-disjoint).
TRAIN_FOLDS: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8)
VAL_FOLDS: tuple[int, ...] = (9,)
TEST_FOLDS: tuple[int, ...] = (10,)
HELDOUT_FOLDS: tuple[int, ...] = VAL_FOLDS + TEST_FOLDS  # never trained on: reference sets for realism / audits
SPLITS: tuple[str, ...] = ("train", "val", "test")


def split_of_fold(fold: int) -> str:
    """Map a PTB-XL ``strat_fold`` (1..10) to "train" (1-8), "val" (9) or "test" (10)."""
    if fold in TRAIN_FOLDS:
        return "train"
    if fold in VAL_FOLDS:
        return "val"
    if fold in TEST_FOLDS:
        return "test"
    raise ValueError(f"strat_fold must be 1..10, got {fold!r}")
