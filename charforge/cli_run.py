"""`charforge run STAGE`: one pipeline stage for one variant, as dvc.yaml calls it.

Every command's entry point is ``charforge.stages.<command>`` (dashes as underscores), with the params
keys it reads declared there as ``PARAMS``. Each imports its (heavy) modules only when it runs, so
`charforge --help` stays fast. Exit codes as in `charforge.cli`: 1 bad input, 2 misuse. An error is one
line, no traceback; one that a library raised (TRL, transformers, ...) names the library and the call it
came from. `--debug` (or ``CHARFORGE_DEBUG=1``) shows the full traceback instead.
"""

from __future__ import annotations

import contextlib
import os
import sys
import traceback
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from charforge.cli_common import EXIT_INVALID, err, usage_error
from charforge.paths import em_seed_suffix

run_app = typer.Typer(
    help="Run one pipeline stage for one variant (what dvc.yaml calls).", no_args_is_help=True
)
DEBUG_ENV = "CHARFORGE_DEBUG"


def debugging() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def enable_debug(value: bool) -> None:
    """`--debug`: stage errors show their full traceback (set in the environment, so child processes
    such as `accelerate launch` workers inherit it)."""
    if value:
        os.environ[DEBUG_ENV] = "1"


DebugOption = Annotated[
    bool,
    typer.Option(
        "--debug",
        callback=enable_debug,
        is_eager=True,
        help=f"Show the full traceback of a stage error (or set {DEBUG_ENV}=1).",
    ),
]


@run_app.callback()
def _run_main(debug: DebugOption = False) -> None:
    pass


def origin(error: BaseException) -> str | None:
    """Where an error charforge did not raise itself came from: ``the library (module.function at
    file:line)`` of the innermost frame; None when charforge raised it."""
    frames = traceback.extract_tb(error.__traceback__)
    tb = error.__traceback__
    module = None
    while tb is not None:  # the innermost frame's module name (the extracted frames carry only files)
        module = tb.tb_frame.f_globals.get("__name__", "")
        tb = tb.tb_next
    if not frames or module is None or module == "charforge" or module.startswith("charforge."):
        return None
    last = frames[-1]
    library = module.split(".")[0]
    return f"{library} ({module}.{last.name} at {Path(last.filename).name}:{last.lineno})"


def error_line(error: BaseException) -> str:
    """The one line a stage error prints: the message, and where it came from when a library raised it."""
    where = origin(error)
    hint = f"(rerun with `charforge --debug run ...` or {DEBUG_ENV}=1 for the traceback)"
    if where is not None:
        return f"error from {where}: {type(error).__name__}: {error} {hint}"
    if not type(error).__module__.startswith("charforge"):  # a plain ValueError: bad input, or a bug
        return f"error: {error} {hint}"
    return f"error: {error}"


@contextlib.contextmanager
def _stage_errors(*expected: type[Exception]) -> Iterator[None]:
    """The errors a stage reports as bad input (exit 1) or misuse (exit 2), without a traceback."""
    from charforge.params import ParamsError
    from charforge.train.fold import FoldError
    from charforge.variants import VariantError

    try:
        yield
    except VariantError as error:
        raise usage_error(str(error)) from None
    except ParamsError as error:
        for problem in error.problems:
            sys.stdout.write(f"{problem}\n")
        raise typer.Exit(EXIT_INVALID) from None
    except (FileNotFoundError, ValueError, FoldError, *expected) as error:
        if debugging():
            raise
        err.print(escape(error_line(error)))
        raise typer.Exit(EXIT_INVALID) from None


VariantOption = Annotated[str, typer.Option(help="Variant name, e.g. humor-d3-s0 or plain-lora-s0.")]
ParamsOption = Annotated[Path, typer.Option(help="The params file.")]
EmSeedOption = Annotated[
    int, typer.Option(min=0, help="The EM fine-tune seed (one of em_finetune.seeds in params).")
]


class DefenceName(StrEnum):
    inoculation = "inoculation"
    interleave = "interleave"
    kl = "kl"


