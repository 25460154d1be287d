"""Parsers that read labels from model answers."""

from medbatch.parsing.base import LabelParser

__all__ = ["LabelParser"]
