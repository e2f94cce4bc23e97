"""Privacy accounting and audits of a federated run (see docs/privacy.md).

ledger → accounting (ε per site, release, planning) · distances → audit (DCR, NNDR, near-copies) ·
mia (denoising-error membership inference) · canary (one-run empirical DP audit) ·
inputs/pipeline/report/plots (`fedecg audit`: audit.json + self-contained report.html).
"""

__fedecg_room__ = "privacy"  # marks this top-level package as fedecg's (fedecg.rooms.check_rooms)
