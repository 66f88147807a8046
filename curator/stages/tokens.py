"""Token counts and the context budget, with the tokenizer the trainer uses.

Reads `messages` and, where the frame has it, `tools` (each record's tool definitions, JSON text). Writes `n_tokens` Int64 (the whole sequence, BOS included), `n_assistant_tokens`
Int64 (tokens the trainer computes loss on: assistant turns and their EOS, weight-0 turns excluded),
`turn_tokens` List(Int64) (tokens per message, summing to `n_tokens`) and `truncated_turns` Int32
(messages dropped by the `truncate` policy, 0 otherwise); under `truncate` it also rewrites `messages`
of the rows it shortened (their `content_hash` still names the source record).

The stage writes OUT/chat_template.jinja, the Jinja chat template of the profile it counted with:
for Mistral-7B-Instruct-v0.2, curator's `mistral-v1` rendering with `{% generation %}` around the
trained tokens (curator/tokenize_chat.py); for the other profiles, the model's own template.
`curate export-template OUT DIR` makes a tokenizer folder of it.

All counts come from `curator.tokenize_chat`, the module the trainer (finetune/data.py) builds its
sequences and loss masks with, so the budget is the length the trainer sees. The stage counts through
`curator.token_counts.TokenCounter`, which gives exactly `ChatTokenizer.encode_batch`'s counts
(tested on every record of ../shared/data/chat) without building ids, about twice as fast.

Most trainers silently cut an example longer than the context (e.g. TRL's SFTTrainer `max_length`
truncates from the right), which drops the end of the answer and its EOS; here the policy decides:

- `reject` (default): rows over the context get `tokens.over_budget` (the count in the detail).
- `truncate`: drop whole earliest exchanges (a user turn with the assistant/tool turns after it),
  keep every system message, never cut inside a turn; the fewest exchanges that make the example fit
  (and leave a trained token) are dropped. If even the last exchange alone is too long, the row gets
  `tokens.over_budget`. This is the "drop the oldest turns" strategy of chat-history truncation
  (mistral-common's `truncate_for_context_length` drops whole messages from the start, likewise).
- `report`: count and report rows over the context, reject nothing.

Rows with no trained token (no assistant turn with weight 1) get `tokens.no_trainable`: the trainer
would spend compute on them and learn nothing (finetune/data.py skips them too).

Rows whose chat template refuses them (only template-based profiles can; e.g. Llama-2's template raises
on roles that do not alternate) get `tokens.template_error` with the template's message.

The stage also puts a training cost estimate into the report (curator/cost.py): tokens seen and
trained x `epochs`, over the throughput of each GPU option in the prices file.
"""

from __future__ import annotations

import hashlib
import os

import polars as pl

from curator import columns as C
from curator.columns import with_reject
from curator.gates import Gate
from curator.stages.base import StageContext
from curator.stage_configs import TokensConfig as Config  # noqa: F401  (re-exported: the stage's settings)

NAME = "tokens"


OVER_BUDGET = "tokens.over_budget"
NO_TRAINABLE = "tokens.no_trainable"
TEMPLATE_ERROR = "tokens.template_error"

TEMPLATE_FILE = "chat_template.jinja"


def _tokenizer(cfg: Config):
    from curator.tokenize_chat import ChatTokenizer

    return ChatTokenizer.load(cfg.model, tokenizer_path=cfg.tokenizer_path, context_length=cfg.context_length)


def preflight(config) -> None:
    """Load the tokenizer profile before RAW is read (memoised: `run` reuses it)."""
    _tokenizer(config.tokens)


def _exchanges(messages: list[dict]) -> list[int]:
    """Exchange index of each message (-1 for system): a new exchange starts at each user turn."""
    out: list[int] = []
    current = 0
    seen_user = False
    for msg in messages:
        role = msg.get("role")
        if role == "system":
            out.append(-1)
            continue
        if role == "user":
            if seen_user:
                current += 1
            seen_user = True
        out.append(current)
    return out


