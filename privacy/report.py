"""Plain-language verdict with stated thresholds, and the self-contained HTML audit report (PNGs inlined)."""

from __future__ import annotations

import base64
import html
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from fedecg.io import atomic_write_text


@dataclass(frozen=True)
class VerdictThresholds:
    """Every threshold the verdict uses (printed in the report)."""

    near_copy_margin: float = 0.01  # FAIL if near-copy share > holdout baseline share + this
    dcr_alpha: float = 0.05  # DCR binomial test significance level
    dcr_fail_excess: float = 0.10  # FAIL if significant and share closer to train − p0 > this (else WARN)
    mia_auc_warn: float = 0.60
    mia_auc_fail: float = 0.75
    mia_tpr1_warn: float = 0.05  # TPR at 1% FPR above this → WARN
    epsilon_warn: float = 10.0  # accounted record-level ε above this (or no DP) → WARN
    realism_factor: float = 3.0  # INFO when synthetic median DCR > this × real holdout's median DCR


_BUDGET_COLUMNS = ("n_records", "steps", "noise_multiplier", "sample_rate", "delta", "epsilon", "accountant")

def _check(level: str, name: str, text: str) -> dict:
    return {"level": level, "check": name, "text": text}


def verdict(audit: dict, th: VerdictThresholds | None = None) -> dict:
    """PASS / WARN / FAIL per check and overall (the worst), each with one sentence a reader can verify."""
    th = th or VerdictThresholds()
    checks = []
    nc, base = audit["near_copy_share"], audit["near_copy"]["baseline_holdout_share"]
    limit = base + th.near_copy_margin
    checks.append(
        _check(
            "FAIL" if nc > limit else "PASS",
            "near copies",
            f"{100 * nc:.1f}% of synthetic ECGs are near-copies of one training ECG (NNDR < "
            f"{audit['near_copy']['threshold']:.3g}); real unseen ECGs reach {100 * base:.1f}% by chance; "
            f"limit {100 * limit:.1f}%."
            + (" Sites' training records only; the public base corpus is checked apart." if "base_corpus" in audit
               else ""),
        )
    )
    d = audit["dcr"]
    excess = d["share_closer_to_train"] - d["expected_share"]
    p = d["p_value"]
    test = "split-permutation" if "permutation" in d else "binomial"
    level = "PASS" if p >= th.dcr_alpha else ("FAIL" if excess > th.dcr_fail_excess else "WARN")
    checks.append(
        _check(
            level,
            "distance to closest record",
            f"{100 * d['share_closer_to_train']:.1f}% of synthetic ECGs are closer to a training ECG than "
            f"to any holdout ECG, {100 * d['expected_share']:.1f}% expected without memorization "
            f"(one-sided {test} test p = {p:.2g}; significant below {th.dcr_alpha}, FAIL if the excess "
            f"exceeds {100 * th.dcr_fail_excess:.0f} points).",
        )
    )
    mia = audit.get("mia")
    if mia:
        auc, tpr1 = mia["auc"], mia["tpr_at_fpr"]["0.01"]
        level = (
            "FAIL" if auc > th.mia_auc_fail else "WARN" if auc > th.mia_auc_warn or tpr1 > th.mia_tpr1_warn else "PASS"
        )
        checks.append(
            _check(
                level,
                "membership inference",
                f"A loss-threshold attack on the model tells training ECGs from holdout ECGs with AUC "
                f"{auc:.3f} (0.5 = guessing) and catches {100 * tpr1:.1f}% of members at 1% false alarms; "
                f"WARN above AUC {th.mia_auc_warn} or {100 * th.mia_tpr1_warn:.0f}% TPR, "
                f"FAIL above AUC {th.mia_auc_fail}.",
            )
        )
    eps = audit.get("epsilon")
    if eps is not None:
        rel = eps.get("release", {}).get("epsilon")
        nonpriv = eps.get("non_private_sites", [])
        if nonpriv or rel in (None, "inf") or (isinstance(rel, float) and math.isinf(rel)):
            checks.append(
                _check(
                    "WARN",
                    "formal guarantee",
                    f"No differential-privacy guarantee: sites {', '.join(nonpriv) or '?'} trained without DP-SGD.",
                )
            )
        else:
            loose = [k for k, s in eps["sites"].items() if s.get("n_records") and s["delta"] >= 1 / s["n_records"]]
            note = f" (sites {', '.join(loose)}: δ ≥ 1/n allows releasing a whole record)." if loose else "."
            checks.append(
                _check(
                    "WARN" if rel > th.epsilon_warn or loose else "PASS",
                    "formal guarantee",
                    f"Record-level DP: ε = {rel:.2f} at δ = {eps['release']['delta']:.1e} for the released "
                    f"model (worst site); WARN above ε = {th.epsilon_warn:g} or when δ ≥ 1/n at a site" + note,
                )
            )
    can = audit.get("canary")
    if can:
        ok = can.get("consistent", True)
        checks.append(
            _check(
                "PASS" if ok else "FAIL",
                "empirical DP audit",
                f"Canary audit lower bound ε ≥ {can['epsilon_lower_bound']:.2f} "
                f"({100 * (1 - can['beta']):.0f}% confidence) vs accounted ε = "
                f"{can.get('accounted_epsilon')}; "
                + ("consistent." if ok else "the lower bound EXCEEDS the accounted ε: the accounting is wrong."),
            )
        )
    if "base_corpus" in audit:
        checks += base_checks(audit["base_corpus"])
    base_dcr = audit["dcr"]["baseline_holdout_to_train"]["median"]
    syn_dcr = audit["dcr"]["train"]["median"]
    unrealistic = []  # why the memorization checks cannot speak for this generator
    if syn_dcr > th.realism_factor * base_dcr:
        unrealistic.append("far from every real ECG")
        checks.append(
            _check(
                "INFO",
                "informativeness",
                f"Synthetic ECGs are far from every real ECG (median DCR {syn_dcr:.3g} vs {base_dcr:.3g} for real "
                f"unseen ECGs, factor > {th.realism_factor:g}): the generator is not yet realistic, so passing the "
                "memorization checks says little; re-audit the final model.",
            )
        )
    patients = audit.get("holdout_patients")
    if isinstance(patients, dict):  # refused before any verdict when not disjoint; stated here when checked
        if patients.get("patient_disjoint"):
            checks.append(_check("PASS", "holdout patients",
                                 f"The holdout ({patients.get('holdout_patients')} patients) shares no patient with "
                                 f"the training records ({patients.get('training_patients')} patients)."))
        else:
            checks.append(_check("INFO", "holdout patients", str(patients.get("note", "patient overlap not checked"))))
    realism = audit.get("realism")
    if realism is not None:
        check = realism_check(realism)
        checks.append(check)
        if check["level"] != "PASS":
            unrealistic.append("fails the realism criteria")
    order = {"INFO": 0, "PASS": 0, "WARN": 1, "FAIL": 2}
    overall = max((c["level"] for c in checks), key=order.get, default="PASS")
    if overall in ("PASS", "INFO") and unrealistic:
        overall = "UNINFORMATIVE"  # never PASS for a generator that does not draw ECGs
    summary = {
        "PASS": "No sign of memorization at the stated thresholds; the generator may leave the consortium "
        "if the accounted ε is acceptable.",
        "UNINFORMATIVE": "Uninformative: the synthetic ECGs do not look like ECGs ("
        + " and ".join(unrealistic) + "), so passing the memorization checks says nothing about what a "
        "realistic generator would reveal. This audit does not support a release; re-audit a model that draws ECGs.",
        "WARN": "Some signals need a privacy officer's judgement before the generator leaves the consortium.",
        "FAIL": "Do not release: the generator reproduces or reveals training ECGs.",
    }[overall]
    return {"overall": overall, "summary": summary, "checks": checks, "thresholds": asdict(th)}


