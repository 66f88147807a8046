"""A side-by-side sheet for human evaluation: base vs fine-tuned answers on a fixed sample of val prompts.

One self-contained HTML file (no scripts, no external assets): for each sampled val conversation, the prompt
turns, the reference answer from the data, the base model's answer (adapter disabled with peft's
`disable_adapter()`) and the fine-tuned answer, both greedy, so a reviewer can judge them next to each other.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from finetune.data import SplitRecord, prompt_and_reference, sample_indices
from finetune.distributed import SINGLE, Ranks, share_size
from finetune.evaluate import generate

if TYPE_CHECKING:
    from finetune.progress import RunProgress

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#222}
table{border-collapse:collapse;width:100%;table-layout:fixed}
th,td{border:1px solid #ccc;padding:.5rem;vertical-align:top;text-align:left}
th{background:#f3f3f3}
pre{white-space:pre-wrap;word-wrap:break-word;margin:0;font-size:.85rem}
.role{font-weight:600;color:#555}
"""


def render_compare_sheet(rows: Sequence[dict], title: str) -> str:
    """HTML for rows of {ref, prompt (list of messages), reference, base, finetuned}; every text is escaped."""
    out = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>{html.escape(title)}</title>",
        f"<style>{_STYLE}</style></head><body>", f"<h1>{html.escape(title)}</h1>",
        f"<p>{len(rows)} val prompts; answers are greedy. Judge each row: which answer is better?</p>",
        "<table><thead><tr><th>#</th><th>prompt</th><th>reference</th><th>base</th><th>fine-tuned</th></tr></thead><tbody>",
    ]
    for n, row in enumerate(rows, start=1):
        prompt = "".join(
            f'<div><span class="role">{html.escape(m["role"])}</span><pre>{html.escape(str(m.get("content") or ""))}</pre></div>'
            for m in row["prompt"]
        )
        out.append(
            f"<tr><td>{n}<br><small>{html.escape(row['ref'])}</small></td><td>{prompt}</td>"
            f"<td><pre>{html.escape(row['reference'])}</pre></td><td><pre>{html.escape(row['base'])}</pre></td>"
            f"<td><pre>{html.escape(row['finetuned'])}</pre></td></tr>"
        )
    out.append("</tbody></table></body></html>")
    return "\n".join(out)


def write_compare_sheet(
    model, tokenizer, records: Sequence[SplitRecord], path: str | Path, n_samples: int, max_new_tokens: int,
    batch_size: int, seed: int, device, dtype, title: str = "Base vs fine-tuned", ranks: Ranks = SINGLE,
    progress: "RunProgress | None" = None,
) -> Path:
    """Generate both answers for a fixed sample of val records and write the sheet to `path`.

    Under several processes each generates its share and rank 0 writes the file; `progress` gets a
    `compare` bar counting the answers.
    """
    from finetune.progress import RunProgress

    chosen = []
    for i in sample_indices(len(records), n_samples, seed):
        item = prompt_and_reference(records[i], tokenizer)
        if item is not None:
            chosen.append((records[i], item))
    prompts = [item.ids for _, item in chosen]
    progress = progress or RunProgress(enabled=False)
    with progress.task("compare", 2 * share_size(len(prompts), batch_size, ranks)) as advance:
        finetuned = generate(model, prompts, tokenizer, max_new_tokens, batch_size, device, dtype, ranks, advance)
        with model.disable_adapter():
            base = generate(model, prompts, tokenizer, max_new_tokens, batch_size, device, dtype, ranks, advance)
    rows = [
        # the prompt shown is the messages the model was given: those before the reference turn
        {"ref": record.ref, "prompt": record.messages[: item.turn], "reference": item.reference, "base": b, "finetuned": f}
        for (record, item), b, f in zip(chosen, base, finetuned)
    ]
    path = Path(path)
    if ranks.main:
        path.write_text(render_compare_sheet(rows, title), encoding="utf-8")
    return path
