"""Parsers that read labels from model answers."""

from medbatch.parsing.answer import FinalAnswerParser
from medbatch.parsing.base import LabelParser
from medbatch.parsing.json import JSONLabelParser

__all__ = ["FinalAnswerParser", "JSONLabelParser", "LabelParser"]