def realism_check(realism: dict) -> dict:
    """The audit's ``realism`` block (evaluation.realism on the audited synthetic ECGs vs training records) as a
    check: PASS when every acceptance criterion is met, else INFO naming the failed ones (the verdict then
    becomes UNINFORMATIVE instead of PASS)."""
    if realism.get("error"):
        return _check("INFO", "realism", f"Realism metrics could not be computed ({realism['error']}): it is not "
                      "shown that the generator draws ECGs.")
    crit = realism.get("criteria") or {}
    failed = [k for k, ok in crit.items() if not ok]
    head = (f"Realism of the audited synthetic ECGs vs {realism.get('n_real')} training ECGs: "
            f"{len(crit) - len(failed)}/{len(crit)} criteria met")
    if not crit or failed:
        shown = ", ".join(f"{k} {_fmt(realism.get(k))}" for k in failed)
        return _check("INFO", "realism", head + (f" (failed: {shown})" if shown else "") + ": the generator does "
                      "not draw ECGs yet, so the memorization checks above are uninformative.")
    return _check("PASS", "realism", head + " (beat rhythm, inter-lead correlation, HF power, amplitude).")


def _overlap_text(ov: dict, what: str) -> str:
    ids = ", ".join(map(str, ov["ecg_ids"])) + (", ..." if ov["ecg_ids_truncated"] else "")
    if ov["n_confirmed"]:
        head = f"{ov['n_confirmed']} of the {ov['of']} {what} are also records of the public base corpus"
        if ov["n_unconfirmed"]:
            head += f" (and {ov['n_unconfirmed']} more share an ecg_id that cannot be checked here)"
    else:
        head = (f"{ov['n_unconfirmed']} of the {ov['of']} {what} share an ecg_id with the base corpus (could not "
                "be checked here: possibly the same records)")
    return f"{head} (ecg_id {ids}; {'; '.join(ov['basis'])})."