def _truncate(
    tok, convs: list[list[dict]], tools: list, over: list[int], limit: int
) -> tuple[dict[int, tuple], dict[int, int]]:
    """The fewest earliest exchanges to drop from each over-budget row.

    Returns row -> (kept messages, encoding, messages dropped) for rows that fit after dropping,
    and row -> tokens of the last exchange alone (with the system prompt) for rows that have one,
    or -1 for a row that fits only once no trained exchange is left.
    """
    candidates: list[tuple[int, list[dict], int]] = []
    for i in over:  # a kept exchange still sees the record's tools: they are part of its first user turn
        ex = _exchanges(convs[i])
        n_ex = max(ex) + 1 if ex else 0
        for k in range(1, n_ex):
            kept = [m for m, e in zip(convs[i], ex) if e == -1 or e >= k]
            candidates.append((i, kept, len(convs[i]) - len(kept)))
    results = tok.encode_batch_or_errors([c[1] for c in candidates], [tools[c[0]] for c in candidates]) if candidates else []
    chosen: dict[int, tuple] = {}
    last_alone: dict[int, int] = {}
    untrained_fit: set[int] = set()
    for (i, kept, dropped), enc in zip(candidates, results):
        if isinstance(enc, str):
            continue
        last_alone[i] = enc.n_tokens  # candidates come in order of k, the last one is the last exchange
        if i not in chosen and enc.n_tokens <= limit:
            if enc.n_trained > 0:
                chosen[i] = (kept, enc, dropped)
            else:
                untrained_fit.add(i)
    # rows that fit only once every trained exchange is gone: the detail says so, not "its last exchange alone ..."
    for i in untrained_fit - chosen.keys():
        last_alone[i] = -1
    return chosen, last_alone


def _patch_truncated(counts: pl.DataFrame, truncated: dict[int, tuple], last_alone: dict[int, int]) -> pl.DataFrame:
    """The counts of the rows `_truncate` shortened, and each over-budget row's last exchange alone."""
    cols = {name: counts.get_column(name).to_list() for name in (C.N_TOKENS, C.N_ASSISTANT_TOKENS, C.TURN_TOKENS,
                                                                   C.TRUNCATED_TURNS, "_last_alone")}
    for i, (_kept, enc, dropped) in truncated.items():
        cols[C.N_TOKENS][i], cols[C.N_ASSISTANT_TOKENS][i], cols[C.TURN_TOKENS][i] = enc.n_tokens, enc.n_trained, enc.turn_tokens
        cols[C.TRUNCATED_TURNS][i] = dropped
    for i, n in last_alone.items():
        cols["_last_alone"][i] = n
    return counts.with_columns(pl.Series(name, values, dtype=counts.schema[name]) for name, values in cols.items())


