"""creditgate: a self-hostable LLM API gateway that bills prepaid credits per token."""

__version__ = "0.1.0"
