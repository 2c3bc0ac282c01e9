"""Usage metering and cost analytics for LLM APIs."""

__version__ = "0.1.0"
