"""File, HTTP, process and signal helpers that every layer uses (no project imports but ``errors``)."""
