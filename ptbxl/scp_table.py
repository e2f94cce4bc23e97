"""The 71 SCP-ECG statements used by PTB-XL, in the row order of its ``scp_statements.csv``.

Each row: (code, description, diagnostic, form, rhythm, diagnostic_class, diagnostic_subclass). This small
table lets the demo generator write a ``scp_statements.csv`` and lets metadata-only tools map codes to
superclasses without shipping PTB-XL's own file.
"""

from __future__ import annotations

import pandas as pd

STATEMENTS: tuple[tuple[str, str, int, int, int, str, str], ...] = (
    ("NDT", "non-diagnostic T abnormalities", 1, 1, 0, "STTC", "STTC"),
    ("NST_", "non-specific ST changes", 1, 1, 0, "STTC", "NST_"),
    ("DIG", "digitalis-effect", 1, 1, 0, "STTC", "STTC"),
    ("LNGQT", "long QT-interval", 1, 1, 0, "STTC", "STTC"),
    ("NORM", "normal ECG", 1, 0, 0, "NORM", "NORM"),
    ("IMI", "inferior myocardial infarction", 1, 0, 0, "MI", "IMI"),
    ("ASMI", "anteroseptal myocardial infarction", 1, 0, 0, "MI", "AMI"),
    ("LVH", "left ventricular hypertrophy", 1, 0, 0, "HYP", "LVH"),
    ("LAFB", "left anterior fascicular block", 1, 0, 0, "CD", "LAFB/LPFB"),
    ("ISC_", "non-specific ischemic", 1, 0, 0, "STTC", "ISC_"),
    ("IRBBB", "incomplete right bundle branch block", 1, 0, 0, "CD", "IRBBB"),
    ("1AVB", "first degree AV block", 1, 0, 0, "CD", "_AVB"),
    ("IVCD", "non-specific intraventricular conduction disturbance (block)", 1, 0, 0, "CD", "IVCD"),
    ("ISCAL", "ischemic in anterolateral leads", 1, 0, 0, "STTC", "ISCA"),
    ("CRBBB", "complete right bundle branch block", 1, 0, 0, "CD", "CRBBB"),
    ("CLBBB", "complete left bundle branch block", 1, 0, 0, "CD", "CLBBB"),
    ("ILMI", "inferolateral myocardial infarction", 1, 0, 0, "MI", "IMI"),
    ("LAO/LAE", "left atrial overload/enlargement", 1, 0, 0, "HYP", "LAO/LAE"),
    ("AMI", "anterior myocardial infarction", 1, 0, 0, "MI", "AMI"),
    ("ALMI", "anterolateral myocardial infarction", 1, 0, 0, "MI", "AMI"),
    ("ISCIN", "ischemic in inferior leads", 1, 0, 0, "STTC", "ISCI"),
    ("INJAS", "subendocardial injury in anteroseptal leads", 1, 0, 0, "MI", "AMI"),
    ("LMI", "lateral myocardial infarction", 1, 0, 0, "MI", "LMI"),
    ("ISCIL", "ischemic in inferolateral leads", 1, 0, 0, "STTC", "ISCI"),
    ("LPFB", "left posterior fascicular block", 1, 0, 0, "CD", "LAFB/LPFB"),
    ("ISCAS", "ischemic in anteroseptal leads", 1, 0, 0, "STTC", "ISCA"),
    ("INJAL", "subendocardial injury in anterolateral leads", 1, 0, 0, "MI", "AMI"),
    ("ISCLA", "ischemic in lateral leads", 1, 0, 0, "STTC", "ISCA"),
    ("RVH", "right ventricular hypertrophy", 1, 0, 0, "HYP", "RVH"),
    ("ANEUR", "ST-T changes compatible with ventricular aneurysm", 1, 0, 0, "STTC", "STTC"),
    ("RAO/RAE", "right atrial overload/enlargement", 1, 0, 0, "HYP", "RAO/RAE"),
    ("EL", "electrolytic disturbance or drug (former EDIS)", 1, 0, 0, "STTC", "STTC"),
    ("WPW", "Wolf-Parkinson-White syndrome", 1, 0, 0, "CD", "WPW"),
    ("ILBBB", "incomplete left bundle branch block", 1, 0, 0, "CD", "ILBBB"),
    ("IPLMI", "inferoposterolateral myocardial infarction", 1, 0, 0, "MI", "IMI"),
    ("ISCAN", "ischemic in anterior leads", 1, 0, 0, "STTC", "ISCA"),
    ("IPMI", "inferoposterior myocardial infarction", 1, 0, 0, "MI", "IMI"),
    ("SEHYP", "septal hypertrophy", 1, 0, 0, "HYP", "SEHYP"),
    ("INJIN", "subendocardial injury in inferior leads", 1, 0, 0, "MI", "IMI"),
    ("INJLA", "subendocardial injury in lateral leads", 1, 0, 0, "MI", "AMI"),
    ("PMI", "posterior myocardial infarction", 1, 0, 0, "MI", "PMI"),
    ("3AVB", "third degree AV block", 1, 0, 0, "CD", "_AVB"),
    ("INJIL", "subendocardial injury in inferolateral leads", 1, 0, 0, "MI", "IMI"),
    ("2AVB", "second degree AV block", 1, 0, 0, "CD", "_AVB"),
    ("ABQRS", "abnormal QRS", 0, 1, 0, "", ""),
    ("PVC", "ventricular premature complex", 0, 1, 0, "", ""),
    ("STD_", "non-specific ST depression", 0, 1, 0, "", ""),
    ("VCLVH", "voltage criteria (QRS) for left ventricular hypertrophy", 0, 1, 0, "", ""),
    ("QWAVE", "Q waves present", 0, 1, 0, "", ""),
    ("LOWT", "low amplitude T-waves", 0, 1, 0, "", ""),
    ("NT_", "non-specific T-wave changes", 0, 1, 0, "", ""),
    ("PAC", "atrial premature complex", 0, 1, 0, "", ""),
    ("LPR", "prolonged PR interval", 0, 1, 0, "", ""),
    ("INVT", "inverted T-waves", 0, 1, 0, "", ""),
    ("LVOLT", "low QRS voltages in the frontal and horizontal leads", 0, 1, 0, "", ""),
    ("HVOLT", "high QRS voltage", 0, 1, 0, "", ""),
    ("TAB_", "T-wave abnormality", 0, 1, 0, "", ""),
    ("STE_", "non-specific ST elevation", 0, 1, 0, "", ""),
    ("PRC(S)", "premature complex(es)", 0, 1, 0, "", ""),
    ("SR", "sinus rhythm", 0, 0, 1, "", ""),
    ("AFIB", "atrial fibrillation", 0, 0, 1, "", ""),
    ("STACH", "sinus tachycardia", 0, 0, 1, "", ""),
    ("SARRH", "sinus arrhythmia", 0, 0, 1, "", ""),
    ("SBRAD", "sinus bradycardia", 0, 0, 1, "", ""),
    ("PACE", "normal functioning artificial pacemaker", 0, 0, 1, "", ""),
    ("SVARR", "supraventricular arrhythmia", 0, 0, 1, "", ""),
    ("BIGU", "bigeminal pattern (unknown origin, SV or Ventricular)", 0, 0, 1, "", ""),
    ("AFLT", "atrial flutter", 0, 0, 1, "", ""),
    ("SVTAC", "supraventricular tachycardia", 0, 0, 1, "", ""),
    ("PSVT", "paroxysmal supraventricular tachycardia", 0, 0, 1, "", ""),
    ("TRIGU", "trigeminal pattern (unknown origin, SV or Ventricular)", 0, 0, 1, "", ""),
)

CODES: tuple[str, ...] = tuple(row[0] for row in STATEMENTS)
SUPERCLASS: dict[str, str] = {row[0]: row[5] for row in STATEMENTS if row[5]}
SUPERCLASSES: tuple[str, ...] = ("NORM", "MI", "STTC", "CD", "HYP")


def statements_frame():
    """The table as a DataFrame shaped like PTB-XL's ``scp_statements.csv`` (index = SCP code)."""
    rows = [
        {
            "description": desc,
            "diagnostic": float(diag) if diag else None,
            "form": float(form) if form else None,
            "rhythm": float(rhythm) if rhythm else None,
            "diagnostic_class": cls or None,
            "diagnostic_subclass": sub or None,
            "Statement Category": None,
            "SCP-ECG Statement Description": desc,
        }
        for _, desc, diag, form, rhythm, cls, sub in STATEMENTS
    ]
    return pd.DataFrame(rows, index=pd.Index(CODES, name=None))
