"""The LLM and its adapters: Qwen2.5-Instruct streamed token by token (optional LoRA), and
MinMo's input projector (speech states -> LLM embeddings) and output projector (LLM hidden
states -> the voice LM's semantic vectors)."""