def base_checks(b: dict) -> list[dict]:
    """Checks about the public base corpus: INFO for what the synthetic ECGs do with public records (they never
    fail the audit), WARN when public and private data overlap."""
    checks = []
    ov = b.get("overlap_with_sites") or {}
    if ov.get("n_records"):
        checks.append(_check(
            "WARN", "public/private overlap",
            _overlap_text(ov, "sites' training records") + " The base was trained on them outside the sites' "
            "DP accounting, so the accounted ε does not cover them; here they count as private records.",
        ))
    oh = b.get("overlap_with_holdout") or {}
    if oh.get("n_records"):
        checks.append(_check(
            "WARN", "base trained on holdout",
            _overlap_text(oh, "holdout records") + " Those holdout records are not unseen by the generator, "
            "which biases the DCR train-vs-holdout test toward 'no memorization'; use a holdout the base never saw.",
        ))
    notes = " ".join(f"Note: {n}." for n in b.get("notes", []))
    if not b.get("available"):
        checks.append(_check(
            "INFO", "public base corpus",
            f"The run started from base {b.get('init')}; {b.get('reason')}. Synthetic ECGs were not compared with "
            "the base's (public) training records; the sites' checks above are unaffected."
            + (" " + notes if notes else ""),
        ))
        return checks
    c, nc = b["closest"], b.get("near_copy")
    cap = f" Capped: compared with {b['selection']}." if b.get("capped") else ""
    near = ""
    if nc:
        near = (f" {nc['count']} ({100 * nc['share']:.1f}%) are near-copies of one public base record (NNDR < "
                f"{nc['threshold']:.3g} over the base corpus; real unseen ECGs: "
                f"{100 * nc['baseline_holdout_share']:.1f}%).")
    checks.append(_check(
        "INFO", "public base corpus",
        f"{100 * c['share_base']:.1f}% of synthetic ECGs are closer to a public base record than to any site "
        f"training record (real unseen ECGs: {100 * c['baseline_holdout_share_base']:.1f}%).{near} The base's "
        "records are public: reported, never a FAIL." + cap + (" " + notes if notes else ""),
    ))
    return checks


def _img(png: bytes | None, alt: str) -> str:
    if not png:
        return ""
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}"/>'


def _fmt(v) -> str:
    if isinstance(v, float):
        return "∞" if math.isinf(v) else f"{v:.4g}"
    return html.escape(str(v))


