"""The HTTP side: the klein route table and handlers, streaming request bodies, blob sending, TLS and listeners."""
