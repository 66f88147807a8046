"""The `curate` command line: parse options, call the library, turn errors into one line.

Commands are imported only when they run, so `curate validate` (a pre-commit hook) starts
without loading polars, the pipeline's stages or the trainer.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import warnings
from typing import Any
from pathlib import Path

import click

from curator.errors import CurateError, GateFailed, machine_error

EXIT_ERROR = 1
EXIT_GATE = 3
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: what a shell reports for a Unix tool whose reader went away

# name -> "module:attribute" of commands that live beside the library they drive
LAZY_COMMANDS = {
    "report": "curator.report.commands:report",
    "sample": "curator.report.commands:sample",
    "train": "finetune.commands:train",
    "export": "finetune.commands:export",
    "export-template": "finetune.commands:export_template",
}


class LazyGroup(click.Group):
    """A click group that imports a command's module only when that command is used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(LAZY_COMMANDS))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in LAZY_COMMANDS:
            module_name, attr = LAZY_COMMANDS[name].split(":")
            try:
                return getattr(importlib.import_module(module_name), attr)
            except (ImportError, AttributeError) as exc:
                message = f"command {name!r} is unavailable: {exc}"
                if isinstance(exc, ModuleNotFoundError) and _is_dependency(exc.name):
                    message = _missing_dependency(exc.name, name)
                return click.Command(name, help=message, callback=lambda: _fail(message))
        return super().get_command(ctx, name)


def _fail(message: str, code: int = EXIT_ERROR) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


