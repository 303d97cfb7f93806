"""probe_lens: does a linear probe keep working when you fine-tune a model against it?"""

__version__ = "0.1.0"
