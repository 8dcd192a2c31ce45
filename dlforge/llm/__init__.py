"""Language models: generation (sampling with a recurrent state or a KV cache, beam search), chat, LoRA, GPT-2 and
BERT weights, embeddings, perplexity and translation."""