def run(df: pl.DataFrame, ctx: StageContext) -> pl.DataFrame:
    from curator.token_counts import ERROR, TokenCounter

    cfg: Config = ctx.config.tokens
    tok = _tokenizer(cfg)
    limit = tok.profile.context_length
    convs: list[list[dict]] = df.get_column(C.MESSAGES).to_list()
    tools: list = df.get_column(C.TOOLS).to_list() if C.TOOLS in df.columns else [None] * len(convs)

    counter = TokenCounter(tok)
    parts: list[pl.DataFrame] = []
    with ctx.progress.task("tokens", total=len(convs)) as advance:
        for start in range(0, len(convs), cfg.batch_size):
            chunk = convs[start : start + cfg.batch_size]
            parts.append(counter.count(chunk, tools[start : start + cfg.batch_size]))
            advance(len(chunk))
    counts = pl.concat(parts) if parts else counter.count([])
    counts = counts.rename({ERROR: "_error"}).with_columns(
        pl.lit(0, dtype=pl.Int32).alias(C.TRUNCATED_TURNS), pl.lit(None, dtype=pl.Int64).alias("_last_alone")
    )

    over = counts.with_row_index("i").filter(pl.col(C.N_TOKENS) > limit).get_column("i").to_list()
    truncated: dict[int, tuple] = {}
    if cfg.policy == "truncate" and over:
        truncated, last_alone = _truncate(tok, convs, tools, over, limit)
        counts = _patch_truncated(counts, truncated, last_alone)
    df = df.with_columns(counts.get_columns())
    if truncated:
        new = pl.Series("_cut", [truncated[i][0] if i in truncated else None for i in range(df.height)],
                        dtype=df.schema[C.MESSAGES])
        df = df.with_columns(
            pl.when(pl.col(C.TRUNCATED_TURNS) > 0).then(new).otherwise(pl.col(C.MESSAGES)).alias(C.MESSAGES)
        )

    fits = pl.col(C.N_TOKENS) <= limit
    if cfg.policy in ("reject", "truncate"):
        detail = pl.format(
            "{} tokens > {}-token context of {}", pl.col(C.N_TOKENS), pl.lit(limit), pl.lit(tok.profile.name)
        )
        if cfg.policy == "truncate":
            alone = pl.format("; its last exchange alone is {} tokens", pl.col("_last_alone"))
            detail = detail + (
                pl.when(pl.col("_last_alone") == -1)
                .then(pl.lit("; it fits only by dropping every trained exchange"))
                .when(pl.col("_last_alone").is_not_null())
                .then(alone)
                .otherwise(pl.lit("; it is a single exchange"))
            )
        df = with_reject(df, ~fits, OVER_BUDGET, detail)
    df = with_reject(df, pl.col(C.N_ASSISTANT_TOKENS) == 0, NO_TRAINABLE, "no assistant token is trained")
    df = with_reject(df, pl.col("_error").is_not_null(), TEMPLATE_ERROR, pl.col("_error"))

    _summarise(df, ctx, cfg, tok, n_over=len(over), n_truncated=len(truncated))
    ctx.manifest[NAME] = _manifest(tok, cfg.policy)
    ctx.manifest[NAME].update(_write_template(ctx, tok))
    return df.drop("_error", "_last_alone")


def _write_template(ctx: StageContext, tok) -> dict:
    """OUT/chat_template.jinja: the chat template that renders what this stage counted, for the trainer
    and for inference; returns what manifest.json says of it."""
    from curator.tokenize_chat import has_generation_markers

    template = tok.chat_template
    if not template:
        return {"chat_template": None, "chat_template_note": f"profile {tok.profile.name} has no chat template"}
    ctx.artifacts[TEMPLATE_FILE] = template.encode("utf-8")
    info = {"chat_template": TEMPLATE_FILE}
    if not has_generation_markers(template):
        info["chat_template_note"] = (
            "the model's own template: no {% generation %} markers, so apply_chat_template gives no "
            "assistant mask (TRL's assistant_only_loss patches or refuses it)"
        )
    return info


def _cost(ctx: StageContext, cfg: Config, tok, seen: int, trained: int) -> dict:
    from curator.cost import estimate_cost, load_prices

    return estimate_cost(
        tokens_seen=seen,
        tokens_trained=trained,
        epochs=cfg.epochs,
        prices=load_prices(cfg.prices_file),
        n_params=cfg.n_params or tok.profile.n_params,
        throughput=cfg.throughput,
        mfu=cfg.mfu,
    )


