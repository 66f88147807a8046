"""Secrets and PII: find API keys, tokens, private keys, e-mail addresses and phone numbers, then
reject, redact or flag each kind as its policy says.

Reads: `messages` (every turn's `content`, `tool_calls` and `tool_call_id`), `meta`, `tools`.
Writes: `secret_findings` List(Struct{kind Utf8, action Utf8, turn Int32}), one entry per kind per
turn where it was found (`turn` is the 0-based message index; null for `meta`). Under `redact`,
`messages` (and `meta`) are rewritten: each match becomes a typed placeholder such as
`[REDACTED:aws_access_key]`. Under `reject`, the row gets reason `secrets.<kind>`. Under `flag`, the
text is kept and only the finding is recorded. A secret therefore reaches train.jsonl or val.jsonl
only when its policy is `flag`: after redaction each redacted row is scanned again, and one that
still holds a kind under `redact` is rejected (`secrets.redaction_incomplete`) rather than kept.
ctx.summaries["secrets"] counts rows per kind and action.

`meta` and `tool_calls` hold JSON text. They are scanned and redacted on their decoded string
values, not on the JSON text: escapes (`\\"`, `\\n`, a tool call's arguments encoded twice) would
hide a secret from a pattern, and a pattern matching across an escape would break the JSON. A string
value under a key is scanned as `key: value`, so a name in the key still marks the value (an AWS
secret under "aws_secret_access_key"); the JSON is written back in the pipeline's own encoding.

The patterns follow the rules of gitleaks (github.com/gitleaks/gitleaks, config/gitleaks.toml:
aws-access-token, github-pat / github-fine-grained-pat / github-oauth / github-app-token,
openai-api-key, slack-bot-token / slack-user-token / slack-webhook-url, private-key, jwt) and the
key formats their vendors document. They run as Rust regexes inside Polars over all turns at once.
E-mail addresses at the domains reserved for documentation (RFC 2606 and RFC 6761: example.com/.net/
.org, .example, .test, .invalid, .localhost) are not personal data and are not reported; when a turn
also holds a real address, redaction rewrites both. Phone numbers are the formatted ones: a
10-digit North American number with separators ((613) 995-0253, 613.995.0253), or a "+"-prefixed
international number with separators; bare digit runs are not taken, since math and code are full
of them.
"""

from __future__ import annotations

import json
import re
from typing import Iterator, Literal

import polars as pl

from curator import columns as C
from curator.columns import MESSAGES, META, TOOLS, with_reject
from curator.secret_patterns import DETECTORS, INVISIBLE, WITHHELD, Detector, _EMAIL  # noqa: F401 (Detector: re-exported)
from curator.stages.base import StageContext
from curator.stage_configs import SecretsConfig as Config, SecretsPolicy as Policy  # noqa: F401  (re-exported: the stage's settings)

NAME = "secrets"
FINDING = pl.Struct({"kind": pl.Utf8, "action": pl.Utf8, "turn": pl.Int32})

Action = Literal["reject", "redact", "flag"]


KINDS = tuple(DETECTORS)


def _real_emails(text: pl.Expr, ignore: list[str]) -> pl.Expr:
    """Number of e-mail addresses in `text` outside the ignored domains."""
    found = text.str.extract_all(_EMAIL)
    if not ignore:
        return found.list.len()
    alternation = "|".join(d.strip(".").replace(".", r"\.") for d in ignore)
    reserved = r"(?i)@(?:[^@]*\.)?(?:" + alternation + r")$"
    return found.list.eval(pl.element().filter(~pl.element().str.contains(reserved))).list.len()


def _visible(text: pl.Expr) -> pl.Expr:
    return text.str.replace_all(INVISIBLE, "")


def _hit(text: pl.Expr, kind: str, cfg: Config) -> pl.Expr:
    """True where `kind` is in `text`, read without its invisible characters."""
    text = _visible(text)
    if kind == "email":
        return (_real_emails(text, cfg.ignore_email_domains) > 0).fill_null(False)
    return text.str.contains(DETECTORS[kind].pattern).fill_null(False)


def _redact_hits(text: pl.Expr, kinds: list[str], cfg: Config) -> pl.Expr:
    """`text` with each of `kinds` redacted where it is found (see `_redact_series`)."""
    return text.map_batches(lambda s: _redact_series(s, kinds, cfg), return_dtype=pl.Utf8)


