"""Two checkouts of the same project train the same adapters, byte for byte.

`dvc repro` in a second checkout gave a dvc.lock differing in 178 lines although every corpus was
byte-identical: each adapter recorded the absolute path it was trained in (its training record, PEFT's
README.md and adapter_config.json), and fold keys hashed the student's resolved folder and its files'
modification times; and PEFT wrote ``target_modules`` in the order of a set, which changes with each
process's hash seed. So every DVC output here must name models by what they are, never by where a
checkout or its cache lies, and come out the same from any process; timings go to the metrics only.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from support.training_project import VARIANT, Project, conversation_row

from charforge.corpus import write_corpus
from charforge.generators.embedded import SOURCE_RECORD, lookup
from charforge.schemas import ParentArtifact
from charforge.train.fold import FOLD_RECORD, Adapter, fold_key, model_identity

EMBEDDED = "embedded:smollm2-135m-instruct"
CONTROL = "plain-lora-s0"  # dpo-slot on the student, sft on that fold, then EM on its persona
TESTS = Path(__file__).resolve().parents[1]  # for support.training_project


def converted(cache: Path, tiny_model: Path) -> Path:
    """The tiny model as `prepare-models` leaves an embedded model: converted into this checkout's cache,
    in a folder named after the GGUF file's content hash, with its source record."""
    spec = lookup(EMBEDDED)
    target = cache / "embedded" / f"{spec.name}-0123456789abcdef"
    if not target.is_dir():
        shutil.copytree(tiny_model, target, copy_function=shutil.copyfile)
        source = {"package": spec.package, "gguf": spec.gguf_file, "licence": spec.licence}
        (target / SOURCE_RECORD).write_text(json.dumps(source, indent=2) + "\n")
    return target


def checkout(root: Path) -> Project:
    """A fresh checkout of one project: the same params (the student is the embedded model) and corpora."""
    root.mkdir()
    project = Project(root, Path(EMBEDDED))
    project.write_control_corpora(CONTROL, rows=4, turns=2)
    project.write_conversations(CONTROL, "em-train", rows=4, turns=1)
    project.write_conversations(CONTROL, "em-heldout", rows=2, turns=1)
    return project


def train(root: Path, tiny_model: Path, hash_seed: str) -> None:
    """The variant's training stages and its persona record, run as `dvc repro` runs them: in a process
    of its own (here with its own hash seed: PEFT once wrote a set's order into adapter_config.json),
    from the project's folder, with the project's own cache (./cache)."""
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH")]))
    env.pop("CHARFORGE_CACHE", None)
    command = [sys.executable, __file__, str(tiny_model)]
    result = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]


def _train_here(tiny_model: Path) -> None:
    """``train``'s process: the student converted into ./cache on first use, as `prepare-models` does."""
    import charforge.generators.llm as llm
    from charforge.stages import em_finetune, persona, train_dpo_slot, train_sft

    llm.converted_dir = lambda model, cache: converted(cache, tiny_model)  # type: ignore[assignment]
    train_dpo_slot.run(CONTROL)  # on the student, converted into ./cache
    train_sft.run(CONTROL)  # on the student with the dpo-slot adapter folded in, in ./cache
    em_finetune.run(CONTROL, 0)  # on the persona: both adapters folded in
    persona.run(CONTROL)


def dvc_outputs(root: Path) -> dict[str, bytes]:
    """Every file of the DVC outputs written here: adapters, persona record, manifests."""
    files = sorted((root / "models").rglob("*")) + sorted((root / "corpora").rglob("*.manifest.json"))
    return {path.relative_to(root).as_posix(): path.read_bytes() for path in files if path.is_file()}


