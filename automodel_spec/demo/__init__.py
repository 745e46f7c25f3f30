"""The offline demo pair: synthetic Llama weights and tokenizer, written once into the cache."""