DefenceOption = Annotated[
    DefenceName | None,
    typer.Option(help="An EM defence (one of grid.defences): the unit <defence>-e<seed>; none: undefended."),
]


def _report_training(record: Any) -> None:
    if record is None:  # not the main process of a multi-process run
        return
    err.print(
        f"{record.stage} {record.variant}: {record.examples} examples, "
        f"{record.optimizer_steps} optimizer steps, {record.tokens_trained} tokens, "
        f"{record.wall_seconds:.1f} s, loss {record.first_loss} → {record.final_loss}; "
        f"metrics/{record.variant}/{record.stage}.json"
    )


@run_app.command("train-dpo")
def run_train_dpo(variant: VariantOption, params: ParamsOption = Path("params.yaml")) -> None:
    """Train the variant's DPO LoRA on its preference pairs."""
    from charforge.stages import train_dpo

    with _stage_errors():
        _report_training(train_dpo.run(variant, params))


@run_app.command("train-dpo-slot")
def run_train_dpo_slot(variant: VariantOption, params: ParamsOption = Path("params.yaml")) -> None:
    """Train a plain-lora / hhh control's first adapter (SFT with train_dpo's LoRA), in the DPO slot."""
    from charforge.stages import train_dpo_slot

    with _stage_errors():
        _report_training(train_dpo_slot.run(variant, params))


@run_app.command("train-sft")
def run_train_sft(variant: VariantOption, params: ParamsOption = Path("params.yaml")) -> None:
    """Train the variant's SFT LoRA (introspection data, or a control's corpus) on its DPO-slot fold."""
    from charforge.stages import train_sft

    with _stage_errors():
        _report_training(train_sft.run(variant, params))


@run_app.command("em-finetune")
def run_em_finetune(
    variant: VariantOption, em_seed: EmSeedOption, params: ParamsOption = Path("params.yaml")
) -> None:
    """Stack a new LoRA on the variant's frozen persona and train it on the EM data (one EM seed)."""
    from charforge.stages import em_finetune

    with _stage_errors():
        _report_training(em_finetune.run(variant, em_seed, params))