class CuratorGroup(LazyGroup):
    """Turns CurateError and errors of the machine (a full disk, a refused write) into one line on
    stderr and a non-zero exit code; a closed pipe on stdout or stderr ends the command quietly."""

    def invoke(self, ctx: click.Context):
        set_verbosity = not _debug() and "TRANSFORMERS_VERBOSITY" not in os.environ
        if set_verbosity:  # transformers' logger (deprecation notes, advice), read when it is imported
            os.environ["TRANSFORMERS_VERBOSITY"] = "error"
        try:
            with warnings.catch_warnings():
                _quiet_third_party_warnings()
                return self._invoke_one_line(ctx)
        finally:
            if set_verbosity:  # a caller in the same process (a test runner) keeps its environment
                os.environ.pop("TRANSFORMERS_VERBOSITY", None)

    def _invoke_one_line(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except GateFailed as exc:
            _fail(_one_line(str(exc)), EXIT_GATE)
        except CurateError as exc:
            _fail(_one_line(str(exc)))
        except KeyboardInterrupt:
            _fail("interrupted; nothing was written", 130)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except BrokenPipeError:
            _exit_quietly_on_broken_pipe()
        except ModuleNotFoundError as exc:
            if not _is_dependency(exc.name):
                raise
            _fail(_missing_dependency(exc.name, ctx.invoked_subcommand))
        except Exception as exc:  # a bug, not bad input: one line, the traceback on request
            if _debug():
                raise
            what = machine_error(exc)
            if what is not None:
                filename = getattr(exc, "filename", None)
                _fail(f"{filename}: {what}" if filename else what)
            # the first line only: some messages (polars, yaml) run to a dozen lines of context
            first = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
            what = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
            _fail(f"internal error: {what} (set CURATE_DEBUG=1 for the traceback)")


TRAIN_PACKAGES = {"torch", "transformers", "peft", "sacrebleu", "tensorboard", "safetensors"}


def _is_dependency(module: str | None) -> bool:
    return bool(module) and module.split(".")[0] not in ("curator", "finetune")


def _missing_dependency(module: str, command: str | None) -> str:
    """What to install when a command imports a package this install lacks. The pre-commit hook
    installs curator with the validator's dependencies only (build_backend/curator_backend.py)."""
    package = module.split(".")[0]
    what = f"curate {command}" if command else "this command"
    if package in TRAIN_PACKAGES:
        return f"{what} needs {package}, of the [train] extra: pip install 'curator[train]'"
    return f"{what} needs {package}, which this install of curator lacks (a light install, as the pre-commit hook's, runs `curate validate` only): pip install curator"


def _quiet_third_party_warnings() -> None:
    """Hide the warnings of other packages (transformers' FutureWarnings and advice in `train` and
    `export`): the user cannot act on them, and they bury the command's own lines. Curator's own
    warnings stay; CURATE_DEBUG=1 shows everything."""
    if _debug():
        return
    warnings.filterwarnings("ignore")
    warnings.filterwarnings("default", module=r"(curator|finetune)(\.|$)")


def _exit_quietly_on_broken_pipe() -> None:
    """The reader of stdout or stderr went away (`curate validate ... | head -1`): stop without a word,
    as Unix tools do. The streams are pointed at /dev/null so that flushing them at exit cannot fail."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        try:
            os.dup2(devnull, stream.fileno())
        except (AttributeError, OSError, ValueError):  # not a real file (a test runner's capture)
            pass
    os.close(devnull)
    sys.exit(EXIT_BROKEN_PIPE)


def _debug() -> bool:
    """CURATE_DEBUG=1 (or true, yes) shows tracebacks; 0, false, no or unset do not."""
    return os.environ.get("CURATE_DEBUG", "").strip().lower() in ("1", "true", "yes")


def _one_line(message: str) -> str:
    """Errors are one line: a message that holds line breaks (a file name, a template's error) is joined."""
    return " ".join(part.strip() for part in message.splitlines() if part.strip())


@click.group(cls=CuratorGroup)
@click.version_option(package_name="curator")
def cli() -> None:
    """Curate chat fine-tuning data into a dataset a team can trust.

    \b
    Example:
      curate validate data/*.jsonl
      curate run raw/ out/
    """


@cli.command("validate")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path, readable=False))
@click.option("--format", "output_format", type=click.Choice(["text", "json"]), default="text", show_default=True, help="Output for people or for machines.")
@click.option("--max-errors", type=click.IntRange(min=1), default=None, help="Stop after this many errors.")
@click.option("--input-format", type=click.Choice(["auto", "chat", "alpaca", "sharegpt", "gpteacher"]), default=None, help="Shape of the records (default: input.format of the config, auto).")
@click.option("--strict", is_flag=True, help="Treat warnings (unknown fields, BOM) as errors.")
@click.option("--secrets/--no-secrets", default=False, show_default=True, help="Search every string (content, tool call arguments, meta keys and values) for secrets: private keys and API keys or tokens are errors, e-mail addresses and phone numbers warnings. The secret itself is never printed. On in the pre-commit hook.")
@click.option("--config", "config_path", type=click.Path(path_type=Path), help="The config file `curate run` reads: its input section applies.")
@click.option("-s", "--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override one config value, e.g. -s input.max_line_bytes=8000000.")
def validate_cmd(files: tuple[Path, ...], output_format: str, max_errors: int | None, input_format: str | None, strict: bool, secrets: bool, config_path: Path | None, overrides: tuple[str, ...]) -> None:
    """Check chat-JSONL files against the schema and structure rules (pre-commit hook).

    Prints one line per problem as `file:line: field: message [code]` and exits 1 when
    anything is wrong. Reads .jsonl, .jsonl.gz and .json arrays, streaming; a line (or .json
    element) over input.max_line_bytes is an error, as in `curate run`. With --format json the
    output is one JSON object, written as the problems are found: {"problems": [...], "files",
    "records", "errors", "warnings", "stopped_at_max_errors"}. With --secrets a secret is reported as
    `file:line: field: KIND [secrets.KIND]`, never quoted.

    \b
    Example:
      curate validate data/train.jsonl data/extra.jsonl.gz --max-errors 50
      curate validate --secrets data/*.jsonl
      curate validate data/*.json --config curate.yaml
    """
    from curator.io.readers import MAX_LINE_BYTES
    from curator.validation import validate_file

    for path in files:  # before any output, so an error is never half a report
        if path.is_dir():
            raise CurateError(f"{path}: is a folder; pass the files in it (e.g. {path}/*.jsonl)")
        if not path.exists() and not path.is_symlink():
            raise CurateError(f"{path}: no such file")
    max_line_bytes, config_format, repairs = MAX_LINE_BYTES, "auto", None
    if config_path is not None or overrides:
        from curator.config import load_config  # the pipeline's config classes: only when asked for

        config = load_config(config_path, list(overrides))
        max_line_bytes, config_format = config.input.max_line_bytes, config.input.format
        repairs = tuple(config.input.repairs)
    report = _JsonReport() if output_format == "json" else None
    n_records = n_errors = n_warnings = 0
    stopped = False
    for path in files:
        for count, found in validate_file(
            path, input_format or config_format, "reject" if strict else "warn", max_line_bytes, repairs, secrets
        ):
            n_records += count
            for finding in found:
                is_error = not finding.problem.warning or strict
                n_errors += is_error
                n_warnings += not is_error
                if report is None:
                    click.echo(("" if is_error else "warning: ") + finding.format())
                else:
                    report.add(finding.to_dict())
            if max_errors is not None and n_errors >= max_errors:
                stopped = True
                break
        if stopped:
            break
    if report is not None:
        report.close(
            {"files": len(files), "records": n_records, "errors": n_errors, "warnings": n_warnings, "stopped_at_max_errors": stopped}
        )
    elif n_errors or n_warnings:
        note = f" (stopped after {max_errors} errors)" if stopped else ""
        click.echo(f"{n_records} records checked: {n_errors} errors, {n_warnings} warnings{note}", err=True)
    sys.exit(EXIT_ERROR if n_errors else 0)


