"""The knowledge base: articles (``articles``), their retrieval (``retrieval``) and CLI (``cli``)."""
