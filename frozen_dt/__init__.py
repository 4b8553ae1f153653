"""frozen-dt: Decision Transformers on a frozen slice of a text-pretrained language model."""

__version__ = "0.1.0"
