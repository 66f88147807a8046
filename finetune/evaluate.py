"""Evaluation on val: streaming perplexity over assistant tokens, and BLEU of generations (sacrebleu).

Perplexity is exp(sum of token cross-entropies / number of trained tokens) over the whole val split,
accumulated batch by batch in float64, so it never holds more than one micro-batch of activations and equals
the perplexity of one big batch. Only assistant tokens and their end-of-sequence token count (the same mask
as training). BLEU is sacrebleu's corpus BLEU (Post 2018, "A Call for Clarity in Reporting BLEU Scores") of
greedy generations against the last trained assistant turn (weight not 0) of a fixed, seeded sample of val
records, prompted with the conversation before that turn (finetune.data.prompt_and_reference, which the
comparison sheet uses too): the same prompts at every evaluation, so the numbers of one run are comparable.

Under several processes (finetune.distributed) each runs its share of the batches and every process gets
the whole result, summed or listed in the order of one process. Both run eager, also when the decoder layers
are compiled (`config.compile`): no-grad forwards, and generation's KV cache and one-token decode steps, would
each need graphs of their own, and past torch's recompile limit the training graph falls back to eager too.
`advance(n)` is called as batches finish (progress bars).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from finetune import modeling
from finetune.data import Example, collate, iter_chunks
from finetune.distributed import SINGLE, Ranks, map_shared

Advance = Callable[[int], None]


def _no_advance(n: int = 1) -> None:
    pass


@dataclass
class PerplexityResult:
    loss: float  # mean cross-entropy (nats) per trained token
    perplexity: float
    n_tokens: int


def streaming_perplexity(
    model, examples: Sequence[Example], rows: Sequence[Sequence[int]], rows_per_batch: int, pad_id: int,
    chunk_tokens: int, device: torch.device, dtype: torch.dtype, ranks: Ranks = SINGLE,
    advance: Advance = _no_advance,
) -> PerplexityResult:
    batches = list(iter_chunks(list(rows), rows_per_batch))

    def loss_sums(mine: list) -> list[tuple[float, int]]:
        return _batch_loss_sums(model, examples, mine, pad_id, chunk_tokens, device, dtype, advance)

    sums = map_shared(loss_sums, batches, 1, ranks)
    total = 0.0
    for s, _ in sums:  # in batch order, as one process adds them: the same float on every process
        total += s
    count = sum(n for _, n in sums)
    loss = total / count if count else float("nan")
    return PerplexityResult(loss=loss, perplexity=math.exp(loss) if count else float("nan"), n_tokens=count)


@torch.no_grad()
@torch.compiler.set_stance("force_eager")
def _batch_loss_sums(
    model, examples: Sequence[Example], batches: Sequence[Sequence[Sequence[int]]], pad_id: int, chunk_tokens: int,
    device: torch.device, dtype: torch.dtype, advance: Advance,
) -> list[tuple[float, int]]:
    """(sum of token cross-entropies, trained tokens) of each batch of rows, in eval mode."""
    was_training = model.training
    model.eval()
    sums = []
    for batch_rows in batches:
        batch = collate(examples, batch_rows, pad_id)
        with modeling.autocast_context(device, dtype):
            s, n = modeling.loss_sum(model, batch, chunk_tokens)
        sums.append((float(s), n))
        advance(1)
    model.train(was_training)
    return sums


def generate(
    model, prompts: Sequence[Sequence[int]], tokenizer, max_new_tokens: int, batch_size: int,
    device: torch.device, dtype: torch.dtype, ranks: Ranks = SINGLE, advance: Advance = _no_advance,
) -> list[str]:
    """Greedy answers for token-id prompts, batched with left padding; decoded up to end-of-sequence."""

    def answers(mine: list) -> list[str]:
        return _generate_batches(model, mine, tokenizer, max_new_tokens, batch_size, device, dtype, advance)

    return map_shared(answers, list(prompts), batch_size, ranks)


@torch.no_grad()
@torch.compiler.set_stance("force_eager")
def _generate_batches(
    model, prompts: Sequence[Sequence[int]], tokenizer, max_new_tokens: int, batch_size: int,
    device: torch.device, dtype: torch.dtype, advance: Advance,
) -> list[str]:
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
        advance(len(chunk))
    model.train(was_training)
    return answers


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    import sacrebleu

    if not hypotheses:
        return float("nan")
    return float(sacrebleu.corpus_bleu(list(hypotheses), [list(references)]).score)
