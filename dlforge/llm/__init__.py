"""Language models: tokenizers and generation (sampling with a recurrent state or a KV cache)."""

from dlforge.llm.tokenizer import CharTokenizer, load_tokenizer, tokenizer_from_dict

__all__ = ["CharTokenizer", "load_tokenizer", "tokenizer_from_dict"]