def _redact_series(texts: pl.Series, kinds: list[str], cfg: Config) -> pl.Series:
    """`texts` with each of `kinds` redacted where it is found.

    A text keeps its invisible characters (a zero-width joiner in an emoji, a ZWNJ in Persian)
    unless a secret is only found through them: then they are removed and the secret redacted.
    Kind by kind, materialised in between: one nested expression would grow with every kind.
    """
    frame = texts.cast(pl.Utf8).rename("t").to_frame()
    t, plain = pl.col("t"), pl.col("p")
    for kind in kinds:
        frame = frame.with_columns(redact(t, [kind]).alias("p"), _hit(t, kind, cfg).alias("h")).select(
            pl.when(~pl.col("h")).then(t)
            .when(_hit(plain, kind, cfg)).then(redact(_visible(t), [kind]))
            .otherwise(plain)
            .alias("t")
        )
    return frame.get_column("t").rename(texts.name)


def _leaves(value, out: list[tuple[str, int]]) -> None:
    """The string values in `value` (decoded JSON), in walk order, as (text, prefix length).

    Every dict key is a leaf of its own, followed by its value; a string under a key is given as
    "key: value" (prefix = len("key: ")), so patterns that need the name (aws_secret_key) see it;
    keys, list items and a bare string have no prefix.
    """
    if isinstance(value, dict):
        for key, item in value.items():
            out.append((key, 0))  # a key can hold a secret too ({"AKIA...": 1})
            if isinstance(item, str):
                out.append((f"{key}: {item}", len(key) + 2))
            else:
                _leaves(item, out)
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, str):
                out.append((item, 0))
            else:
                _leaves(item, out)
    elif isinstance(value, str):
        out.append((value, 0))


def _replace_leaves(value, new: Iterator[str]):
    """`value` with its string values replaced, in `_leaves` order."""
    if isinstance(value, dict):
        # keys before values, as `_leaves` lists them (a dict display evaluates the key first)
        return {next(new): next(new) if isinstance(v, str) else _replace_leaves(v, new) for v in value.values()}
    if isinstance(value, list):
        return [next(new) if isinstance(v, str) else _replace_leaves(v, new) for v in value]
    if isinstance(value, str):
        return next(new)
    return value


def _json_view(text: str | None) -> str | None:
    """What the patterns scan in a JSON column: its keys and decoded string values, one per line.

    The JSON text itself serves when it holds no backslash (no escape can hide or split a secret).
    """
    if text is None or "\\" not in text:
        return text
    leaves: list[tuple[str, int]] = []
    _leaves(json.loads(text), leaves)
    return "\n".join(leaf for leaf, _ in leaves)


def _json_views(col: pl.Expr) -> pl.Expr:
    return col.map_elements(_json_view, return_dtype=pl.Utf8, skip_nulls=True)


def find_secrets(df: pl.DataFrame, cfg: Config) -> pl.Series:
    """`secret_findings` for each row of `df`, in order."""
    policy = cfg.policy.model_dump()
    turns = (
        df.select(pl.int_range(pl.len(), dtype=pl.UInt32).alias("__r"), pl.col(MESSAGES))
        .with_columns(pl.int_ranges(pl.col(MESSAGES).list.len(), dtype=pl.Int32).alias("__turn"))
        .explode(MESSAGES, "__turn")
        .select(
            "__r",
            "__turn",
            pl.col(MESSAGES).struct.field("content").alias("__content"),
            pl.col(MESSAGES).struct.field("tool_calls").alias("__tools"),
            pl.col(MESSAGES).struct.field("tool_call_id").alias("__call_id"),
        )
        .filter(pl.col("__turn").is_not_null())
        .with_columns(_json_views(pl.col("__tools")))
    )
    hits = turns.select(
        "__r",
        "__turn",
        *[
            (_hit(pl.col("__content"), k, cfg) | _hit(pl.col("__tools"), k, cfg) | _hit(pl.col("__call_id"), k, cfg))
            .alias(k)
            for k in KINDS
        ],
    )
    for col in _record_json_columns(df):
        record = df.select(
            pl.int_range(pl.len(), dtype=pl.UInt32).alias("__r"),
            pl.lit(None, dtype=pl.Int32).alias("__turn"),
            _json_views(pl.col(col)).alias("__json"),
        ).select("__r", "__turn", *[_hit(pl.col("__json"), k, cfg).alias(k) for k in KINDS])
        hits = pl.concat([hits, record])
    found = (
        hits.unpivot(index=["__r", "__turn"], on=list(KINDS), variable_name="kind", value_name="hit")
        .filter(pl.col("hit"))
        .with_columns(pl.col("kind").replace_strict(policy, return_dtype=pl.Utf8).alias("action"))
        .sort("__r", pl.col("__turn"), "kind", nulls_last=True)
        .group_by("__r", maintain_order=True)
        .agg(pl.struct("kind", "action", pl.col("__turn").alias("turn")).alias(C.SECRET_FINDINGS))
    )
    return (
        pl.DataFrame({"__r": pl.int_range(df.height, dtype=pl.UInt32, eager=True)})
        .join(found, on="__r", how="left", maintain_order="left")
        .select(pl.col(C.SECRET_FINDINGS).fill_null(pl.lit([], dtype=pl.List(FINDING))).cast(pl.List(FINDING)))
        .to_series()
    )