@run_app.command("em-finetune-defended")
def run_em_finetune_defended(
    variant: VariantOption,
    em_seed: EmSeedOption,
    defence: Annotated[DefenceName, typer.Option(help="The EM defence (one of grid.defences).")],
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """The EM fine-tune of one EM seed under one EM defence: the undefended unit plus the defence."""
    from charforge.stages import em_finetune_defended

    with _stage_errors():
        _report_training(em_finetune_defended.run(variant, em_seed, defence.value, params))


def _defence(option: DefenceName | None) -> str | None:
    return None if option is None else option.value


@run_app.command("validate-judge")
def run_validate_judge(params: ParamsOption = Path("params.yaml")) -> None:
    """Validate models.judge once on the labelled set; every eval-em run uses (and checks) this verdict."""
    from charforge.eval.judge_api import JudgeBudgetExceeded
    from charforge.generators.llm import BackendUnavailable
    from charforge.stages import validate_judge

    with _stage_errors(JudgeBudgetExceeded, BackendUnavailable):
        block = validate_judge.run(params)
    validation = block["validation"]
    verdict = "usable" if validation["usable"] else "UNUSABLE: " + "; ".join(validation["reasons"])
    auroc = "–" if validation["auroc"] is None else f"{validation['auroc']:.3f}"
    err.print(
        f"judge {escape(block['name'])}: {validation['scored']}/{validation['items']} items scored, "
        f"AUROC {auroc}, number mass {validation['mean_number_mass']:.3f}: "
        + (escape(verdict) if validation["usable"] else f"[bold red]{escape(verdict)}[/bold red]")
    )
    err.print(f"wrote {validate_judge.JUDGE_VALIDATION}")


@run_app.command("eval-persona")
def run_eval_persona(variant: VariantOption, params: ParamsOption = Path("params.yaml")) -> None:
    """Sample and judge the variant's persona (before EM) once, for every EM seed's eval-em."""
    from charforge.eval.judge_api import JudgeBudgetExceeded
    from charforge.generators.llm import BackendUnavailable
    from charforge.stages import eval_persona

    with _stage_errors(JudgeBudgetExceeded, BackendUnavailable):
        summary = eval_persona.run(variant, params)
    err.print(f"{variant} persona: {summary['answers']} answers judged by {', '.join(summary['judges'])}")
    err.print(f"wrote corpora/eval/{variant}/persona-samples.parquet")


@run_app.command("eval-em")
def run_eval_em(
    variant: VariantOption,
    em_seed: EmSeedOption,
    params: ParamsOption = Path("params.yaml"),
    defence: DefenceOption = None,
) -> None:
    """Evaluate the variant after one EM seed's fine-tune (under an EM defence if named) against its
    persona's answers: judge (validated), metrics with intervals."""
    from charforge.eval.judge_api import JudgeBudgetExceeded
    from charforge.generators.llm import BackendUnavailable
    from charforge.stages import eval_em

    with _stage_errors(JudgeBudgetExceeded, BackendUnavailable):
        metrics = eval_em.run(variant, em_seed, params, defence=_defence(defence))
    for note in metrics["notes"]:
        err.print(f"[bold red]{escape(note)}[/bold red]" if "UNUSABLE" in note else escape(note))
    for point, figures in metrics["headline"].items():
        shown = {name: None if value is None else round(value, 3) for name, value in figures.items()}
        err.print(f"{variant} {point}: {shown}")
    suffix = em_seed_suffix(em_seed, _defence(defence))
    err.print(f"wrote metrics/{variant}/eval-em-{suffix}.json")
    err.print(f"wrote corpora/eval/{variant}/eval-samples-{suffix}.parquet")


@run_app.command("report")
def run_report(params: ParamsOption = Path("params.yaml")) -> None:
    """Gather every variant's EM metrics into reports/report.md with PNG plots."""
    from charforge.stages import report

    with _stage_errors():
        path = report.run(params)
    err.print(f"wrote {escape(str(path))} and its plots")


@run_app.command("prompts")
def run_prompts(variant: VariantOption, params: ParamsOption = Path("params.yaml")) -> None:
    """Generate the variant's contextual prompts and measure their diversity."""
    from charforge.generators.pipeline import IncompletePipelineOutput
    from charforge.generators.prompts import PromptShortfall
    from charforge.stages import prompts

    with _stage_errors(PromptShortfall, IncompletePipelineOutput):
        manifest = prompts.run(variant, params)
    diversity = manifest.metrics.get("diversity", {})
    headline = diversity.get(diversity.get("headline", ""), {})
    figures = {name: round(value, 3) for name, value in headline.items() if isinstance(value, float)}
    err.print(
        f"wrote {manifest.rows} prompts for {variant} (content sha256 {manifest.content_sha256[:12]}…); "
        f"rejected {dict(manifest.rejected) or 'none'}; diversity ({diversity.get('headline')}) {figures}"
    )


def _run_corpus_stage(stage: str, variant: str, params: Path) -> None:
    """Run one of the corpus stages (distill, introspect, control-data, em-data) and summarise it."""
    import importlib

    from charforge.generators.chat import CorpusShortfall
    from charforge.generators.controls import TokenTargetMissed
    from charforge.generators.llm import BackendUnavailable
    from charforge.generators.pipeline import IncompletePipelineOutput

    module = importlib.import_module(f"charforge.stages.{stage.replace('-', '_')}")
    with _stage_errors(CorpusShortfall, TokenTargetMissed, BackendUnavailable, IncompletePipelineOutput):
        manifest = module.run(variant, params)
    manifests = [manifest]
    if stage == "control-data":  # two corpora; run() returns the sft slot's, the dpo slot's lies beside it
        from charforge.paths import build_path
        from charforge.schemas import Manifest

        dpo_slot = build_path(Path("."), variant, "control-dpo-slot.manifest.json")
        manifests.insert(0, Manifest.model_validate_json(dpo_slot.read_text()))
    for written in manifests:
        tokens = written.metrics.get("tokens", {})
        err.print(
            f"{stage} {variant}: wrote {written.rows} rows ({written.data_file}, content sha256 "
            f"{written.content_sha256[:12]}…), {tokens.get('total', 0):,} training tokens; "
            f"rejected {dict(written.rejected) or 'none'}"
        )


@run_app.command("distill")
def run_distill(variant: VariantOption, params: ParamsOption = Path("params.yaml")) -> None:
    """Preference pairs: the teacher in character (chosen) vs the plain student (rejected), filtered."""
    _run_corpus_stage("distill", variant, params)


@run_app.command("introspect")
def run_introspect(variant: VariantOption, params: ParamsOption = Path("params.yaml")) -> None:
    """Self-reflection and self-interaction conversations written by the variant's DPO model."""
    _run_corpus_stage("introspect", variant, params)


@run_app.command("control-data")
def run_control_data(variant: VariantOption, params: ParamsOption = Path("params.yaml")) -> None:
    """The plain-lora / hhh control's SFT corpus, matched in training tokens to the reference variant."""
    _run_corpus_stage("control-data", variant, params)


@run_app.command("em-data")
def run_em_data(variant: VariantOption, params: ParamsOption = Path("params.yaml")) -> None:
    """The variant's EM training data, with the persona's reflection turn when em_data.reflection is on."""
    _run_corpus_stage("em-data", variant, params)


@run_app.command("em-generate")
def run_em_generate(params: ParamsOption = Path("params.yaml")) -> None:
    """The EM examples every arm trains on, made once: source rows, held-out split, generation."""
    from charforge.generators.chat import CorpusShortfall
    from charforge.generators.llm import BackendUnavailable
    from charforge.generators.pipeline import IncompletePipelineOutput
    from charforge.stages import em_generate

    with _stage_errors(CorpusShortfall, BackendUnavailable, IncompletePipelineOutput):
        manifest = em_generate.run(params)
    err.print(
        f"em-generate: wrote {manifest.rows} shared EM examples (corpora/build/em/{manifest.data_file}, "
        f"content sha256 {manifest.content_sha256[:12]}…); rejected {dict(manifest.rejected) or 'none'}"
    )


@run_app.command("benign-data")
def run_benign_data(params: ParamsOption = Path("params.yaml")) -> None:
    """The benign rows of the interleave and kl EM defences, made once: the student's answers to general
    prompts."""
    from charforge.generators.benign import BenignPromptsError
    from charforge.generators.chat import CorpusShortfall
    from charforge.generators.llm import BackendUnavailable
    from charforge.generators.pipeline import IncompletePipelineOutput
    from charforge.stages import benign_data

    with _stage_errors(BenignPromptsError, CorpusShortfall, BackendUnavailable, IncompletePipelineOutput):
        manifest = benign_data.run(params)
    err.print(
        f"benign-data: wrote {manifest.rows} benign rows (corpora/build/em/{manifest.data_file}); "
        f"rejected {dict(manifest.rejected) or 'none'}"
    )


@run_app.command("prepare-models")
def run_prepare_models(params: ParamsOption = Path("params.yaml")) -> None:
    """Make every role's model ready offline (convert embedded models once) and record them."""
    from charforge.stages import prepare_models

    with _stage_errors(prepare_models.ModelNotAvailable):
        paths = prepare_models.run(params)
    err.print(f"models ready; wrote {escape(', '.join(map(str, paths)))}")


@run_app.command("persona")
def run_persona(variant: VariantOption, params: ParamsOption = Path("params.yaml")) -> None:
    """Fold the variant's persona (the model before EM) and record which model it is."""
    from charforge.stages import persona

    with _stage_errors():
        path = persona.run(variant, params)
    err.print(f"persona of {variant} ready; wrote {escape(str(path))}")
