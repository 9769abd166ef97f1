"""Language models: config classes of its models and text datasets, and the `r1 generate` command the
family adds (its section and spec: `COMMANDS`, read by `r1.models.family_commands`). No torch imports here."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from r1.command_spec import Arg, Command, Flag
from r1.config import DataConfig, ModelConfig, opt, variant
from r1.errors import ConfigError

EOT = "<|endoftext|>"
DEFAULT_TEMPLATE = "### Instruction:\n{instruction}\n\n### Response:\n"


@dataclass
class GPTConfig(ModelConfig):
    n_layer: int = opt(4, "Transformer blocks.", min=1)
    n_head: int = opt(4, "Attention heads.", min=1)
    n_embd: int = opt(128, "Embedding (channel) size; divisible by n_head.", min=8)
    block_size: int = opt(64, "Context length (tokens). 0: the data's block_size.", min=0)
    dropout: float = opt(0.0, "Dropout on embeddings, attention output and MLP.", min=0.0, max=1.0)
    bias: bool = opt(False, "Biases in Linear and LayerNorm layers (nanoGPT's default is False).")
    objective: str = opt("", "causal: next-token prediction; mlm: masked tokens, bidirectional attention (no "
                             "generation). Empty: the data's objective.", choices=("", "causal", "mlm"))

    def validate(self, prefix: str) -> None:
        if self.n_embd % self.n_head:
            raise ConfigError(f"{prefix}.n_embd: {self.n_embd} is not divisible by n_head={self.n_head}")


GPT_FLAVORS = {
    "tiny": {"n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 32},
    "small": {"n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": 64},    # nanoGPT shakespeare CPU
    "medium": {"n_layer": 6, "n_head": 6, "n_embd": 384, "block_size": 256},  # nanoGPT shakespeare GPU
    "base": {"n_layer": 12, "n_head": 12, "n_embd": 768, "block_size": 1024},  # GPT-2 124M shape
}


@dataclass
class R1LMConfig(ModelConfig):
    n_layer: int = opt(4, "Transformer blocks.", min=1)
    n_head: int = opt(4, "Attention heads.", min=1)
    n_kv_head: int = opt(0, "Key/value heads, each shared by n_head / n_kv_head query heads (grouped-query "
                            "attention: a smaller qkv matmul and KV cache). 0: n_head (plain multi-head).", min=0)
    n_embd: int = opt(128, "Embedding (channel) size; divisible by n_head.", min=8)
    block_size: int = opt(64, "Context length (tokens). 0: the data's block_size.", min=0)
    window: int = opt(16, "Keys seen by the local (sliding-window) attention branch, the token itself included.", min=1)
    pos: str = opt("rope", "Positional scheme.", choices=("rope", "learned"))
    mlp: str = opt("gelu", "Feed-forward type (same parameter count).", choices=("gelu", "swiglu"))
    dropout: float = opt(0.0, "Dropout on embeddings, attention output and MLP.", min=0.0, max=1.0)
    fusion: bool = opt(True, "Cross-layer fusion: block j-2's output enters block j (needs n_layer >= 3).")
    exit_layers: list[int] = opt([], "1-indexed blocks followed by an exit head. Empty: every block but the last.")
    exit_weight: float = opt(0.3, "Weight of the mean exit-head cross-entropy (loss key `exit`). 0: no exit loss.",
                             min=0.0)
    exit_stride: int = opt(1, "Training: the exit losses read every n-th position (the last one included); 1: all. "
                              "2 halves their cost (~6 ms of a ~115 ms step at the small flavor); in a 2,000-step "
                              "shakespeare ablation the step-time gain was within noise and val loss ended 0.02 "
                              "higher.", min=1)
    exit_threshold: float = opt(0.5, "Default inference threshold on the exit confidence (above 1.0: never exit).",
                                min=0.0, max=1.01)
    exit_thresholds: list[float] = opt([], "Per exit head thresholds (in exit_layers order), set by the calibration "
                                           "after training; when given they are the default instead of exit_threshold.")
    exit_calibrate: float = opt(0.015, "After training, choose exit_thresholds on the validation set: the most blocks "
                                       "saved whose validation loss rise stays within this budget. 0: no calibration.",
                                min=0.0)
    exit_criterion: str = opt("learned", "Exit confidence: `learned` = a light classifier per exit head predicting "
                                         "that exiting changes the prediction by less than exit_kl_tol, reading the "
                                         "state and the exit head's output; `state` = the same classifier on the "
                                         "normed state alone, so the LM head runs only where a token exits (the "
                                         "cheap check that makes early exit save wall time); `maxprob` = the exit "
                                         "head's top probability.", choices=("learned", "state", "maxprob"))
    exit_check_cost: float = opt(0.25, "Calibration's cost model: one exit check, in blocks (measured at batch 1 "
                                       "with the KV cache: `state` ~0.2-0.3 of a 128-wide block). Heads whose "
                                       "checks cost more than they save are switched off.", min=0.0)
    exit_fill_cost: float = opt(0.15, "Calibration's cost model: the keys/values of one skipped block, in blocks.",
                                min=0.0)
    exit_calibrate_batches: int = opt(4, "Validation batches the exit calibration reads (of eval_batch_size windows). "
                                         "Its cost is ~6 passes over them (one full-depth table, ~5 real early-exit "
                                         "checks): 4 x 256 windows of 64 tokens ~ 0.4M forward tokens, under 10% of "
                                         "the recipe's 2,000 x 12 x 64 training steps.", min=1)
    exit_calibrate_confidence: float = opt(0.95, "The calibration's loss budget holds with this one-sided "
                                                 "confidence: a point is accepted when its measured rise plus z "
                                                 "standard errors (over the calibration windows, evenly spaced "
                                                 "over the validation split) fits exit_calibrate. 0.5: the "
                                                 "measured rise alone.", min=0.5, max=0.999)
    exit_kl_tol: float = opt(0.04, "Exiting is `safe` (the classifier's target) when KL(final || exit) is below this.",
                             min=0.0)
    freeze_layers: int = opt(0, "Progressive unfreezing: lower blocks frozen at the start of training.", min=0)
    unfreeze_share: float = opt(0.0, "Share of the steps over which the frozen blocks are released, top first.",
                                min=0.0, max=1.0)
    objective: str = opt("", "causal: next-token prediction, causal attention; mlm: masked-token prediction, "
                             "bidirectional attention (the local branch sees |i - j| < window; no generation). "
                             "Empty: the data's objective (data.objective).", choices=("", "causal", "mlm"))
    contrastive_weight: float = opt(0.0, "Domain adaptation: weight of the `contrastive` loss, a supervised InfoNCE "
                                         "between mean-pooled sequence embeddings of current-stage and replayed "
                                         "general samples (needs data.replay and data.replay_labels=true). 0: off.",
                                    min=0.0)
    contrastive_temp: float = opt(0.1, "Temperature of the contrastive loss.", min=1e-3)

    def validate(self, prefix: str) -> None:
        if self.n_embd % self.n_head or (self.n_embd // self.n_head) % 2:
            raise ConfigError(f"{prefix}.n_embd: {self.n_embd} must split into n_head={self.n_head} even head sizes")
        if self.n_kv_head and self.n_head % self.n_kv_head:
            raise ConfigError(f"{prefix}.n_kv_head: {self.n_kv_head} does not divide n_head={self.n_head}")
        bad = [j for j in self.exit_layers if not 1 <= j < self.n_layer]
        if bad:
            raise ConfigError(f"{prefix}.exit_layers: {bad} outside 1..{self.n_layer - 1}")
        n_exits = len(set(self.exit_layers)) if self.exit_layers else self.n_layer - 1
        if self.exit_thresholds and len(self.exit_thresholds) != n_exits:
            raise ConfigError(f"{prefix}.exit_thresholds: {len(self.exit_thresholds)} values for {n_exits} exit heads")


R1LM_FLAVORS = {
    "tiny": {"n_layer": 3, "n_head": 2, "n_embd": 32, "block_size": 32, "window": 8},
    "small": {"n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": 64, "window": 16},  # <= 0.85M params at 65 chars
    "medium": {"n_layer": 6, "n_head": 6, "n_embd": 384, "block_size": 256, "window": 64},
    "base": {"n_layer": 24, "n_head": 16, "n_embd": 1024, "block_size": 1024, "window": 256},  # seed's config
}


@dataclass
class LMDataConfig(DataConfig):
    block_size: int = opt(64, "Tokens per sample (the model's context length).", min=1)
    tokenizer: str = opt("char", "Tokenizer trained on the corpus.", choices=("char", "bpe"))
    vocab_size: int = opt(1024, "BPE vocabulary size (tokenizer=bpe).", min=16)
    specials: list[str] = opt([], "Special tokens added to the vocabulary, e.g. ['<|endoftext|>'] "
                                  "(placed between documents when present).")
    tokenizer_from: str = opt("", "Reuse a tokenizer: a tokenizer .json, a model.json or a run directory. "
                                  "Empty: build one from the corpus.")
    val_fraction: float = opt(0.1, "Share held out for validation.", min=0.0, max=0.5)
    split: str = opt("tail", "tail: the last val_fraction of the token stream is validation (one long text); "
                             "docs: whole documents by content hash (no document in both).", choices=("tail", "docs"))
    train_stride: int = opt(1, "Distance between the starts of consecutive training windows.", min=1)
    dedup: str = opt("near", "Duplicate removal before the split.", choices=("none", "exact", "near"))
    dedup_threshold: float = opt(0.95, "Near-duplicate threshold on the Jaccard similarity of shingles.",
                                 min=0.0, max=1.0)
    shingle: int = opt(5, "Characters per shingle (near-duplicate detection).", min=1)
    min_chars: int = opt(0, "Drop documents shorter than this.", min=0)
    max_chars: int = opt(0, "Drop documents longer than this. 0: no limit.", min=0)
    replay: str = opt("", "Continual learning: an earlier stage's corpus (pydoc_topics, stdlib_docs or a path) "
                          "whose training windows are replayed. Empty: none.")
    replay_ratio: float = opt(0.25, "Share of training samples drawn from the replay buffer.", min=0.0, max=1.0)
    replay_size: int = opt(2000, "Replay buffer capacity (windows kept by reservoir sampling).", min=1)
    replay_labels: bool = opt(False, "Mark each training sample as current (0) or replayed (1): inputs become "
                                     "{idx, domain}, for the model's contrastive term (model.contrastive_weight).")
    objective: str = opt("causal", "causal: next-token windows; mlm: masked-LM windows (mask_prob of the tokens "
                                   "chosen, 80% -> <|mask|>, 10% random, 10% kept; targets only there) for a "
                                   "bidirectional model, which takes this objective unless model.objective says "
                                   "otherwise. <|mask|> is added to the specials.", choices=("causal", "mlm"))
    mask_prob: float = opt(0.15, "Share of the tokens chosen for prediction (objective=mlm).", min=0.01, max=1.0)
    test_from: str = opt("", "Use this corpus's validation split as the `test` split (e.g. the stage-1 corpus, "
                             "to measure forgetting). Empty: no test split.")
    earlier_split: str = opt("tail", "How the replay / test_from corpus was split in its own stage, so its "
                                     "validation part is the same here.", choices=("tail", "docs"))
    cache_dir: str = opt("", "Directory of the memory-mapped token files. Empty: $R1_CACHE or ~/.cache/r1.")


@dataclass
class TextDataConfig(LMDataConfig):
    path: str = opt("", "A text file, a directory of .txt/.md/.jsonl files, or a .jsonl file.")
    text_key: str = opt("text", "Field holding the text in JSONL records.")
    doc_split: str = opt("file", "What one document is (the unit of cleaning): a whole file, "
                                 "blank-line separated paragraphs, or lines.", choices=("file", "paragraph", "line"))


@dataclass
class InstructDataConfig(LMDataConfig):
    path: str = opt("", "JSONL of instruction/response records. Empty: the embedded pairs built from Python's docs.")
    prompt_key: str = opt("instruction", "JSONL field of the instruction.")
    response_key: str = opt("response", "JSONL field of the response.")
    template: str = opt(DEFAULT_TEMPLATE, "Chat template; {instruction} is replaced, the response follows it.")
    split: str = opt("docs", "Pairs are split whole, by content hash.", choices=("docs",))
    specials: list[str] = opt([EOT], "Special tokens; <|endoftext|> ends every response.")


variant(ModelConfig, "gpt", flavors=GPT_FLAVORS)(GPTConfig)
variant(ModelConfig, "r1_lm", flavors=R1LM_FLAVORS)(R1LMConfig)
variant(DataConfig, "text")(TextDataConfig)
variant(DataConfig, "pydoc_topics")(LMDataConfig)
variant(DataConfig, "stdlib_docs")(LMDataConfig)
variant(DataConfig, "instruct")(InstructDataConfig)


@dataclass
class GenerateConfig:
    prompt: str = opt("", "Text to continue.")
    max_new_tokens: int = opt(200, "Tokens to generate.", min=1)
    temperature: float = opt(0.8, "Sampling temperature; 0: greedy.", min=0.0)
    top_k: int = opt(0, "Keep the k most likely tokens (0: all).", min=0)
    top_p: float = opt(1.0, "Nucleus sampling mass, in (0, 1].", min=0.0, max=1.0)
    exit_threshold: Optional[float] = opt(None, "Early-exit threshold (R1-LM). null: the model's.")
    cache: bool = opt(True, "Reuse the KV cache; false: recompute the context every step (slower).")
    chat: Optional[bool] = opt(None, "Wrap the prompt in the chat template. null: when the model has one.")
    seed: int = opt(0, "Sampling seed.")
    echo: bool = opt(True, "Print the prompt before the continuation (stdout); false: the continuation only.")
    runtime: str = opt("torch", "torch, onnx or onnx-int8 (onnxruntime, the run's cached export; every layer runs, "
                       "no early exit).")


COMMANDS = [
    Command("generate", "Generate text, streamed as it is produced, with a KV cache.", "r1.models.lm.cli:generate",
            "generate", settings=GenerateConfig, args=(Arg("model", "Language-model run dir or model.safetensors"),),
            flags=(Flag("prompt"), Flag("max_new_tokens", bounds=True), Flag("temperature", bounds=True),
                   Flag("top_k", bounds=True), Flag("top_p", bounds=True), Flag("exit_threshold"),
                   Flag("cache", "--cache/--no-cache"), Flag("chat"), Flag("seed"), Flag("echo", "--echo/--no-echo"),
                   Flag("runtime"))),
]