def redact(text: pl.Expr, kinds: list[str]) -> pl.Expr:
    """`text` with every match of `kinds` replaced by its placeholder."""
    for kind in kinds:
        d = DETECTORS[kind]
        text = text.str.replace_all(d.redact_pattern or d.pattern, d.replacement or d.placeholder)
    return text


def _kinds_with(action: str) -> pl.Expr:
    return pl.col(C.SECRET_FINDINGS).list.eval(
        pl.element().filter(pl.element().struct.field("action") == action).struct.field("kind")
    ).list.unique(maintain_order=True)


def run(df: pl.DataFrame, ctx: StageContext) -> pl.DataFrame:
    cfg: Config = ctx.config.secrets
    policy = cfg.policy.model_dump()
    with ctx.progress.task("secrets", total=1) as advance:
        out = df.with_columns(find_secrets(df, cfg).alias(C.SECRET_FINDINGS))
        advance(1)
    redact_kinds = [k for k in KINDS if policy[k] == "redact"]
    if redact_kinds:
        out = _apply_redaction(out, redact_kinds, cfg)
        out = _reject_unredacted(out, cfg, redact_kinds)
    for kind in KINDS:
        if policy[kind] != "reject":
            continue
        found = pl.col(C.SECRET_FINDINGS).list.eval(pl.element().struct.field("kind") == kind).list.any()
        where = pl.col(C.SECRET_FINDINGS).list.eval(
            pl.element().filter(pl.element().struct.field("kind") == kind).struct.field("turn").cast(pl.Utf8).fill_null("meta")
        ).list.join(", ")
        out = with_reject(out, found, f"secrets.{kind}", pl.format("{} found in turn {}", pl.lit(kind), where))
    ctx.summaries[NAME] = _summary(out, policy)
    return out


def _apply_redaction(df: pl.DataFrame, redact_kinds: list[str], cfg: Config) -> pl.DataFrame:
    """Rewrite `messages` (and `meta`) of the rows with a `redact` finding; other rows untouched.

    Only the kinds found in a row are replaced in it, so a pattern never rewrites a row the
    detector did not report.
    """
    kinds_in_row = _kinds_with("redact")
    mask = df.select((kinds_in_row.list.len() > 0).alias("m")).to_series()
    if not mask.any():
        return df
    idx = mask.arg_true()
    sub = df[idx]
    parts = []
    # rows differ in which kinds they hold: redact group by group
    sub = sub.with_columns(kinds_in_row.list.join(",").alias("__kinds"), pl.Series("__i", idx))
    for (key,), group in sub.group_by(["__kinds"], maintain_order=True):
        kinds = [k for k in str(key).split(",") if k in redact_kinds]
        group = group.with_columns(
            pl.col(MESSAGES).list.eval(pl.element().struct.with_fields(
                # a call id is redacted as the same id inside tool_calls is, so the pair still matches
                content=_redact_hits(pl.field("content"), kinds, cfg),
                tool_call_id=_redact_hits(pl.field("tool_call_id"), kinds, cfg),
            ))
            .cast(df.schema[MESSAGES])
        )
        messages = group.get_column(MESSAGES).to_list()
        calls = [m["tool_calls"] for row in messages for m in row]
        new_calls = iter(_redact_json(calls, kinds, cfg, compact=False))
        for row in messages:
            for m in row:
                m["tool_calls"] = next(new_calls)
        group = group.with_columns(pl.Series(MESSAGES, messages, dtype=df.schema[MESSAGES]))
        for col in _record_json_columns(group):
            texts = group.get_column(col).to_list()
            group = group.with_columns(pl.Series(col, _redact_json(texts, kinds, cfg, compact=col == META), dtype=pl.Utf8))
        parts.append(group)
    redacted = pl.concat(parts).sort("__i")
    record_cols = _record_json_columns(df)
    full = df.with_columns(pl.int_range(pl.len(), dtype=redacted.schema["__i"]).alias("__i"))
    full = full.join(redacted.select("__i", MESSAGES, *record_cols), on="__i", how="left",
                     suffix="__red", maintain_order="left")
    replace = [pl.coalesce(pl.col(f"{MESSAGES}__red"), pl.col(MESSAGES)).alias(MESSAGES)]
    replace += [
        pl.when(pl.col("__i").is_in(idx.implode())).then(pl.col(f"{col}__red")).otherwise(pl.col(col)).alias(col)
        for col in record_cols
    ]
    return full.with_columns(replace).select(df.columns)