class _JsonReport:
    """`validate --format json`: one JSON object whose problems are written as they are found (one a
    line), never held, and whose counts close it."""

    def __init__(self) -> None:
        self.out = sys.stdout  # written without click.echo's flush per problem
        self.encode = json.JSONEncoder(ensure_ascii=False).encode  # json.dumps would build one per call
        self.out.write('{"problems": [')
        self.empty = True

    def add(self, problem: dict) -> None:
        self.out.write(("\n" if self.empty else ",\n") + self.encode(problem))
        self.empty = False

    def close(self, counts: dict) -> None:
        self.out.write(("" if self.empty else "\n") + "], " + self.encode(counts)[1:] + "\n")
        self.out.flush()


_FORMATS = ("auto", "chat", "alpaca", "sharegpt", "gpteacher")


def _format_values(options: tuple[str, ...]) -> dict[str, Any]:
    """--input-format values as config values: FORMAT sets input.format, GLOB=FORMAT adds to input.format_by_file."""
    values: dict[str, Any] = {}
    by_file: dict[str, str] = {}
    for option in options:
        glob, _, fmt = option.rpartition("=")
        if fmt not in _FORMATS:
            raise CurateError(f"--input-format {option}: {fmt!r} is not one of {', '.join(_FORMATS)}")
        if glob:
            by_file[glob] = fmt
        else:
            values["input.format"] = fmt
    if by_file:
        values["input.format_by_file"] = by_file
    return values


