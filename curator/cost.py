"""Training cost estimate: tokens x epochs / throughput, as hours and money per GPU option.

The token totals come from the tokens stage (the lengths the trainer will see); the GPU options,
their prices and the throughput model live in a YAML file (default: curator/data/gpu_prices.yaml,
which states the source of every figure). Throughput per option is either given in the config
(`tokens.throughput`, tokens/s by option name) or derived from the option's peak bf16 FLOPs:

    tokens/s = peak_bf16_tflops * 1e12 * mfu / (flops_per_token_per_param * n_params)

Compute is spent on every token of a sequence (the prompt is run forward and backward too), so
hours are computed from the tokens *seen*; trained tokens are reported beside them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


from curator.errors import CurateError
from curator.yaml_io import load_yaml

DEFAULT_PRICES = Path(__file__).with_name("data") / "gpu_prices.yaml"


@dataclass(frozen=True)
class GpuOption:
    name: str
    price_per_hour: float
    price_source: str
    peak_bf16_tflops: float | None = None


@dataclass(frozen=True)
class PriceTable:
    gpus: list[GpuOption]
    mfu: float
    flops_per_token_per_param: float
    currency: str
    path: str


def load_prices(path: str | Path | None = None) -> PriceTable:
    """Read a prices file; errors name the file and the field."""
    path = Path(path) if path is not None else DEFAULT_PRICES
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CurateError(f"tokens.prices_file: {path} not found") from None
    data = load_yaml(text, path)  # the alias budget and one-line errors of every YAML file curator reads
    if not isinstance(data, dict) or not isinstance(data.get("gpus"), list) or not data["gpus"]:
        raise CurateError(f"{path}: field gpus must be a non-empty list of GPU options")
    gpus = []
    for i, item in enumerate(data["gpus"]):
        if not isinstance(item, dict):
            raise CurateError(f"{path}: gpus[{i}] must be a mapping")
        for key in ("name", "price_per_hour", "price_source"):
            if key not in item:
                raise CurateError(f"{path}: gpus[{i}] misses field {key}")
        unknown = set(item) - {"name", "price_per_hour", "price_source", "peak_bf16_tflops"}
        if unknown:
            raise CurateError(f"{path}: gpus[{i}] has unknown field(s) {', '.join(sorted(unknown))}")
        price = item["price_per_hour"]
        if not isinstance(price, int | float) or isinstance(price, bool) or price < 0:
            raise CurateError(f"{path}: gpus[{i}].price_per_hour must be a number >= 0, got {price!r}")
        peak = item.get("peak_bf16_tflops")
        if peak is not None and (not isinstance(peak, int | float) or isinstance(peak, bool) or peak <= 0):
            raise CurateError(f"{path}: gpus[{i}].peak_bf16_tflops must be a number > 0 (TFLOP/s) or null, got {peak!r}")
        gpus.append(
            GpuOption(
                name=str(item["name"]),
                price_per_hour=float(price),
                price_source=str(item["price_source"]),
                peak_bf16_tflops=None if peak is None else float(peak),
            )
        )
    for key in ("mfu", "flops_per_token_per_param"):
        value = data.get(key)
        if not isinstance(value, int | float) or value <= 0:
            raise CurateError(f"{path}: field {key} must be a number > 0, got {value!r}")
    return PriceTable(
        gpus=gpus,
        mfu=float(data["mfu"]),
        flops_per_token_per_param=float(data["flops_per_token_per_param"]),
        currency=str(data.get("currency", "USD")),
        # the built-in table is named as in the source tree, so outputs do not depend on the install folder
        path="curator/data/gpu_prices.yaml" if path == DEFAULT_PRICES else str(path),
    )


def estimate_cost(
    tokens_seen: int,
    tokens_trained: int,
    epochs: int,
    prices: PriceTable,
    n_params: float | None,
    throughput: dict[str, float] | None = None,
    mfu: float | None = None,
) -> dict[str, Any]:
    """Hours and cost of `epochs` passes over the data on each GPU option of `prices`.

    `throughput` (tokens/s by option name) wins over the FLOPs model; an option with neither a
    configured throughput nor (peak FLOPs and n_params) is listed with null hours and cost.
    """
    throughput = throughput or {}
    unknown = set(throughput) - {g.name for g in prices.gpus}
    if unknown:
        raise CurateError(
            f"tokens.throughput: unknown GPU option(s) {', '.join(sorted(unknown))}; "
            f"options in {prices.path}: {', '.join(g.name for g in prices.gpus)}"
        )
    mfu = prices.mfu if mfu is None else mfu
    total = tokens_seen * epochs
    options = []
    for gpu in prices.gpus:
        if gpu.name in throughput:
            tps: float | None = float(throughput[gpu.name])
            source = "configured (tokens.throughput)"
        elif gpu.peak_bf16_tflops is not None and n_params:
            tps = gpu.peak_bf16_tflops * 1e12 * mfu / (prices.flops_per_token_per_param * n_params)
            source = (
                f"{gpu.peak_bf16_tflops:g} TFLOPS bf16 x MFU {mfu:g} / "
                f"({prices.flops_per_token_per_param:g} x {n_params:.3g} params) FLOPs per token; see {prices.path}"
            )
        else:
            tps, source = None, "unknown: set tokens.throughput or tokens.n_params"
        hours = None if not tps else total / tps / 3600
        options.append(
            {
                "gpu": gpu.name,
                "tokens_per_second": None if tps is None else round(tps, 1),
                "throughput_source": source,
                "hours": None if hours is None else round(hours, 3),
                "cost": None if hours is None else round(hours * gpu.price_per_hour, 2),
                "price_per_hour": gpu.price_per_hour,
                "price_source": gpu.price_source,
            }
        )
    return {
        "epochs": epochs,
        "tokens_seen_per_epoch": tokens_seen,
        "tokens_trained_per_epoch": tokens_trained,
        "tokens_seen_total": total,
        "tokens_trained_total": tokens_trained * epochs,
        "currency": prices.currency,
        "prices_file": prices.path,
        "options": options,
    }


__all__ = ["DEFAULT_PRICES", "GpuOption", "PriceTable", "estimate_cost", "load_prices"]