def _record_json_columns(df: pl.DataFrame) -> list[str]:
    """The record-level JSON columns present: meta, and the tool definitions (a key in a description)."""
    return [col for col in (META, TOOLS) if col in df.columns]


def _reject_unredacted(df: pl.DataFrame, cfg: Config, redact_kinds: list[str]) -> pl.DataFrame:
    """Scan the redacted rows again; one still holding a kind under `redact` is rejected
    (`secrets.redaction_incomplete`), so such a secret never reaches the split."""
    mask = df.select((_kinds_with("redact").list.len() > 0).alias("m")).to_series()
    if not mask.any():
        return df
    idx = mask.arg_true()
    again = find_secrets(df[idx], cfg)
    left = again.list.eval(pl.element().filter(pl.element().struct.field("kind").is_in(redact_kinds)))
    detail = left.list.eval(
        pl.format("{} still found after redaction in turn {}", pl.element().struct.field("kind"),
                  pl.element().struct.field("turn").cast(pl.Utf8).fill_null("meta"))
    ).list.join("; ")
    leftovers = pl.DataFrame({"__i": idx, "__left": left.list.len() > 0, "__detail": detail})
    full = df.with_row_index("__i").join(leftovers, on="__i", how="left", maintain_order="left")
    full = with_reject(full, pl.col("__left").fill_null(False), "secrets.redaction_incomplete", pl.col("__detail"))
    return full.select(df.columns)


def _redact_objects(objs: list, kinds: list[str], cfg: Config) -> list:
    """Decoded JSON values with `kinds` redacted in their keys and string values (see the module
    docstring); a value in which nothing changes is returned as the same object."""
    leaves: list[tuple[str, int]] = []
    spans = []
    for obj in objs:
        start = len(leaves)
        if obj is not None:
            _leaves(obj, leaves)
        spans.append((start, len(leaves)))
    if not leaves:
        return list(objs)
    # a lone surrogate (an escape such as "\\ud800" in a rejected line) cannot enter polars: shown as "?"
    leaves = [(t.encode("utf-8", "replace").decode("utf-8"), p) for t, p in leaves]
    done = pl.DataFrame({"ctx": [t for t, _ in leaves], "bare": [t[p:] for t, p in leaves]}).select(
        _redact_hits(pl.col("ctx"), kinds, cfg).alias("ctx"), _redact_hits(pl.col("bare"), kinds, cfg).alias("bare")
    )
    values = []
    for (text, p), ctx, bare in zip(leaves, done.get_column("ctx"), done.get_column("bare")):
        # the value with its key as context, unless a match reached into the key: then the value alone
        values.append(ctx[p:] if ctx[:p] == text[:p] else bare)
    out = []
    for obj, (start, end) in zip(objs, spans):
        if obj is None or all(values[i] == leaves[i][0][leaves[i][1]:] for i in range(start, end)):
            out.append(obj)
        else:
            out.append(_replace_leaves(obj, iter(values[start:end])))
    return out


def _redact_json(texts: list[str | None], kinds: list[str], cfg: Config, compact: bool) -> list[str | None]:
    """JSON texts with `kinds` redacted in their keys and string values.

    A text none of whose values changes is returned as it is; a changed one is written back as the
    validate stage wrote it (`compact`: meta, sorted keys and compact separators; else tool_calls,
    keys in their canonical order and json's default separators, curator/tool_use.py).
    """
    objs = [None if t is None else json.loads(t) for t in texts]

    def encode(value) -> str:
        if compact:
            return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
        return json.dumps(value, ensure_ascii=False)

    return [text if new is obj else encode(new) for text, obj, new in zip(texts, objs, _redact_objects(objs, kinds, cfg))]