@cli.command("run")
@click.argument("raw", type=click.Path(path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--config", "config_path", type=click.Path(path_type=Path), help="YAML or TOML config file.")
@click.option("-s", "--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override one config value, e.g. -s tokens.policy=truncate.")
@click.option("--input-format", "input_format", multiple=True, metavar="[GLOB=]FORMAT", help="Shape of the input records: auto (detected per record, the default), chat, alpaca, sharegpt or gpteacher; GLOB=FORMAT for the files a glob matches, e.g. 'legacy/*.json=alpaca' (repeatable). As in `curate validate`; --format, its older name, still works.")
@click.option("--format", "old_input_format", multiple=True, hidden=True)
@click.option("--rules", type=click.Path(path_type=Path), default=None, help="Quality rule file (default: rules/default.yaml).")
@click.option("--model", default=None, help="Model profile or tokenizer folder for the token budget.")
@click.option("--engine", type=click.Choice(["auto", "local", "stream", "ray"]), default=None, help="local: every record in memory; stream: batches of engine.batch_rows records as Parquet shards, for inputs larger than memory; ray: stream's shards, row stages run on them in parallel on a Ray cluster (pip install 'curator[ray]'); auto (the default, engine.name): stream from engine.auto_stream_bytes (1 GB) of input. The outputs are the same bytes either way.")
@click.option("--ray-address", default=None, metavar="ADDR", help="The Ray cluster of --engine ray (engine.ray_address); default: RAY_ADDRESS, else a local Ray with this machine's CPUs.")
@click.option("--force", is_flag=True, help="Replace OUT if it is not empty.")
@click.option("--no-gate", is_flag=True, help="Report failed gates but exit 0.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars or summary.")
def run_cmd(raw: Path, out: Path, config_path: Path | None, overrides: tuple[str, ...], input_format: tuple[str, ...], old_input_format: tuple[str, ...], rules: Path | None, model: str | None, engine: str | None, ray_address: str | None, force: bool, no_gate: bool, quiet: bool) -> None:
    """Curate RAW (a file or folder of .jsonl/.jsonl.gz/.json) into OUT.

    Writes train.jsonl, val.jsonl, rejects.jsonl, annotations.parquet, manifest.json and
    report.{json,md,html}. Every input line ends in exactly one of them. Exits 3 when a
    dataset gate fails (after writing everything), unless --no-gate.

    \b
    Example:
      curate run raw/ out/ --config curate.yaml -s split.val_fraction=0.05
      curate run big/ out/ --engine stream -s engine.batch_rows=20000
      curate run big/ out/ --engine ray --ray-address head:6379
    """
    from curator.config import load_config
    from curator.pipeline import run

    # option values are taken as they are, not as YAML: a path may hold " #" or "[x]"
    values: dict[str, Any] = _format_values(input_format + old_input_format)
    if rules:
        values["quality.rules"] = str(rules)
    if model:
        values["tokens.model"] = model
    if engine:
        values["engine.name"] = engine
    if ray_address:
        values["engine.ray_address"] = ray_address
    config = load_config(config_path, list(overrides), values=values)
    result = _run_with_progress_on_stderr(run, raw, out, config, force=force, progress=not quiet)
    if result.skipped:  # shown even with --quiet: data the user may have meant to include
        shown = ", ".join(path for path, _ in result.skipped[:3]) + (" ..." if len(result.skipped) > 3 else "")
        noun = "path" if len(result.skipped) == 1 else "paths"
        click.echo(f"warning: {len(result.skipped):,} {noun} under {raw} not read ({shown}); see inputs_skipped in manifest.json", err=True)
    if not quiet:
        _print_summary(result)
    failed = [g for g in result.gates if not g.passed]
    if any(g.name == "size.kept" for g in failed):  # the other gates of an empty set only repeat it
        failed = [g for g in failed if g.name == "size.kept"]
    if failed and not no_gate and config.gates.enabled:
        raise GateFailed("gate failed: " + "; ".join(f"{g.name}: {g.message}" for g in failed) + f" (outputs written to {out})")


def _run_with_progress_on_stderr(run, *args, **kwargs):
    """Progress bars draw on rich's global console, stdout by default: send them to stderr, where
    the summary goes, so `curate run ... > log` keeps stdout clean."""
    import rich

    rich.reconfigure(stderr=True)
    try:
        return run(*args, **kwargs)
    finally:
        rich.reconfigure()


def _advice_of(out: Path) -> list[dict]:
    """The advice list of OUT/report.json (the same lines report.md and report.html show)."""
    try:
        return json.loads((Path(out) / "report.json").read_text(encoding="utf-8")).get("advice") or []
    except (OSError, ValueError, AttributeError):
        return []


def _print_summary(result) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=True)
    c = result.counts
    console.print(f"[bold]{c['read']:,}[/] read, [bold]{c['kept']:,}[/] kept ({c['train']:,} train, {c['val']:,} val), [bold]{c['rejected']:,}[/] rejected -> {result.out}")
    if result.gates:
        table = Table("gate", "result", "detail", title="gates", title_justify="left")
        for g in result.gates:
            table.add_row(g.name, "[green]pass[/]" if g.passed else "[red]FAIL[/]", g.message)
        console.print(table)
    advice = _advice_of(result.out)
    if advice:
        from rich.markup import escape

        from curator.report.advice import advice_lines

        console.print("[bold]what to do next[/]")
        for line in advice_lines(advice):
            console.print(f"- {escape(line)}", soft_wrap=True)
    timing = ", ".join(f"{name} {secs:.1f}s" for name, secs in result.timings)
    console.print(f"[dim]{result.engine} engine: {timing}[/]")


@cli.command("config")
@click.option("--config", "config_path", type=click.Path(path_type=Path), help="YAML or TOML config file.")
@click.option("-s", "--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override one config value.")
def config_cmd(config_path: Path | None, overrides: tuple[str, ...]) -> None:
    """Print the resolved config as YAML, every key with its meaning: the defaults, a file and overrides applied.

    \b
    Example:
      curate config > curate.yaml          # a starting point with every default
      curate config --config curate.yaml -s tokens.policy=truncate
    """
    from curator.config import commented_yaml, load_config

    click.echo(commented_yaml(load_config(config_path, list(overrides))), nl=False)


@cli.command("stages")
@click.option("--columns", is_flag=True, help="List the columns the stages write instead.")
def stages_cmd(columns: bool) -> None:
    """Print the stages of `curate run` as a Markdown table: kind, reads, writes, reject codes.

    A `row` stage's result for a row depends on that row alone; a `global` stage needs the whole set.

    \b
    Example:
      curate stages
      curate stages --columns
    """
    from curator.stages.registry import column_table, stage_table

    click.echo(column_table() if columns else stage_table(), nl=False)


@cli.command("inspect")
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--id", "record_id", default=None, help="Show the record with this id (train.jsonl, then val.jsonl).")
@click.option("--n", "n", type=click.IntRange(min=1), default=None, help="Show the first N records (default 3).")
@click.option("--format", "output_format", type=click.Choice(["text", "json"]), default="text", show_default=True, help="Marked text for people, JSON lines for machines.")
def inspect_cmd(out: Path, record_id: str | None, n: int | None, output_format: str) -> None:
    """Show records of OUT as the trainer sees them: rendered text with the trained tokens marked.

    Records come from OUT/train.jsonl, then OUT/val.jsonl, tokenized by the trainer's code with the
    profile OUT/manifest.json recorded. Text: trained spans in green on a terminal, else between
    ⟦ and ⟧. JSON: one line per record, {"id", "input_ids", "labels", "text"}, labels -100 where
    not trained.

    \b
    Example:
      curate inspect out/ --n 1
      curate inspect out/ --id 94d406f4a2d64346d37ace10d5bc40c0 --format json
    """
    from curator.inspect_records import header, inspect_folder

    if record_id is not None and n is not None:
        raise CurateError("--id and --n exclude each other: pass one")
    color = output_format == "text" and sys.stdout.isatty()
    for item in inspect_folder(out, record_id, 3 if n is None else n):
        if output_format == "json":
            click.echo(item.to_json())
        else:
            click.echo(header(item))
            click.echo(item.marked(color))


@cli.command("schema")
def schema_cmd() -> None:
    """Print the JSON Schema of a chat record.

    \b
    Example:
      curate schema > chat_record.schema.json
    """
    from curator.schema import json_schema_text

    click.echo(json_schema_text(), nl=False)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
