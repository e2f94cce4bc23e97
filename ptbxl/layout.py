"""PhysioNet's PTB-XL folder layout: ``ptbxl_database.csv``, ``scp_statements.csv``, ``records100/``,
``records500/``. Reading validates what enters the project and raises ``FedECGError`` naming file and problem.

Metadata-only mode: a folder holding just ``ptbxl_database.csv`` is enough for ``read_database`` (partitioning
and summaries need no signals).
"""

from __future__ import annotations

import ast
import logging
from pathlib import Path

import pandas as pd

from fedecg.errors import FedECGError
from ptbxl.constants import DATABASE_CSV, REQUIRED_COLUMNS, STATEMENTS_CSV

log = logging.getLogger(__name__)


def database_path(root: str | Path) -> Path:
    """The ``ptbxl_database.csv`` of ``root`` (a PTB-XL folder, or the CSV file itself)."""
    root = Path(root)
    return root if root.suffix == ".csv" else root / DATABASE_CSV


def dataset_root(root: str | Path) -> Path:
    """The PTB-XL folder for ``root`` (a folder, or the path of its ``ptbxl_database.csv``)."""
    root = Path(root)
    return root.parent if root.suffix == ".csv" else root


def _parse_codes(text: object, ecg_id: object, path: Path) -> dict[str, float]:
    if isinstance(text, dict):
        return {str(k): float(v) for k, v in text.items()}
    try:
        value = ast.literal_eval(str(text))
    except (ValueError, SyntaxError) as exc:
        raise FedECGError(f"{path}: ecg_id {ecg_id}: scp_codes is not a dict literal: {text!r}") from exc
    if not isinstance(value, dict):
        raise FedECGError(f"{path}: ecg_id {ecg_id}: scp_codes is not a dict: {text!r}")
    return {str(k): float(v) for k, v in value.items()}


def _integer_column(df: pd.DataFrame, col: str, path: Path, where: list[str]) -> pd.Series:
    """``df[col]`` as int64; raises FedECGError naming the first bad row (``where[i]``) and its value when a
    value is missing, non-numeric or not a whole number (PTB-XL writes ids as ``1000.0``, which is accepted)."""
    raw = df[col]
    num = pd.to_numeric(raw, errors="coerce")
    for i, (value, n) in enumerate(zip(raw.tolist(), num.tolist(), strict=True)):
        if pd.isna(value) or (isinstance(value, str) and not value.strip()):
            problem = "missing"
        elif n != n:
            problem = f"not a number ({value!r})"
        elif n % 1 != 0:
            problem = f"not an integer ({value})"
        else:
            continue
        n_bad = int((num.isna() | (num.fillna(0) % 1 != 0)).sum())
        more = f"; {n_bad - 1} more bad row(s)" if n_bad > 1 else ""
        raise FedECGError(f"{path}: {where[i]}: {col} {problem}{more}")
    return num.astype("int64")


def read_database(root: str | Path, required: tuple[str, ...] = REQUIRED_COLUMNS) -> pd.DataFrame:
    """Read ``ptbxl_database.csv`` indexed by ``ecg_id`` (int), with ``scp_codes`` parsed to ``{code:
    likelihood}``.

    ``patient_id`` and ``strat_fold`` become int64; ``site`` stays float (NaN = no site recorded; PTB-XL
    v1.0.3 has 17 such rows). Raises FedECGError when the file is missing or unreadable, when a required
    column is absent (all missing columns are named), when ``ecg_id``/``patient_id``/``strat_fold`` is missing,
    non-numeric or not a whole number (the CSV row or ecg_id and the value are named), when ``ecg_id`` is
    duplicated, or when ``strat_fold`` is outside 1..10.
    """
    path = database_path(root)
    if not path.is_file():
        raise FedECGError(f"{path}: not found (expected PTB-XL's {DATABASE_CSV})")
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise FedECGError(f"{path}: cannot parse CSV: {exc}") from exc
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise FedECGError(f"{path}: missing required column(s): {', '.join(missing)}")
    if "ecg_id" in df.columns:
        df["ecg_id"] = _integer_column(df, "ecg_id", path, [f"row {i + 2}" for i in range(len(df))])
        if df["ecg_id"].duplicated().any():
            dups = df.loc[df["ecg_id"].duplicated(), "ecg_id"].tolist()[:5]
            raise FedECGError(f"{path}: ecg_id must be unique (duplicates e.g. {dups})")
        df = df.set_index("ecg_id", drop=True).sort_index()
    if "scp_codes" in df.columns:
        df["scp_codes"] = [_parse_codes(t, i, path) for i, t in zip(df.index, df["scp_codes"], strict=False)]
    if "patient_id" in df.columns:
        df["patient_id"] = _integer_column(df, "patient_id", path, [f"ecg_id {i}" for i in df.index])
    if "strat_fold" in df.columns:
        folds = _integer_column(df, "strat_fold", path, [f"ecg_id {i}" for i in df.index])
        bad = df.index[~folds.isin(range(1, 11))].tolist()
        if bad:
            raise FedECGError(f"{path}: strat_fold must be 1..10 (bad ecg_id(s) {bad[:5]})")
        df["strat_fold"] = folds.astype("int64")
    for col in ("age", "sex", "height", "weight", "site"):
        if col in df.columns:
            df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
    log.debug("read %d rows from %s", len(df), path)
    return df


def read_scp_statements(root: str | Path) -> pd.DataFrame:
    """Read ``scp_statements.csv`` (index = SCP code, PTB-XL: 71 rows in a fixed order).

    Raises FedECGError when the file is missing, unparsable, empty, or has duplicated codes."""
    path = dataset_root(root) / STATEMENTS_CSV
    if not path.is_file():
        raise FedECGError(f"{path}: not found (expected PTB-XL's {STATEMENTS_CSV})")
    try:
        df = pd.read_csv(path, index_col=0)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise FedECGError(f"{path}: cannot parse CSV: {exc}") from exc
    if df.empty or df.index.isna().any():
        raise FedECGError(f"{path}: no SCP codes in the first column")
    if df.index.duplicated().any():
        raise FedECGError(f"{path}: duplicated SCP codes {df.index[df.index.duplicated()].tolist()}")
    df.index = df.index.astype(str)
    return df


def record_paths(root: str | Path, filename: str) -> tuple[Path, Path]:
    """The ``.hea`` and ``.dat`` paths of a record named like ``records100/00000/00001_lr``."""
    base = dataset_root(root) / filename
    return base.with_name(base.name + ".hea"), base.with_name(base.name + ".dat")
