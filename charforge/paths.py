"""Where the project keeps things, relative to its root: the one home of every project path.

Stages join these to their ``root`` (the project folder, ``.`` when DVC runs them), so the same
module works in a `dvc exp` workspace, a test project or a user's checkout.
"""

from __future__ import annotations

from pathlib import Path

PARAMS = Path("params.yaml")

# sources, in git
CONSTITUTIONS = Path("corpora/constitutions")
SITUATIONS = Path("corpora/situations.yaml")
INTROSPECTION_PROMPTS = Path("corpora/introspection.yaml")
EM_SEEDS = Path("corpora/em")
# corpora/in-domain/<em_data.domain>.yaml: the in-domain questions of eval.in_domain_questions: auto
IN_DOMAIN_QUESTIONS = Path("corpora/in-domain")  # not in corpora/em: em-generate depends on it whole

# outputs (DVC)
BUILD = Path("corpora/build")  # corpora/build/<variant>/<corpus>.parquet with its manifest
# Outside corpora/build/<variant>/ (the training corpora, which eval-em reads for contamination), so
# eval-em's DVC dependency on that folder never overlaps its own output.
EVAL_SAMPLES = Path("corpora/eval")
MODELS = Path("models")  # models/<variant>/{dpo or dpo-slot,sft,em}/ adapters and persona.json
ROLES = MODELS / "roles"  # models/roles/<role>.json: one record per model role
METRICS = Path("metrics")
JUDGE_VALIDATION = METRICS / "judge-validation.json"
REPORTS = Path("reports")
# corpora/build/<variant>/<EM_HELD_OUT>: EM examples kept out of training (em-data writes, em-finetune
# scores them); no arm trains on them, so they are no training corpus
EM_HELD_OUT = "em-heldout.parquet"
# corpora/build/<EM_SHARED>/ and metrics/<EM_SHARED>/: what em-generate builds once for every arm, the EM
# training examples before reflections (<EM_SOURCE>) and the held-out ones (<EM_HELD_OUT>); each arm's
# em-data copies them into corpora/build/<variant>/. No variant is named so (variants.parse_variant).
EM_SHARED = "em"
EM_SOURCE = "em-source.parquet"
# corpora/build/<EM_SHARED>/<BENIGN>: the student's answers to general prompts, which the interleave and kl
# EM defences train on (benign-data writes them once for every arm)
BENIGN = "benign.parquet"
# corpora/eval/<variant>/<PERSONA_SAMPLES>: the persona's evaluated answers (eval-persona writes them once per
# variant; every EM seed's eval-em reads them as its "before EM" point)
PERSONA_SAMPLES = "persona-samples.parquet"
# models/<variant>/<adapter>/<TRAINING_RECORD>: what made an adapter (its base, params, parents, seed)
TRAINING_RECORD = "charforge-training.json"


def em_seed_suffix(em_seed: int, defence: str | None = None) -> str:
    """``e<seed>``: names one EM fine-tune seed's adapter (``models/<variant>/em-e0``), its training and
    evaluation metrics (``em-finetune-e0.json``, ``eval-em-e0.json``) and its evaluated answers. With an
    EM defence, ``<defence>-e<seed>`` (``em-inoculation-e0``, ``eval-em-inoculation-e0.json``): a unit of
    its own, which the report never pools with the undefended ``eval-em-e*``."""
    if em_seed < 0:
        raise ValueError(f"an EM fine-tune seed is a whole number >= 0, not {em_seed}")
    return f"e{em_seed}" if defence is None else f"{defence}-e{em_seed}"


def constitution_path(root: Path, name: str) -> Path:
    return root / CONSTITUTIONS / f"{name}.yaml"


def build_path(root: Path, variant: str, name: str) -> Path:
    """``corpora/build/<variant>/<name>`` under ``root``."""
    return root / BUILD / variant / name


def metrics_path(root: Path, variant: str, stage: str) -> Path:
    """``metrics/<variant>/<stage>.json`` under ``root``."""
    return root / METRICS / variant / f"{stage}.json"


def role_record(root: Path, role: str) -> Path:
    """``models/roles/<role>.json`` under ``root``."""
    return root / ROLES / f"{role}.json"