def _table(rows: list[dict], cols: list[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(r.get(c, '-'))}</td>" for c in cols) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


_CSS = """body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
.PASS{color:#17702b}.INFO{color:#555}.UNINFORMATIVE{color:#6a3d9a}.WARN{color:#a86400}.FAIL{color:#b00020}img{max-width:100%}code{background:#f3f3f3}"""


def _dcr_text(d: dict) -> str:
    perm = d.get("permutation", {})
    return (
        f"<p>Closer to train: {d['closer_to_train']}/{d['n']} (expected share {d['expected_share']:.3f}); "
        f"split-permutation p = {perm.get('p_value', float('nan')):.3g} (decides); "
        f"binomial p = {d['binomial']['p_value']:.3g} (assumes independent samples); "
        f"the most popular real record is the nearest of {100 * perm.get('max_share_of_one_record', 0):.0f}% "
        f"of synthetic ECGs. Mann–Whitney U (size-matched, {d['mannwhitney_u']['reference_size']} records) "
        f"p = {d['mannwhitney_u']['p_value']:.3g}.</p>"
    )


def _base_html(b: dict, figures: dict[str, bytes]) -> list[str]:
    """The report's section on the public base corpus (the records that trained the pretrained base)."""
    src = {"synthetic": f"synthetic corpus (generator seed {b.get('generator_seed')})",
           "folder": f"folder {b.get('root')} (folds {b.get('folds')})"}.get(b["source"], "unknown source")
    parts = [
        "<h2>Public base corpus (the pretrained base's training records)</h2>",
        f"<p>The federation started from base <code>{html.escape(str(b.get('init')))}</code> "
        f"(sha256 <code>{html.escape(str(b.get('sha256'))[:16])}…</code>), pretrained on {html.escape(src)}: "
        f"{_fmt(b.get('n_records_card'))} records according to its model card.</p>",
        f"<p><b>{html.escape(b['note'])}</b></p>",
    ]
    for what, key, title in (("sites' training records", "overlap_with_sites", "Public/private overlap"),
                             ("holdout records", "overlap_with_holdout", "Base trained on holdout records")):
        ov = b.get(key) or {}
        if ov.get("n_records"):
            parts.append(f"<p class='WARN'><b>{title}:</b> {html.escape(_overlap_text(ov, what))}</p>")
    parts.append("<p>Overlap with the sites' training records: "
                 + ("none found" if not (b.get("overlap_with_sites") or {}).get("n_records") else "see above")
                 + " (" + html.escape("; ".join((b.get("overlap_with_sites") or {}).get("basis") or ["not checkable"]))
                 + ").</p>")
    parts += [f"<p class='WARN'>Note: {html.escape(n)}.</p>" for n in b.get("notes", [])]
    if not b.get("available"):
        parts.append(f"<p class='INFO'><b>{html.escape(str(b.get('reason')))}.</b> The synthetic ECGs were not "
                     "compared with the base's records.</p>")
        return parts
    if b.get("capped"):
        parts.append(f"<p class='WARN'>Capped: compared with {html.escape(b['selection'])}; raise "
                     f"<code>--base-max-records</code> (now {b['max_records']}) to compare more.</p>")
    else:
        parts.append(f"<p>Compared with {html.escape(b['selection'])}.</p>")
    c, nc = b["closest"], b.get("near_copy")
    parts += [
        _table(
            [
                {"set": "synthetic → base corpus", **b["dcr"]},
                {"set": "holdout → base corpus (real baseline)", **b["baseline_holdout_to_base"]},
            ],
            ["set", "mean", "median", "p05", "min"],
        ),
        f"<p>Closest training record (base vs site, ties count as site): {c['n_base']} synthetic ECGs closest to a "
        f"public base record, {c['n_site']} to a private site record (share public {100 * c['share_base']:.1f}%; "
        f"real unseen ECGs: {100 * c['baseline_holdout_share_base']:.1f}%).</p>",
    ]
    if nc:
        parts += [
            f"<p>Near-copies of one public base record (NNDR &lt; {nc['threshold']:.3g} over the base corpus): "
            f"{nc['count']} ({100 * nc['share']:.1f}%; real unseen ECGs {100 * nc['baseline_holdout_share']:.1f}%). "
            "They are public records: reported, they do not fail the audit.</p>",
            _table(nc["worst"], ["synthetic_index", "base_ecg_id", "d1", "d2", "nndr", "closest"]),
        ]
    parts.append(_img(figures.get("base_dcr"), "DCR to site records vs base corpus"))
    return parts


def render_html(audit: dict, figures: dict[str, bytes]) -> str:
    """One HTML page: verdict, ε table, DCR/NNDR histograms, worst near-copies, MIA ROC, canary bound."""
    v = audit["verdict"]
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>Privacy audit</title>"
        f"<style>{_CSS}</style></head><body>",
        "<h1>Privacy audit of a synthetic-ECG generator</h1>",
        f"<p>Run: <code>{html.escape(str(audit.get('run_dir')))}</code> · {audit['n_synthetic']} synthetic, "
        f"{audit['n_train']} training, {audit['n_holdout']} holdout ECGs · distance: {audit['distance']}"
        f" · created {html.escape(audit.get('created', ''))}</p>",
        f"<h2>Verdict: <span class='{v['overall']}'>{v['overall']}</span></h2><p>{html.escape(v['summary'])}</p><ul>",
    ]
    parts += [
        f"<li><b class='{c['level']}'>{c['level']}</b> {html.escape(c['check'])}: {html.escape(c['text'])}</li>"
        for c in v["checks"]
    ]
    parts.append("</ul>")
    eps = audit.get("epsilon")
    parts.append("<h2>Privacy budget (accounted)</h2>")
    if eps:
        rows = [
            dict(
                site=k,
                **{c: s.get(c) for c in _BUDGET_COLUMNS},
            )
            for k, s in eps["sites"].items()
        ]
        rows += [{"site": s, "epsilon": "∞ (no DP)"} for s in eps.get("non_private_sites", [])]
        parts.append(
            _table(
                rows,
                ["site", *_BUDGET_COLUMNS],
            )
        )
        parts.append(
            f"<p>Released model (record level, worst site): ε = {_fmt(eps['release']['epsilon'])} at "
            f"δ = {_fmt(eps['release']['delta'])}.</p>"
        )
    else:
        parts.append("<p>No privacy ledger in the run directory.</p>")
    d = audit["dcr"]
    parts += [
        "<h2>Distance to closest record (DCR)</h2>",
        _table(
            [
                {"set": "synthetic → train", **d["train"]},
                {"set": "synthetic → holdout", **d["holdout"]},
                {"set": "holdout → train (real baseline)", **d["baseline_holdout_to_train"]},
            ],
            ["set", "mean", "median", "p05", "min"],
        ),
        _dcr_text(d),
        _img(figures.get("dcr"), "DCR histograms"),
        "<h2>Nearest-neighbour distance ratio and near-copies</h2>",
        f"<p>NNDR median {audit['nndr']['median']:.3f} (real holdout: "
        f"{audit['nndr']['baseline_holdout']['median']:.3f}); near-copy share "
        f"{100 * audit['near_copy_share']:.2f}% (NNDR &lt; {audit['near_copy']['threshold']:.3g}).</p>",
        _img(figures.get("nndr"), "NNDR histograms"),
        "<h3>Synthetic ECGs closest to a single training ECG</h3>",
        _table(audit["near_copy"]["worst"], ["synthetic_index", "train_ecg_id", "d1", "d2", "nndr"]),
        _img(figures.get("near_copies"), "worst near-copies"),
    ]
    if "base_corpus" in audit:
        parts += _base_html(audit["base_corpus"], figures)
    mia = audit.get("mia")
    parts.append("<h2>Membership inference on the model</h2>")
    if mia:
        parts += [
            f"<p>{mia['n_members']} members vs {mia['n_nonmembers']} holdout; AUC {mia['auc']:.3f}; "
            f"TPR at 1% FPR {mia['tpr_at_fpr']['0.01']:.3f}, at 0.1% FPR {mia['tpr_at_fpr']['0.001']:.3f} "
            f"(FPR resolution {mia['fpr_resolution']:.3g}). Timesteps {mia['timesteps']}, "
            f"{mia['n_noise']} noise draws.</p>",
            _img(figures.get("roc"), "MIA ROC"),
        ]
    else:
        parts.append("<p>Skipped (no checkpoint).</p>")
    can = audit.get("canary")
    if can:
        parts += [
            "<h2>Empirical DP audit (canaries, one run)</h2>",
            f"<p>{can['n_canaries']} canaries, {can['guesses']} guesses, {can['correct']} correct → "
            f"ε ≥ {can['epsilon_lower_bound']:.3f} at δ = {can['delta']:.1e} with "
            f"{100 * (1 - can['beta']):.0f}% confidence (Steinke, Nasr &amp; Jagielski 2023); "
            f"accounted ε = {_fmt(can.get('accounted_epsilon'))}.</p>",
        ]
    parts.append(
        "<h2>Definitions</h2><p>See <code>docs/privacy.md</code> and the module docstrings of "
        "<code>privacy.audit</code>, <code>privacy.distances</code>, <code>privacy.mia</code> and "
        "<code>privacy.canary</code>; every number here is in <code>audit.json</code>.</p></body></html>"
    )
    return "\n".join(parts)


def write_report(out_dir: str | Path, audit: dict, figures: dict[str, bytes]) -> Path:
    path = Path(out_dir) / "report.html"
    atomic_write_text(path, render_html(audit, figures))
    return path
