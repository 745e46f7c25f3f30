"""The SGLang server's argv and its life: the process, the GPUs and port it is given, what the user is told."""
