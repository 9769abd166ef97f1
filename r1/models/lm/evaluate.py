"""Language-model evaluation: loss, perplexity, bits per character, early-exit cost and quality,
and BLEU (sacrebleu) / ROUGE (rouge-score) of generated answers for instruction data."""
from __future__ import annotations

import math

import torch.nn.functional as F

from r1.models.lm.generate import default_exit_threshold, generate_stream

GEN_EVAL_SAMPLES = 16  # instruction pairs answered per evaluation for BLEU/ROUGE


def bleu(hypotheses: list[str], references: list[str]) -> float:
    """Corpus BLEU (sacrebleu, 0-100) of one reference per hypothesis."""
    import sacrebleu
    return float(sacrebleu.corpus_bleu(hypotheses, [references]).score)


def rouge(hypotheses: list[str], references: list[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F-measures (rouge-score, 0-1)."""
    from rouge_score import rouge_scorer
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    tot = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    for h, r in zip(hypotheses, references):
        for k, s in scorer.score(r, h).items():
            tot[k] += s.fmeasure
    return {k: v / max(1, len(hypotheses)) for k, v in tot.items()}


def answer_samples(model, samples, tokenizer, eos_id, device) -> tuple[list[str], list[str]]:
    """Greedy answers for (x, y) instruction samples: the prompt is x up to the first response
    target, the reference is the response (y != -100, end token removed)."""
    hyps, refs = [], []
    for x, y in samples:
        keep = (y != -100).nonzero()
        if not len(keep) or int(keep[0]) == 0:  # no prompt (e.g. a replayed or test LM window): nothing to answer
            continue
        r0 = int(keep[0])
        ref_ids = [int(t) for t in y[y != -100] if int(t) != eos_id]
        prompt = x[: r0 + 1].unsqueeze(0).to(device)
        out = [int(t) for t in generate_stream(model, prompt, len(ref_ids) + 8, temperature=0.0, eos_id=eos_id)]
        hyps.append(tokenizer.decode([t for t in out if t != eos_id]))
        refs.append(tokenizer.decode(ref_ids))
    return hyps, refs


def evaluate_lm(model, loader, meta: dict, device, out_dir=None) -> dict[str, float]:
    """Token-weighted cross-entropy over every target != -100 (`loss`), `ppl` = exp(loss),
    `bpc` = loss / ln 2 / chars per token; for models with exit heads, the same loss with early
    exit at the model's default threshold (`exit_loss`) and blocks run per token (`exit_layers`);
    for instruction data, `bleu` and `rouge1/2/L` of greedy answers on the first samples."""
    net = getattr(model, "module", model)
    thr = default_exit_threshold(net)
    nll = exit_nll = layers = 0.0
    n_tok = 0
    samples = []
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        valid = y != -100
        n_tok += int(valid.sum())
        nll += float(F.cross_entropy(model(x).flatten(0, 1).float(), y.flatten(), ignore_index=-100, reduction="sum"))
        if thr is not None:
            logits = net(x, exit_threshold=thr)
            exit_nll += float(F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), ignore_index=-100,
                                              reduction="sum"))
            layers += float(net.last_layers_run[valid].sum())
        if meta.get("task") == "instruct" and len(samples) < GEN_EVAL_SAMPLES:
            samples += list(zip(x.cpu(), y.cpu()))[: GEN_EVAL_SAMPLES - len(samples)]
    loss = nll / max(1, n_tok)
    out = {"loss": loss, "ppl": math.exp(min(loss, 50.0)), "tokens": float(n_tok)}
    cpt = meta.get("chars_per_token") or 0.0
    if cpt > 0:
        out["bpc"] = loss / math.log(2) / cpt
    if thr is not None:
        out["exit_loss"] = exit_nll / max(1, n_tok)
        out["exit_layers"] = layers / max(1, n_tok)
        out["exit_speedup"] = net.n_layer / max(1e-9, out["exit_layers"])
    if samples and meta.get("tokenizer"):
        from r1.models.lm.tokenizer import load_tokenizer
        hyps, refs = answer_samples(net, samples, load_tokenizer(meta), meta.get("eos_id"), device)
        if hyps:
            out["bleu"] = bleu(hyps, refs)
            out.update(rouge(hyps, refs))
    return out
