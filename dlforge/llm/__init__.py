"""Language models: tokenizers, token shards and generation (sampling with a recurrent state or a KV cache)."""

from dlforge.llm.tokenizer import (
    CharTokenizer,
    SubwordTokenizer,
    Tokenizer,
    check_tokenizer,
    load_tokenizer,
    model_tokenizer,
    tokenizer_from_dict,
    train_tokenizer,
)

__all__ = ["CharTokenizer", "SubwordTokenizer", "Tokenizer", "check_tokenizer", "load_tokenizer", "model_tokenizer",
           "tokenizer_from_dict", "train_tokenizer"]
