"""`curate train`, `curate export` and `curate export-template`: click commands only.

Nothing heavy is imported here at module level: torch, transformers and peft are imported inside the command
bodies, after the cheap checks (config, curated folder), and their absence is one line that says
`pip install 'curator[train]'` (DESIGN.md principle 9).
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import click

from curator.errors import CurateError

TRAIN_EXTRA_MODULES = ("torch", "transformers", "peft", "sacrebleu", "tensorboard", "safetensors")


def require_train_extra() -> None:
    """Fail with what to install when a module of the [train] extra is missing."""
    missing = [name for name in TRAIN_EXTRA_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        raise CurateError(f"training needs the [train] extra: pip install 'curator[train]' (missing: {', '.join(missing)})")


@click.command()
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--output", "-o", "output_dir", required=True, type=click.Path(path_type=Path),
              help="folder for the adapter, checkpoints, metrics.jsonl, tensorboard/ and compare.html")
@click.option("--model", default=None, help="base model: local folder or cached hub id (default: the config's)")
@click.option("--config", "config_path", type=click.Path(path_type=Path),
              help="YAML train config (see finetune/default.yaml for every key)")
@click.option("-s", "--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="override one config key, e.g. -s lora.r=8 -s learning_rate=1e-4 (repeatable)")
@click.option("--resume", is_flag=True, help="continue the run in --output from its latest checkpoint (same settings)")
@click.option("--force", is_flag=True, help="train on a folder that did not come from a passing `curate run`")
@click.option("--overwrite", is_flag=True,
              help="start over in an --output that holds an earlier run (its checkpoints/ and tensorboard/ are cleared)")
@click.option("--quiet", "-q", is_flag=True, help="no progress bar")
def train(out: Path, output_dir: Path, model: str | None, config_path: Path | None, overrides: tuple[str, ...],
          resume: bool, force: bool, overwrite: bool, quiet: bool) -> None:
    """Train a LoRA adapter on OUT/train.jsonl, evaluating on OUT/val.jsonl.

    OUT must be the folder of a passing `curate run` (manifest.json gates passed, split files unchanged).
    The tokenizer, chat template and context length are those OUT was curated with (manifest.json);
    a --model of another family or a larger context_length is refused.
    An --output folder that holds an earlier run is refused unless --resume (continue it) or --overwrite.
    On several GPUs, launch it with torchrun or accelerate launch (python -m curator.cli train ...): each
    process trains on its share of every step, rank 0 writes the files.

    \b
    Example:
      curate train out/ --model mistralai/Mistral-7B-Instruct-v0.2 --output adapter/ -s epochs=1
      torchrun --nproc_per_node 4 -m curator.cli train out/ --output adapter/ -s grad_accumulation=2
    """
    from finetune.config import load_train_config
    from finetune.curated import open_curated_folder
    from finetune.distributed import launched_ranks
    from finetune.output_dir import prepare_output_dir

    config = load_train_config(config_path, overrides)
    if model:
        config = config.model_copy(update={"model": model})
    open_curated_folder(out, force=force)  # refuse early, before the heavy imports
    if output_dir.exists() and not output_dir.is_dir():
        raise CurateError(f"{output_dir}: not a folder (--output is the folder the adapter is written to)")
    main = launched_ranks().main
    if main:  # another process could find the folder rank 0 has started writing to
        prepare_output_dir(output_dir, resume, overwrite, clear=False)
    require_train_extra()
    from finetune.modeling import require_bitsandbytes

    require_bitsandbytes(config.quantization)  # before tokenizing: a missing package is refused at once
    from finetune.train import train_from_folder

    result = train_from_folder(
        out, output_dir, config, resume=resume, force=force, overwrite=overwrite, show_progress=not quiet
    )
    if not main:  # one summary per run
        return
    last = result.evals[-1] if result.evals else {}
    summary = f"trained {result.steps}/{result.total_steps} steps"
    if "val_perplexity" in last:
        summary += f"; val perplexity {last['val_perplexity']:.3f}"
    if "bleu" in last:
        summary += f", BLEU {last['bleu']:.2f}"
    if result.stopped_early:
        summary += "; stopped early"
        if result.best_step is not None:
            summary += f", adapter of step {result.best_step} (lowest val loss)"
    skipped = result.skipped_over_context
    if any(skipped.values()):
        summary += (
            f"; skipped {skipped.get('train', 0)} train and {skipped.get('val', 0)} val examples longer than "
            f"context_length {result.context_length} (data_report.json)"
        )
    click.echo(f"{summary}; adapter in {output_dir}", err=True)


@click.command()
@click.argument("adapter_dir", type=click.Path(path_type=Path))
@click.option("--merge", "merge_dir", type=click.Path(path_type=Path),
              help="write the base model with the adapter merged in, as a plain transformers model")
@click.option("--dtype", type=click.Choice(["bfloat16", "float16", "float32"]), default="bfloat16", show_default=True,
              help="dtype of the merged weights")
@click.option("--base-model", default=None, help="base model folder/id (default: adapter_config.json's)")
@click.option("--compare", "compare_val", type=click.Path(path_type=Path),
              help="val.jsonl: write base vs fine-tuned answers to ADAPTER_DIR/compare.html")
@click.option("--overwrite", is_flag=True, help="replace the model of an earlier --merge in that folder")
@click.option("--samples", default=16, show_default=True, help="prompts in the comparison sheet")
@click.option("--max-new-tokens", default=256, show_default=True, help="answer length in the comparison sheet")
def export(adapter_dir: Path, merge_dir: Path | None, dtype: str, base_model: str | None, compare_val: Path | None,
           overwrite: bool, samples: int, max_new_tokens: int) -> None:
    """Export a trained adapter: a merged model (--merge) and/or a comparison sheet (--compare).

    The adapter folder itself (adapter_config.json, adapter_model.safetensors, tokenizer with chat template)
    already loads in vLLM (--enable-lora) and TGI.

    \b
    Example:
      curate export adapter/ --merge merged/
      curate export adapter/ --merge merged/ --overwrite
    """
    if merge_dir is None and compare_val is None:
        raise CurateError("nothing to export: pass --merge OUT_DIR and/or --compare VAL_JSONL")
    _check_inputs(adapter_dir, merge_dir, compare_val)
    if merge_dir is not None:
        _clear_merge_dir(merge_dir, overwrite)
    require_train_extra()
    if merge_dir is not None:
        from finetune.export import merge_adapter, trained_quantization

        quantized = trained_quantization(adapter_dir)
        if quantized != "none":  # merged into the full-precision weights: the model differs from what trained
            click.echo(f"note: adapter trained on a {quantized} base; merging it into the unquantized base in {dtype}",
                       err=True)
        merge_adapter(adapter_dir, merge_dir, base_model=base_model, dtype=dtype)
        click.echo(f"merged {dtype} model in {merge_dir}", err=True)
    if compare_val is not None:
        import torch
        import yaml

        from curator.tokenize_chat import ChatTokenizer
        from finetune.compare_sheet import write_compare_sheet
        from finetune.curated import DEFAULT_TOKENIZER
        from finetune.data import read_chat_jsonl
        from finetune.export import load_adapter_model
        from finetune.modeling import resolve_device
        from finetune.progress import RunProgress

        saved = adapter_dir / "train_config.yaml"
        train_config = yaml.safe_load(saved.read_text(encoding="utf-8")) if saved.is_file() else {}
        tokenizer = ChatTokenizer.load(
            model=train_config.get("tokenizer") or DEFAULT_TOKENIZER, tokenizer_path=train_config.get("tokenizer_path")
        )
        device = resolve_device("auto")
        dtype_ = torch.bfloat16 if device.type == "cuda" else torch.float32
        model = load_adapter_model(adapter_dir, base_model, dtype=dtype_, device=str(device))
        with RunProgress() as progress:  # on stderr, as train's bars
            path = write_compare_sheet(
                model, tokenizer, read_chat_jsonl(compare_val), adapter_dir / "compare.html", samples, max_new_tokens,
                8, int(train_config.get("seed", 0)), device, dtype_, progress=progress,
            )
        click.echo(f"comparison sheet in {path}", err=True)


def _check_inputs(adapter_dir: Path, merge_dir: Path | None, compare_val: Path | None) -> None:
    """The paths `export` reads and writes, checked by the command rather than by click, so that a wrong
    one is a one-line `error:` as in every other command, not click's usage block."""
    if not adapter_dir.exists():
        raise CurateError(f"{adapter_dir}: no such folder")
    if not adapter_dir.is_dir():
        raise CurateError(f"{adapter_dir}: not a folder (pass the --output folder of `curate train`)")
    if merge_dir is not None and merge_dir.exists() and not merge_dir.is_dir():
        raise CurateError(f"{merge_dir}: not a folder (--merge writes a model folder)")
    if compare_val is not None and not compare_val.is_file():
        raise CurateError(f"{compare_val}: {'a folder, not a file' if compare_val.is_dir() else 'no such file'} (--compare reads a val.jsonl)")


