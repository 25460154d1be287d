"""Prompt templates: how a record becomes chat messages."""

from medbatch.prompts.base import PromptTemplate
from medbatch.prompts.chat import ChatPromptTemplate

__all__ = ["ChatPromptTemplate", "PromptTemplate"]