def test_two_checkouts_train_byte_identical_adapters(tiny_model: Path, tmp_path: Path) -> None:
    outputs = []
    for name, hash_seed in (("checkout-a", "1"), ("checkout-b", "2")):
        project = checkout(tmp_path / name)
        train(project.root, tiny_model, hash_seed)
        outputs.append(dvc_outputs(project.root))
    first, second = outputs

    adapter_files = {
        "README.md",
        "adapter_config.json",
        "adapter_model.safetensors",
        "charforge-training.json",
    }
    for adapter in ("dpo-slot", "sft", "em-e0"):
        assert {name.rsplit("/", 1)[1] for name in first if f"/{adapter}/" in name} == adapter_files
    # three adapters, four corpus manifests (control-dpo-slot, control, em-train, em-heldout) and the
    # persona record
    assert f"models/{CONTROL}/persona.json" in first and len(first) == 3 * len(adapter_files) + 5
    assert sorted(first) == sorted(second)
    differing = [name for name in first if first[name] != second[name]]
    assert not differing, "\n\n".join(f"{name}:\n{_diff(first[name], second[name])}" for name in differing)
    # The same is not enough: nothing may name where a checkout or its cache lies (all in tmp_path).
    for name, data in first.items():
        for place in {str(tmp_path), str(tmp_path.resolve())}:
            assert place.encode() not in data, f"{name} names {place}"
    slot = json.loads(first[f"models/{CONTROL}/dpo-slot/charforge-training.json"])
    assert slot["base_model"] == EMBEDDED  # as params name it, with what it is
    assert slot["base_model_identity"] == f"{EMBEDDED}-0123456789abcdef"
    assert slot["parents"][0]["path"] == f"corpora/build/{CONTROL}/control-dpo-slot.parquet"
    assert f"base_model: {EMBEDDED}" in first[f"models/{CONTROL}/dpo-slot/README.md"].decode()
    sft = json.loads(first[f"models/{CONTROL}/sft/charforge-training.json"])
    assert sft["base_model"] == sft["base_model_identity"] and sft["base_model"].startswith("fold:")
    assert sft["parents"][0]["path"] == f"corpora/build/{CONTROL}/control.parquet"
    em = json.loads(first[f"models/{CONTROL}/em-e0/charforge-training.json"])
    persona = json.loads(first[f"models/{CONTROL}/persona.json"])
    assert em["base_model"] == em["base_model_identity"] == f"fold:{persona['fold_key']}"


def _diff(left: bytes, right: bytes) -> str:
    import difflib

    try:
        lines = difflib.unified_diff(left.decode().splitlines(), right.decode().splitlines(), lineterm="")
    except UnicodeDecodeError:
        return f"binary: {len(left)} vs {len(right)} bytes"
    return "\n".join(lines)


def test_a_student_folder_is_identified_by_content_not_place(tiny_model: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    copies = [tmp_path / "a" / "student", tmp_path / "b" / "student"]
    for copy in copies:
        shutil.copytree(tiny_model, copy, copy_function=shutil.copyfile)
    identity = model_identity(str(copies[0]), cache)
    assert identity == model_identity(str(copies[1]), cache) == model_identity(str(tiny_model), cache)
    assert str(tmp_path) not in identity

    # Retrained in place: same size, and even the old modification time restored. Never a stale fold.
    weights = copies[1] / "model.safetensors"
    stat = weights.stat()
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert weights.stat().st_size == stat.st_size
    assert model_identity(str(copies[1]), cache) != identity
    assert model_identity(str(copies[0]), cache) == identity


def test_a_fold_key_follows_the_adapter_files_not_their_folder(tiny_model: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    adapters = []
    for name in ("a", "b"):
        adapter = tmp_path / name / "models" / VARIANT / "dpo"
        adapter.mkdir(parents=True)
        (adapter / "adapter_config.json").write_text('{"r": 4}\n')
        (adapter / "adapter_model.safetensors").write_bytes(b"weights")
        adapters.append(Adapter(adapter, 0.5))
    keys = [fold_key(str(tiny_model), [adapter], "auto", cache) for adapter in adapters]
    assert keys[0] == keys[1]
    (adapters[1].path / "adapter_model.safetensors").write_bytes(b"retrained")
    assert fold_key(str(tiny_model), [adapters[1]], "auto", cache) != keys[0]


def test_a_manifest_names_parents_and_folds_the_same_in_every_checkout(tmp_path: Path) -> None:
    manifests = []
    for name in ("checkout-a", "checkout-b"):
        root = tmp_path / name
        fold = root / "cache" / "folded" / "0123"  # what model_for hands a stage: a folder in the cache
        fold.mkdir(parents=True)
        (fold / FOLD_RECORD).write_text(json.dumps({"key": "0123abcd"}))
        source = root / "corpora" / "introspection.yaml"
        source.parent.mkdir(parents=True, exist_ok=True)
        source.write_text("reflection: []\n")
        path = root / "corpora" / "build" / CONTROL / "introspection.parquet"
        write_corpus(
            [conversation_row(0, CONTROL)],
            path,
            "conversations",
            params={"models.introspection": {"model": str(fold)}},
            metrics={"rendered_prompts": {"reflection": {"model": str(fold)}}},
            parents=[ParentArtifact.for_file(source, "introspection", root)],
            root=root,
        )
        manifests.append(path.with_name("introspection.manifest.json").read_text())
    assert manifests[0] == manifests[1]
    manifest = json.loads(manifests[0])
    assert manifest["parents"][0]["path"] == "corpora/introspection.yaml"
    assert manifest["params"]["models.introspection"]["model"] == "fold:0123abcd"
    assert manifest["metrics"]["rendered_prompts"]["reflection"]["model"] == "fold:0123abcd"


if __name__ == "__main__":  # one checkout's stages, in a process of its own: see ``train``
    _train_here(Path(sys.argv[1]))