def _clear_merge_dir(merge_dir: Path, overwrite: bool) -> None:
    """Checked before the model loads: --merge writes into an empty folder, or with --overwrite replaces
    an earlier merge (a folder holding a config.json); it never deletes a folder of something else."""
    if not merge_dir.exists() or not any(merge_dir.iterdir()):
        return
    if not overwrite:
        raise CurateError(f"{merge_dir}: not empty; choose an empty folder, or --overwrite to replace an earlier merge")
    if not (merge_dir / "config.json").is_file():
        raise CurateError(f"{merge_dir}: holds no config.json, so not an earlier merge; --overwrite does not replace it")
    shutil.rmtree(merge_dir)


@click.command("export-template")
@click.argument("out", type=click.Path(path_type=Path))
@click.argument("dest", type=click.Path(path_type=Path))
def export_template(out: Path, dest: Path) -> None:
    """Write a tokenizer folder with OUT's chat template (OUT/chat_template.jinja) into DEST.

    DEST then loads offline with transformers' AutoTokenizer.from_pretrained(DEST); its
    apply_chat_template gives the ids curator trains on, and (Mistral) marks the trained tokens
    with {% generation %}, for TRL's SFTConfig(assistant_only_loss=True). Needs no torch.

    \b
    Example:
      curate export-template out/ tokenizer/
    """
    from finetune.export import export_template as write

    names = write(out, dest)
    click.echo(f"tokenizer with the chat template of {out} in {dest} ({', '.join(names)})", err=True)
