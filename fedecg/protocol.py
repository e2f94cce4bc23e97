"""Message keys and the egress allow-list shared by client/ and server/ (one place, as in Flower's template).

What may leave a site: the model's parameters (``arrays``), aggregate scalar metrics whose names are listed
in ``ALLOWED_METRICS``, and the site's public name (``site-info``). Never records, never per-record values.
"""

ARRAYS = "arrays"  # ArrayRecord: the plain denoiser's state_dict (no Opacus prefix, no schedule buffers)
CONFIG = "config"  # ConfigRecord sent by the server
METRICS = "metrics"  # MetricRecord replied by a site
SITE_INFO = "site-info"  # ConfigRecord replied by a site: {"site": str, "status": str, "message": str}
LEDGER_DIGEST = "ledger-digest"  # in SITE_INFO (DP train replies): sha256 hex of the site's ledger entries for the run

RUN_CONFIG_JSON = "fedecg-config"  # in CONFIG: the ScenarioConfig as JSON
RUN_NAME = "run-name"  # in CONFIG: stable run identity (survives --resume), keys a site's privacy ledger
MANIFEST_PATH = "manifest-path"  # in CONFIG, simulation only: where partition-id → ecg_ids is read
SIM_STATE_ROOT = "sim-state-root"  # in CONFIG, simulation only: where simulated nodes keep their ledger files
SERVER_ROUND = "server-round"  # injected by Flower strategies
PROXIMAL_MU = "proximal-mu"  # injected by FedProx
EVALUATE_FIRST = "evaluate-first"  # in CONFIG of a train message (strategy.evaluate with-train): validate, then train

NUM_EXAMPLES = "num-examples"  # Flower's weighting key

# Aggregate metrics a site may report. Anything else in an outgoing MetricRecord is blocked by the egress guard.
ALLOWED_METRICS = frozenset({
    NUM_EXAMPLES,
    "train-loss", "eps-loss", "mel-loss", "val-loss", "val-eps-loss", "val-mel-loss",
    "val-examples",  # a train reply's validation count (EVALUATE_FIRST); an evaluate reply says num-examples
    "steps", "train-seconds",
    "epsilon", "delta", "dp-enabled", "dp-steps", "dp-sample-rate", "dp-noise-multiplier",
    "dp-max-grad-norm", "dp-rounds", "refused", "physical-batches", "dp-patient-level", "dp-units",
    "dp-run-min-noise-multiplier", "dp-run-max-sample-rate",  # bounds of the run's σ / q (server's gap entries)
    "trained-parameters",  # how many parameters the site trained (train.trainable)
    "records-invalid",  # records the site skipped because they failed validation (their ecg_ids stay local)
})

# Error replies a site may send: client.egress turns every exception in the ClientApp into one of these, as
# "fedecg/<class>: <message>" and nothing else; the details (exception text, paths, record contents) stay in
# the site's local log. The server keeps an error reason only when it is one of these (server.validation).
ERROR_PREFIX = "fedecg/"
ERROR_MESSAGES = {
    "data": "the site's data could not be loaded or failed validation; details are in the site's local log",
    "config": "the site rejected the server's run configuration; details are in the site's local log",
    "privacy": "the site's privacy accounting failed; details are in the site's local log",
    "training": "local training failed; details are in the site's local log",
    "resources": "the site ran out of memory or another resource; details are in the site's local log",
    "egress": "the site's egress guard blocked the reply; details are in the site's local log",
    "internal": "the site failed with an internal error; details are in the site's local log",
}


def error_reason(error_class: str) -> str:
    """The reason string of a site's error reply for ``error_class`` (a key of ERROR_MESSAGES)."""
    return f"{ERROR_PREFIX}{error_class}: {ERROR_MESSAGES[error_class]}"


def parse_error_reason(reason: object) -> tuple[str, str] | None:
    """(class, message) when ``reason`` is exactly an allow-listed site error, else None."""
    if not isinstance(reason, str) or not reason.startswith(ERROR_PREFIX):
        return None
    cls, sep, message = reason[len(ERROR_PREFIX):].partition(": ")
    return (cls, message) if sep and ERROR_MESSAGES.get(cls) == message else None

# Node-config keys
NODE_DATA_DIR = "data-dir"  # deployment: this site's PTB-XL-layout folder
NODE_SITE_NAME = "site-name"  # deployment: public name of the site (default: the folder name)
NODE_STATE_DIR = "state-dir"  # deployment: where the site keeps its privacy ledger (default: <data-dir>/.fedecg)
NODE_PARTITION_ID = "partition-id"  # simulation (set by Flower)
NODE_PRIVACY_POLICY = "privacy-policy"  # the site's privacy policy file (privacy.policy; inline keys there too)

STATUS_OK = "ok"
STATUS_REFUSED = "refused"  # privacy budget spent, or too few valid records (DATA_REFUSAL)
DATA_REFUSAL = "too few valid training records"  # how a site that cannot train on its data refuses