def _summarise(df: pl.DataFrame, ctx: StageContext, cfg: Config, tok, n_over: int, n_truncated: int) -> None:
    reasons = pl.col(C.REJECT_REASONS)
    stats = df.select(
        pl.len().alias("examples"),
        pl.col(C.N_TOKENS).sum().alias("tokens_seen"),
        pl.col(C.N_ASSISTANT_TOKENS).sum().alias("tokens_trained"),
        pl.col(C.N_TOKENS).max().alias("max_tokens"),
        pl.col(C.N_TOKENS).quantile(0.5, "nearest").alias("p50_tokens"),
        pl.col(C.N_TOKENS).quantile(0.99, "nearest").alias("p99_tokens"),
        reasons.list.contains(pl.lit(OVER_BUDGET)).sum().alias("rejected_over_budget"),
        reasons.list.contains(pl.lit(NO_TRAINABLE)).sum().alias("rejected_no_trainable"),
        reasons.list.contains(pl.lit(TEMPLATE_ERROR)).sum().alias("rejected_template_error"),
        pl.col(C.TRUNCATED_TURNS).sum().alias(C.TRUNCATED_TURNS),
    ).row(0, named=True)
    kept = df.filter(C.alive()).select(pl.col(C.N_TOKENS).sum(), pl.col(C.N_ASSISTANT_TOKENS).sum()).row(0)
    seen, trained = int(kept[0] or 0), int(kept[1] or 0)
    ctx.summaries[NAME] = {
        "model": tok.profile.name,
        "chat_format": tok.profile.chat_format,
        "context_length": tok.profile.context_length,
        "policy": cfg.policy,
        **{k: (0 if v is None else int(v)) for k, v in stats.items()},
        "over_budget": n_over,
        "truncated_examples": n_truncated,
        "kept_examples": int(df.filter(C.alive()).height),
        "kept_tokens_seen": seen,
        "kept_tokens_trained": trained,
        "cost": _cost(ctx, cfg, tok, seen, trained),
    }


def merge_summary(out: pl.DataFrame, partials: list[dict], ctx: StageContext) -> dict:
    """The run's summary from the token columns of every row the stage saw (percentiles need them
    all); the examples over budget before truncation are counted by each batch and summed."""
    cfg: Config = ctx.config.tokens
    n_over = sum(int(p.get("over_budget") or 0) for p in partials)
    n_truncated = sum(int(p.get("truncated_examples") or 0) for p in partials)
    _summarise(out, ctx, cfg, _tokenizer(cfg), n_over=n_over, n_truncated=n_truncated)
    return ctx.summaries[NAME]


def _manifest(tok, policy: str) -> dict:
    """The tokenization part of manifest.json (curator.manifest.Tokenization): what the trainer reads to
    tokenize as this stage counted, and the budget the data was checked against."""
    import importlib.metadata as md

    info = {
        "model": tok.profile.name,
        "chat_format": tok.profile.chat_format,
        "context_length": tok.profile.context_length,
        "policy": policy,
        "tokenizers": md.version("tokenizers"),
    }
    if tok.profile.tokenizer_path is None and tok.profile.chat_format == "mistral-v1":
        from curator.tokenize_chat import mistral_v1_model_file

        path = mistral_v1_model_file()
        info["tokenizer_file"] = f"mistral_common/data/{path.name}"
        info["tokenizer_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
        info["mistral_common"] = md.version("mistral-common")
    else:  # absolute: the trainer reads it from wherever it runs
        info["tokenizer_path"] = os.path.abspath(tok.profile.tokenizer_path)
    return info


def gates(kept_df: pl.DataFrame, ctx: StageContext) -> list[Gate]:
    """Token budget: every kept example fits the context (value = the longest kept example).

    Also records the cost estimate of the final kept set (later stages drop more rows than this
    stage saw) in the report, as summaries["tokens"]["cost_kept"].
    """
    cfg: Config = ctx.config.tokens
    tok = _tokenizer(cfg)
    limit = tok.profile.context_length
    if C.N_TOKENS not in kept_df.columns:
        return []
    n = kept_df.height
    longest = int(kept_df.get_column(C.N_TOKENS).max() or 0) if n else 0
    n_over = int((kept_df.get_column(C.N_TOKENS) > limit).sum()) if n else 0
    passed = n_over == 0
    if passed:
        message = f"all {n:,} kept examples fit the {limit:,}-token context (longest {longest:,}, {limit - longest:,} spare)"
    else:
        message = f"{n_over:,} of {n:,} kept examples exceed the {limit:,}-token context (longest {longest:,})"
    if NAME in ctx.summaries and n:
        seen = int(kept_df.get_column(C.N_TOKENS).sum())
        trained = int(kept_df.get_column(C.N_ASSISTANT_TOKENS).sum())
        ctx.summaries[NAME]["cost_kept"] = _cost(ctx, cfg, tok, seen, trained)
    return [Gate(name="tokens.within_context", passed=passed, value=float(longest), threshold=float(limit), message=message)]
