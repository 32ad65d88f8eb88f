"""The `charforge` command line: validate, inspect, schema, import-constitution, export-constitution,
models, profile, publish; the `charforge run STAGE` commands live in `charforge.cli_run`.

Exit codes: 0 success (every file valid), 1 invalid input, 2 usage error. No input, however broken,
produces a traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import TypeAdapter, ValidationError
from rich.markup import escape
from rich.table import Table

from charforge import __version__
from charforge.cli_common import EXIT_INVALID, EXIT_USAGE, err, out, usage_error
from charforge.cli_run import DebugOption, run_app
from charforge.offline import apply_offline_env

app = typer.Typer(
    name="charforge",
    help="Dataset factory and corpus tool for constitutional character training and EM ablations.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(run_app, name="run")


def _kinds() -> dict[str, Any]:
    from charforge.schemas import KINDS

    return KINDS


def _version(value: bool) -> None:
    if value:
        out.print(f"charforge {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    debug: DebugOption = False,
) -> None:
    apply_offline_env()


@app.command()
def validate(
    paths: Annotated[
        list[Path], typer.Argument(exists=True, help="Files, or folders to search for corpus files.")
    ],
    kind: Annotated[str | None, typer.Option(help="Kind of every file (else inferred per file).")] = None,
    max_errors: Annotated[int, typer.Option(min=1, help="Errors listed per file; all are counted.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON report instead.")] = False,
    report_path: Annotated[
        Path | None, typer.Option("--report", help="Also write the JSON report to this file (atomically).")
    ] = None,
) -> None:
    """Check files against the charforge schemas and report every error as FILE:LINE: field: message."""
    from charforge.io import printable
    from charforge.validate import UsageError, expand_paths, validate_file

    if kind is not None and kind not in _kinds():
        raise usage_error(f"unknown kind {kind!r}; choose one of {', '.join(_kinds())}")
    skipped: list[tuple[Path, str]] = []
    files = list(expand_paths(paths, text_as_json=kind is not None, skipped=skipped))
    for path, reason in skipped:  # said, so a folder's odd files are never passed over in silence
        err.print(f"skipped {_safe(path)}: {escape(reason)}")
    if not files:
        raise usage_error("no corpus files found (.yaml, .yml, .json, .jsonl, .parquet)")
    reports, usage_problems = [], []
    for path in files:
        try:
            report = validate_file(path, kind, max_listed=max_errors)
        except UsageError as error:
            usage_problems.append(str(error))
            continue
        reports.append(report)
        if as_json:
            continue
        for problem in report.problems:
            sys.stdout.write(f"{problem}\n")
        hidden = report.error_count - len(report.problems)
        if hidden:
            sys.stdout.write(
                printable(f"{path}: … {hidden} more error(s) not listed ({report.error_count} in total)")
                + "\n"
            )
        if report.valid:
            rows = f", {report.rows:,} rows" if report.rows is not None else ""
            origin = ", manifest matches" if report.charforge else ""
            row_format = f", {report.row_format}" if report.row_format else ""  # TRL's name for the rows
            err.print(f"ok {_safe(path)} ({report.kind}{row_format}{rows}{origin})")
            for note in report.notes:
                err.print(f"note {_safe(path)}: {_safe(note)}")
    invalid = [report for report in reports if not report.valid]
    payload = {
        "files": [report.as_dict() for report in reports],
        "usage_errors": usage_problems,
        "valid": not invalid and not usage_problems,
    }
    if as_json:
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")
    if report_path is not None:
        from charforge.io import atomic_write_text

        atomic_write_text(report_path, json.dumps(payload, indent=2) + "\n")
    for problem in usage_problems:
        err.print(f"error: {_safe(problem)}")
    errors = sum(report.error_count for report in invalid)
    err.print(
        f"checked {len(reports)} file(s): {len(reports) - len(invalid)} valid, {len(invalid)} invalid"
        + (f" ({errors:,} error(s))" if errors else "")
    )
    if usage_problems:
        raise typer.Exit(EXIT_USAGE)
    if invalid:
        raise typer.Exit(EXIT_INVALID)


@app.command()
def inspect(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="A corpus file.")],
    kind: Annotated[str | None, typer.Option(help="Kind of the file (else inferred).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Write the JSON summary to this file (atomically).")
    ] = None,
) -> None:
    """Summarise a corpus: rows, counts per trait/situation/variant, lengths, duplicates, empties."""
    from charforge.inspect import inspect_file
    from charforge.io import SourceError
    from charforge.validate import Problem, UsageError, is_rust_panic

    def fail(line: int | None, field: str, message: str) -> typer.Exit:
        problem = Problem(str(path), str(line) if line else "-", field, message)
        err.print(escape(str(problem)))  # one line, control characters escaped, as `validate` says it
        return typer.Exit(EXIT_INVALID)

    try:
        summary = inspect_file(path, kind)
        if output is not None:
            from charforge.io import atomic_write_text

            atomic_write_text(output, json.dumps(summary, indent=2, default=str) + "\n")
        if as_json:  # json.dumps escapes every control character
            sys.stdout.write(json.dumps(summary, indent=2, default=str) + "\n")
            return
        _render_summary(summary)
    except UsageError as error:
        raise usage_error(str(error)) from None
    except SourceError as error:
        raise fail(error.line, error.field, error.message) from None
    except Exception as error:  # last line of defence: one line, never a traceback
        message = (str(error).strip().splitlines() or [""])[0]
        raise fail(None, "-", f"could not inspect ({type(error).__name__}: {message})") from None
    except BaseException as error:
        if not is_rust_panic(error):
            raise
        raise fail(None, "-", f"could not inspect (a panic in polars or pyarrow: {error})") from None


def _safe(value: Any) -> str:
    """``value`` as text for a rich console: markup escaped, control characters shown as escapes, so
    a key or value from a file can neither forge a line nor reach the terminal raw."""
    from charforge.io import printable

    return escape(printable(str(value)))


def _render_summary(summary: dict[str, Any]) -> None:
    out.print(
        f"[bold]{_safe(summary['file'])}[/bold]  kind={_safe(summary['kind'])}  format={summary['format']}"
        + (f"  row_format={summary['row_format']}" if summary.get("row_format") else "")
    )
    if "traits" in summary:
        out.print(
            f"constitution {_safe(summary.get('name'))} ({_safe(summary.get('constitution_kind'))}): "
            f"{summary['traits']} traits, {summary['questions']} questions, sha256 {summary.get('sha256')}"
        )
        table = Table("trait", "questions")
        for trait in summary["per_trait"]:
            table.add_row(_safe(trait["id"]), str(trait["questions"]))
        out.print(table)
        return
    if "document" in summary:
        # json.dumps escapes what is below U+0020, printable the rest (U+2028, C1 controls, ...)
        for line in json.dumps(summary["document"], indent=2, ensure_ascii=False, default=str).split("\n"):
            out.print(_safe(line))
        return
    out.print(f"rows: {summary['rows']:,}")
    columns = Table("column", "type", "empty", title="columns")
    for name, dtype in summary["columns"].items():
        columns.add_row(_safe(name), _safe(dtype), str(summary["empty"].get(name, 0)))
    out.print(columns)
    for name, counts in summary["counts"].items():
        table = Table(_safe(name), "rows", title=f"rows per {_safe(name)}")
        for value, count in counts.items():
            table.add_row(_safe(value), f"{count:,}")
        out.print(table)
    if summary["lengths"]:
        stats = ("n", "min", "p25", "median", "mean", "p75", "max")
        table = Table("column", "unit", *stats, title="lengths")
        for name, dist in summary["lengths"].items():
            table.add_row(_safe(name), dist["unit"], *(str(dist.get(stat, "")) for stat in stats))
        out.print(table)
    out.print(f"exact duplicate rows: {summary['exact_duplicate_rows']:,}")
    if "pairs" in summary:
        pairs = summary["pairs"]
        ratio = pairs["chosen_rejected_length_ratio"]
        out.print(
            f"identical chosen/rejected: {pairs['identical_chosen_rejected']:,}; chosen/rejected length "
            f"ratio median {ratio.get('median')}, mean {ratio.get('mean')} "
            f"(p25 {ratio.get('p25')}, p75 {ratio.get('p75')})"
        )
    if "manifest" in summary:
        manifest = summary["manifest"]
        out.print(
            f"manifest: {_safe(manifest.get('rows'))} rows, content sha256 "
            f"{_safe(manifest.get('content_sha256'))}, rejected {_safe(manifest.get('rejected'))}"
        )
        diversity = (manifest.get("metrics") or {}).get("diversity")
        if isinstance(diversity, dict):
            _render_diversity(diversity)
        tokens = (manifest.get("metrics") or {}).get("tokens")
        if isinstance(tokens, dict):  # the corpus stages' training tokens (charforge.train.tokens)
            reference = tokens.get("reference") or {}
            matched = f"; reference {reference.get('variant')}: {reference.get('total')}" if reference else ""
            out.print(
                f"training tokens: {_safe(tokens.get('total'))} over {_safe(tokens.get('rows'))} rows "
                f"(tokenizer {_safe(tokens.get('tokenizer'))}){_safe(matched)}"
            )


def _render_diversity(diversity: dict[str, Any]) -> None:
    # charforge.eval.diversity's figures (report version 2), with headers short enough not to be cut at
    # 80 columns; the first two measure redundancy (higher = less diverse), the last two diversity
    metrics = {
        "compression_ratio": "compression ratio",
        "self_bleu": "Self-BLEU",
        "vendi_score": "Vendi",
        "mean_pairwise_cosine_distance": "cosine distance",
    }
    embedding = diversity.get("embedding") or {}
    table = Table(
        "scope",
        *metrics.values(),
        title=f"diversity ({_safe(embedding.get('model'))}, weights sha256 "
        f"{_safe(str(embedding.get('weights_sha256'))[:12])}…)",
    )
    for scope in ("per_trait_mean", "overall"):
        figures = diversity.get(scope) or {}
        table.add_row(scope, *(_figure(figures.get(name)) for name in metrics))
    out.print(table)


def _figure(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else _safe(value)


@app.command()
def schema(
    kind: Annotated[str | None, typer.Argument(help="A kind; omit to list them.")] = None,
    charforge: Annotated[
        bool, typer.Option(help="The stricter row schema of charforge's own corpora (provenance required).")
    ] = False,
) -> None:
    """Print the JSON Schema of a kind of file (for rows kinds: the schema of one row)."""
    kinds = _kinds()
    if kind is None:
        table = Table("kind", "shape", "what")
        for spec in kinds.values():
            table.add_row(spec.name, spec.shape, spec.summary)
        out.print(table)
        return
    if kind not in kinds:
        raise usage_error(f"unknown kind {kind!r}; choose one of {', '.join(kinds)}")
    sys.stdout.write(json.dumps(kinds[kind].json_schema(charforge), indent=2) + "\n")


@app.command("import-constitution")
def import_constitution(
    source: Annotated[
        Path,
        typer.Argument(exists=True, dir_okay=False, help="OCT JSON array, JSONL, or .txt holding JSON."),
    ],
    name: Annotated[str, typer.Option(help="Slug name of the new constitution.")],
    kind: Annotated[str, typer.Option(help="normative, neutral or control.")] = "normative",
    description: Annotated[str | None, typer.Option(help="What the persona is and what it is for.")] = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write here (else stdout).")] = None,
    additional_questions: Annotated[
        str,
        typer.Option(
            help="What a few-shot file's additional_questions (LLM-written prompts, 45 per trait upstream) "
            "become: prompts (default: a prompts corpus, ROOT/corpora/prompts/NAME.parquet, which "
            "prompts.source: imported uses), seeds (merged into the seed questions) or drop (left out)."
        ),
    ] = "prompts",
    root: Annotated[Path, typer.Option(help="The project folder (for corpora/prompts/).")] = Path("."),
) -> None:
    """Convert an Open Character Training constitution (JSON array, JSONL, or JSON in a .txt file, as the
    public repository keeps its hand-written ones) into a charforge constitution YAML."""
    from charforge.importers import (
        AdditionalQuestions,
        constitution_to_yaml,
        import_oct,
        write_imported_prompts,
    )
    from charforge.io import atomic_write_text, iter_jsonl, parse_json, read_text
    from charforge.schemas import OctTrait
    from charforge.schemas.base import Slug
    from charforge.schemas.constitution import ConstitutionKind
    from charforge.validate import UsageError, describe_errors, validate_file

    for value, adapter, option in (
        (name, TypeAdapter(Slug), "--name"),
        (kind, TypeAdapter(ConstitutionKind), "--kind"),
        (additional_questions, TypeAdapter(AdditionalQuestions), "--additional-questions"),
    ):
        try:
            adapter.validate_python(value)
        except ValidationError as error:
            message = next(describe_errors(error))[1]
            raise usage_error(f"{option}: {message}") from None
    try:
        report = validate_file(source, "oct-constitution")
    except UsageError as error:
        raise usage_error(str(error)) from None
    if not report.valid:
        for problem in report.problems:
            sys.stdout.write(f"{problem}\n")
        err.print(
            f"{escape(str(source))}: not a valid Open Character Training constitution "
            f"({report.error_count} error(s))"
        )
        raise typer.Exit(EXIT_INVALID)
    text = read_text(source)
    raw = [value for _, value in iter_jsonl(text)] if report.fmt == "jsonl" else parse_json(text)
    entries = [OctTrait.model_validate(item) for item in raw]
    try:
        result = import_oct(
            entries,
            name=name,
            kind=kind,
            description=description,
            source=source.name,
            additional_questions=additional_questions,  # type: ignore[arg-type]
        )
    except ValidationError as error:
        for loc, message in describe_errors(error):
            if len(loc) >= 2 and loc[0] == "traits" and isinstance(loc[1], int):
                field = "trait" if loc[2:3] == ("statement",) else ".".join(map(str, loc[2:])) or "-"
                sys.stdout.write(f"{source}: entry {loc[1] + 1}: {field}: {message}\n")  # 1-based
            else:
                sys.stdout.write(f"{source}:-: {'.'.join(map(str, loc)) or '-'}: {message}\n")
        err.print(f"{escape(str(source))}: cannot be imported as a charforge constitution")
        raise typer.Exit(EXIT_INVALID) from None
    for note in [*result.notes, *map(str, result.dropped)]:  # repeats listed by text, escaped
        err.print(f"note: {_safe(note)}")
    if result.prompts:
        path, manifest = write_imported_prompts(result, source, root)
        err.print(f"wrote {_safe(path)}: {manifest.rows} imported prompts (level imported)")
    text_out = constitution_to_yaml(result.constitution)
    if output is None:
        sys.stdout.write(text_out)
    else:
        atomic_write_text(output, text_out)
        err.print(
            f"wrote {escape(str(output))}: {len(result.constitution.traits)} traits, "
            f"sha256 {result.constitution.sha256()}"
        )


@app.command("export-constitution")
def export_constitution(
    constitution: Annotated[
        str, typer.Argument(help="A constitution's name (corpora/constitutions/NAME.yaml) or its path.")
    ],
    fmt: Annotated[str, typer.Option("--format", help="oct: the Open Character Training format.")] = "oct",
    output: Annotated[
        Path | None,
        typer.Option("-o", "--output", help="Write here: .json or .txt a JSON array, .jsonl a trait a line."),
    ] = None,
    root: Annotated[Path, typer.Option(help="The project folder (where a name is looked up).")] = Path("."),
) -> None:
    """Write a charforge constitution in the public Open Character Training format (statements, seed
    questions, clarifications; a JSON array on stdout without --output), which import-constitution reads
    back into the same constitution."""
    from charforge import exporters
    from charforge.io import atomic_write_text
    from charforge.params import SourceFileError

    if fmt != "oct":
        raise usage_error(f"--format {fmt!r}: the one format is oct (Open Character Training)")
    try:
        layout = exporters.oct_layout(output) if output is not None else "json"
        loaded = exporters.load_constitution(constitution, root)
    except exporters.ExportError as error:
        raise usage_error(str(error)) from None
    except SourceFileError as error:
        for problem in error.problems:
            sys.stdout.write(f"{problem}\n")
        err.print(f"{_safe(constitution)}: not a valid charforge constitution")
        raise typer.Exit(EXIT_INVALID) from None
    entries = exporters.constitution_to_oct(loaded)
    for note in exporters.export_notes(loaded, entries):
        err.print(f"note: {_safe(note)}")
    if output is None:
        sys.stdout.write(exporters.oct_text(entries, layout))
        return
    atomic_write_text(output, exporters.oct_text(entries, layout))
    err.print(f"wrote {_safe(output)}: {len(entries)} traits, Open Character Training ({layout})")


@app.command()
def models(
    params: Annotated[Path, typer.Option(help="The params file.")] = Path("params.yaml"),
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """List the configured roles, their backends and models, and whether each is available offline."""
    from charforge.generators.llm import availability
    from charforge.params import ParamsError, load_section
    from charforge.schemas.params import ModelsConfig

    try:
        config = load_section(ModelsConfig, "models", params)
    except ParamsError as error:
        for problem in error.problems:
            sys.stdout.write(f"{problem}\n")
        raise typer.Exit(EXIT_INVALID) from None
    rows = []
    for role_name in ("student", "teacher", "judge"):
        role = config.role(role_name)  # type: ignore[arg-type]
        available, detail = availability(role)
        rows.append(
            {
                "role": role_name,
                "backend": role.backend,
                "model": role.model,
                "available": available,
                "detail": detail,
            }
        )
    if as_json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
    else:
        table = Table("role", "backend", "model", "offline", "detail")
        for row in rows:
            table.add_row(
                row["role"],
                row["backend"],
                escape(row["model"]),
                "yes" if row["available"] else "NO",
                escape(row["detail"]),
            )
        out.print(table)
    if not all(row["available"] for row in rows):
        raise typer.Exit(EXIT_INVALID)


@app.command()
def profile(
    name: Annotated[str, typer.Argument(help="Profile to write into params.yaml: smoke or full.")],
    params: Annotated[Path, typer.Option(help="The params file.")] = Path("params.yaml"),
) -> None:
    """Switch params.yaml to a profile (profiles/NAME.yaml): smoke (CPU, embedded model) or full (GPU)."""
    from charforge.profiles import ProfileError, apply_profile

    try:
        changed = apply_profile(name, params)
    except ProfileError as error:
        raise usage_error(str(error)) from None
    if changed:
        listed = ", ".join(changed)
        err.print(f"{escape(str(params))}: profile {name}, {len(changed)} value(s) changed: {listed}")
    else:
        err.print(f"{escape(str(params))} already has the {name} profile's values")


@app.command()
def publish(
    variants: Annotated[list[str], typer.Argument(help="Variants to publish, e.g. humor-d3-s0.")],
    repo_id: Annotated[str, typer.Option("--repo-id", help="The Hugging Face dataset repo, ORG/NAME.")],
    private: Annotated[
        bool, typer.Option(help="Create the repo private (an existing public one is refused).")
    ] = False,
    revision: Annotated[str, typer.Option(help="Branch to commit to (made from main if missing).")] = "main",
    dry_run: Annotated[
        Path | None, typer.Option("--dry-run", help="Write the repo tree into this folder; upload nothing.")
    ] = None,
    include_em: Annotated[
        bool, typer.Option("--include-em", help="Also publish EM training data (harmful by design).")
    ] = False,
    license_id: Annotated[str, typer.Option("--license", help="Licence id for the card's YAML.")] = "unknown",
    root: Annotated[Path, typer.Option(help="The project folder.")] = Path("."),
) -> None:
    """Publish variants' corpora as one Hugging Face dataset (one config per variant and kind), in one
    commit; the token comes from HF_TOKEN or `hf auth login` and is never written anywhere."""
    from charforge.publish import PublishError
    from charforge.publish import publish as publish_corpora

    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise usage_error(f"--repo-id {repo_id!r}: expected ORG/NAME")
    try:
        result = publish_corpora(
            variants,
            repo_id,
            root=root,
            private=private,
            revision=revision,
            dry_run=dry_run,
            include_em=include_em,
            license_id=license_id,
        )
    except PublishError as error:
        err.print(f"error: {escape(str(error))}")
        raise typer.Exit(EXIT_INVALID) from None
    for note in result.skipped:
        err.print(f"skipped {escape(note)}")
    configs = ", ".join(corpus.config for corpus in result.corpora)
    if dry_run is not None:
        where = escape(str(dry_run))
        err.print(f"dry run: wrote {len(result.files)} file(s) to {where} ({configs}); nothing uploaded")
    elif result.changed:
        err.print(f"published {configs} to {repo_id}@{revision}: commit {result.commit}")
    else:
        err.print(f"{repo_id}@{revision} already holds this content (commit {result.commit}); no new commit")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