# --- what every output but the split shows ------------------------------------------------------
# Reports, annotations, the review sheet and (when asked) rejects.jsonl show text redacted for every
# kind whatever its policy, and for every row whatever its reject reason: a row rejected before this
# stage ran (bad JSON, schema, exact duplicate) was never scanned by it.

_JSON_ESCAPE = re.compile(r"\\(u[0-9a-fA-F]{4}|.)", re.DOTALL)
_ESCAPED = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f"}


def _unescape(text: str) -> str:
    """`text` with JSON escapes decoded, as far as they go (a raw line need not be valid JSON)."""
    def one(m: re.Match) -> str:
        esc = m.group(1)
        if esc[0] == "u":
            code = int(esc[1:], 16)
            return "?" if 0xD800 <= code <= 0xDFFF else chr(code)
        return _ESCAPED.get(esc, esc)

    return _JSON_ESCAPE.sub(one, text)


def redact_for_display(texts: list[str | None], cfg: Config | None = None) -> list[str | None]:
    """`texts` with every kind redacted; one in which a kind is still found once its JSON escapes
    are decoded (a key written as \\u0041KIA...) is withheld whole."""
    cfg = cfg or Config()
    red = (
        pl.DataFrame({"t": texts}, schema={"t": pl.Utf8})
        .select(_redact_hits(pl.col("t"), list(KINDS), cfg).alias("t"))
        .get_column("t")
        .to_list()
    )
    views = [_unescape(t) if t is not None and "\\" in t else t for t in red]
    left = (
        pl.DataFrame({"v": views}, schema={"v": pl.Utf8})
        .select(pl.any_horizontal(*[_hit(pl.col("v"), k, cfg) for k in KINDS]).alias("left"))
        .get_column("left")
        .to_list()
    )
    return [WITHHELD if hit else t for t, hit in zip(red, left)]


def redact_values_for_display(values: list, cfg: Config | None = None) -> list:
    """Decoded JSON values (records) with every kind redacted in their keys and strings."""
    return _redact_objects(list(values), list(KINDS), cfg or Config())


def redact_series_for_display(texts: pl.Series, cfg: Config | None = None) -> pl.Series:
    """A Utf8 series with every kind redacted where it is found."""
    return _redact_series(texts, list(KINDS), cfg or Config())


def redact_json_column_for_display(texts: list[str | None], cfg: Config | None = None) -> list[str | None]:
    """JSON texts (meta) with every kind redacted in keys and values; rows without a finding untouched."""
    cfg = cfg or Config()
    views = pl.DataFrame({"t": texts}, schema={"t": pl.Utf8}).select(_json_views(pl.col("t")))
    found = views.select(pl.any_horizontal(*[_hit(pl.col("t"), k, cfg) for k in KINDS])).to_series()
    idx = found.arg_true().to_list()
    if not idx:
        return list(texts)
    out = list(texts)
    for i, new in zip(idx, _redact_json([texts[i] for i in idx], list(KINDS), cfg, compact=True)):
        out[i] = new
    return out


def _summary(df: pl.DataFrame, policy: dict[str, str]) -> dict:
    per_kind = (
        df.select(pl.col(C.SECRET_FINDINGS))
        .with_row_index("__r")
        .explode(C.SECRET_FINDINGS)
        .drop_nulls(C.SECRET_FINDINGS)
        .select("__r", pl.col(C.SECRET_FINDINGS).struct.field("kind"))
        .unique()
        .group_by("kind")
        .len()
    )
    counts = dict(per_kind.iter_rows()) if per_kind.height else {}
    return {
        "rows": df.height,
        "rows_with_findings": int(df.select((pl.col(C.SECRET_FINDINGS).list.len() > 0).sum()).item()) if df.height else 0,
        "kinds": {k: {"rows": int(counts.get(k, 0)), "action": policy[k]} for k in KINDS},
    }


def merge_summary(out: pl.DataFrame, partials: list[dict], ctx: StageContext) -> dict:
    """The run's summary from `secret_findings` of every row the stage saw, in whatever batches."""
    return _summary(out, ctx.config.secrets.policy.model_dump())
