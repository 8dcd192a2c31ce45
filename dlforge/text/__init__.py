"""Text: tokenizers (characters, BPE, WordPiece), vocabularies and chat templates — what data/ and llm/ both need."""

from dlforge.text.tokenizer import (
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
