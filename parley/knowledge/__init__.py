"""The knowledge base: documents and chunks, access-filtered retrieval, ingestion, and the
built-in search tool."""
