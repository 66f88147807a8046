"""Evaluation on val: streaming perplexity over assistant tokens, and BLEU of generations (sacrebleu).

Perplexity is exp(sum of token cross-entropies / number of trained tokens) over the whole val split,
accumulated batch by batch in float64, so it never holds more than one micro-batch of activations and equals
the perplexity of one big batch. Only assistant tokens and their end-of-sequence token count (the same mask
as training). BLEU is sacrebleu's corpus BLEU (Post 2018, "A Call for Clarity in Reporting BLEU Scores") of
greedy generations against the last trained assistant turn (weight not 0) of a fixed, seeded sample of val
records, prompted with the conversation before that turn (finetune.data.prompt_and_reference, which the
comparison sheet uses too): the same prompts at every evaluation, so the numbers of one run are comparable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from finetune import modeling
from finetune.data import Example, collate, iter_chunks


@dataclass
class PerplexityResult:
    loss: float  # mean cross-entropy (nats) per trained token
    perplexity: float
    n_tokens: int


@torch.no_grad()
def streaming_perplexity(
    model, examples: Sequence[Example], rows: Sequence[Sequence[int]], rows_per_batch: int, pad_id: int,
    chunk_tokens: int, device: torch.device, dtype: torch.dtype,
) -> PerplexityResult:
    was_training = model.training
    model.eval()
    total = 0.0
    count = 0
    for batch_rows in iter_chunks(list(rows), rows_per_batch):
        batch = collate(examples, batch_rows, pad_id)
        with modeling.autocast_context(device, dtype):
            s, n = modeling.loss_sum(model, batch, chunk_tokens)
        total += float(s)
        count += n
    model.train(was_training)
    loss = total / count if count else float("nan")
    return PerplexityResult(loss=loss, perplexity=math.exp(loss) if count else float("nan"), n_tokens=count)


@torch.no_grad()
def generate(
    model, prompts: Sequence[Sequence[int]], tokenizer, max_new_tokens: int, batch_size: int,
    device: torch.device, dtype: torch.dtype,
) -> list[str]:
    """Greedy answers for token-id prompts, batched with left padding; decoded up to end-of-sequence."""
    was_training = model.training
    model.eval()
    answers: list[str] = []
    for chunk in iter_chunks(list(prompts), batch_size):
        width = max(len(p) for p in chunk)
        ids = torch.full((len(chunk), width), tokenizer.pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for b, p in enumerate(chunk):
            ids[b, width - len(p) :] = torch.tensor(p, dtype=torch.long)
            mask[b, width - len(p) :] = 1
        with modeling.autocast_context(device, dtype):
            out = model.generate(
                input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=max_new_tokens,
                do_sample=False, eos_token_id=tokenizer.eos_id, pad_token_id=tokenizer.pad_id, use_cache=True,
            )
        for row in out[:, width:].tolist():
            if tokenizer.eos_id in row:
                row = row[: row.index(tokenizer.eos_id)]
            answers.append(tokenizer.decode(row).strip())
    model.train(was_training)
    return answers


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    import sacrebleu

    if not hypotheses:
        return float("nan")
    return float(sacrebleu.corpus_bleu(list(hypotheses), [list(references)]).score)
